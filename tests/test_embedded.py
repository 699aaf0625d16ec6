"""Tests for dataset.source='embedded' (capsjax.data.sources.embedded)."""
import numpy as np
import pytest

import conftest
from conftest import assert_one_line_data_error
from capsjax.data import batching
from capsjax.data import sources
from capsjax.data.sources import embedded as embedded_source
from capsjax.errors import DataError


def dataset_config(**overrides):
  return conftest.dataset_config(**{'source': 'tfds', **overrides})



@pytest.fixture(scope='module')
def embedded():
  return sources.load(dataset_config(source='embedded', name='mnist_5k'))


def test_embedded_split_sizes_and_stratification(embedded):
  assert embedded.name == 'embedded:mnist_5k'
  assert embedded.num_classes == 10
  assert embedded.image_shape == (28, 28, 1)
  assert embedded.train.num_examples == 4000
  assert embedded.test.num_examples == 1000
  np.testing.assert_array_equal(np.bincount(embedded.test.labels), [100] * 10)
  np.testing.assert_array_equal(np.bincount(embedded.train.labels), [400] * 10)
  # The file is sorted by label; both splits keep file order.
  assert np.all(np.diff(embedded.train.labels) >= 0)
  assert np.all(np.diff(embedded.test.labels) >= 0)


def test_embedded_splits_partition_the_file(embedded):
  images, labels = embedded_source.read_sample()
  rows = {(im.tobytes(), int(lb)) for im, lb in zip(images, labels)}
  assert len(rows) == 5000  # no duplicate rows, so sets can test disjointness
  train = {(im.tobytes(), int(lb))
           for im, lb in zip(embedded.train.images, embedded.train.labels)}
  test = {(im.tobytes(), int(lb))
          for im, lb in zip(embedded.test.images, embedded.test.labels)}
  assert not train & test
  assert train | test == rows


def test_embedded_split_is_deterministic(embedded):
  again = sources.load(dataset_config(source='embedded', name='mnist_5k'))
  np.testing.assert_array_equal(again.test.images, embedded.test.images)
  np.testing.assert_array_equal(again.train.labels, embedded.train.labels)


def test_embedded_holdout_per_class_changes_the_split():
  dataset = sources.load(dataset_config(
      source='embedded', name='mnist_5k', holdout_per_class=1))
  assert dataset.test.num_examples == 10
  assert dataset.train.num_examples == 4990


@pytest.mark.parametrize('holdout', [0, -3, 500, 1000, 2.5, True])
def test_embedded_holdout_out_of_range(holdout):
  with pytest.raises(DataError) as excinfo:
    sources.load(dataset_config(source='embedded', name='mnist_5k',
                                holdout_per_class=holdout))
  assert_one_line_data_error(excinfo, 'holdout_per_class', '[1, 499]')


def test_embedded_unknown_name():
  with pytest.raises(DataError) as excinfo:
    sources.load(dataset_config(source='embedded', name='mnist_6k'))
  assert_one_line_data_error(excinfo, "'mnist_6k'",
                             '--config.dataset.name=mnist_5k')


def test_embedded_batches_are_real_digits_in_unit_range(embedded):
  batch = batching.train_batch(
      embedded.train, 3, batch_size=64, seed=1,
      preprocessing=batching.Preprocessing(max_shift=2))
  assert batch['image'].dtype == np.float32
  assert batch['image'].shape == (64, 28, 28, 1)
  assert batch['label'].dtype == np.int32
  assert batch['image'].min() >= 0 and batch['image'].max() <= 1
  assert batch['image'].max() > 0.9  # ink, not an empty or rescaled image
