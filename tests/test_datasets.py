"""Tests for capsjax.datasets: the tfds, IDX and embedded sources, Split."""
import gzip
import importlib.resources
import importlib.resources.abc  # pylint: disable=unused-import
import socket
import sys
import time

import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds

import conftest
from conftest import assert_one_line_data_error
from capsjax import datasets
from capsjax import input_pipeline
from capsjax.errors import DataError


def dataset_config(**overrides):
  return conftest.dataset_config(**{'source': 'tfds', **overrides})



# --------------------------------------------------------------------- idx --


def idx_bytes(array, magic):
  header = magic.to_bytes(4, 'big') + b''.join(
      d.to_bytes(4, 'big') for d in array.shape)
  return header + array.astype(np.uint8).tobytes()


def write_idx_dir(directory, compression, rng):
  """Writes random IDX files; returns {file key: array written}."""
  arrays = {
      'train_images': rng.integers(0, 256, (7, 5, 3)),
      'train_labels': rng.integers(0, 6, 7),
      'test_images': rng.integers(0, 256, (4, 5, 3)),
      'test_labels': np.array([6, 0, 1, 6]),  # max label 6 only in test
  }
  directory.mkdir(exist_ok=True)
  for key, array in arrays.items():
    magic = (datasets.IDX_IMAGES_MAGIC if array.ndim == 3
             else datasets.IDX_LABELS_MAGIC)
    data = idx_bytes(array, magic)
    name = datasets.IDX_FILES[key]
    if compression == 'gz':
      data, name = gzip.compress(data), name + '.gz'
    elif compression == 'gz_content_raw_name':
      data = gzip.compress(data)  # detected by magic bytes, not by name
    (directory / name).write_bytes(data)
  return arrays


@pytest.mark.parametrize('compression', ['raw', 'gz', 'gz_content_raw_name'])
def test_idx_round_trips_pixels_and_labels(tmp_path, compression):
  arrays = write_idx_dir(tmp_path, compression, np.random.default_rng(0))
  dataset = datasets.load(
      dataset_config(source='idx', directory=str(tmp_path)))
  assert dataset.name == f'idx:{tmp_path}'
  assert dataset.num_classes == 7
  assert dataset.image_shape == (5, 3, 1)
  for split_name in ('train', 'test'):
    split = getattr(dataset, split_name)
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
    np.testing.assert_array_equal(split.images[..., 0],
                                  arrays[f'{split_name}_images'])
    np.testing.assert_array_equal(split.labels, arrays[f'{split_name}_labels'])


def test_idx_missing_directory(tmp_path):
  with pytest.raises(DataError) as excinfo:
    datasets.load(
        dataset_config(source='idx', directory=str(tmp_path / 'nope')))
  assert_one_line_data_error(excinfo, 'does not exist', 'nope',
                             '--config.dataset.directory')


def test_idx_empty_directory_setting():
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='idx', directory=''))
  assert_one_line_data_error(excinfo, 'directory is empty',
                             '--config.dataset.directory=DIR')


def test_idx_missing_file_lists_the_four_names(tmp_path):
  write_idx_dir(tmp_path, 'raw', np.random.default_rng(0))
  (tmp_path / 't10k-labels-idx1-ubyte').unlink()
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(
      excinfo, 'no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz',
      *datasets.IDX_FILES.values())


def test_idx_wrong_magic_says_expected_and_found(tmp_path):
  write_idx_dir(tmp_path, 'raw', np.random.default_rng(0))
  # A labels file where the images should be.
  (tmp_path / 'train-images-idx3-ubyte').write_bytes(
      idx_bytes(np.zeros(7), datasets.IDX_LABELS_MAGIC))
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(excinfo, 'train-images-idx3-ubyte',
                             'magic number 0x00000801',
                             'expected 0x00000803')


@pytest.mark.parametrize('gz', [False, True])
def test_idx_truncated_file(tmp_path, gz):
  write_idx_dir(tmp_path, 'gz' if gz else 'raw', np.random.default_rng(0))
  name = 'train-images-idx3-ubyte' + ('.gz' if gz else '')
  path = tmp_path / name
  data = path.read_bytes()
  if gz:  # a complete gzip stream of a truncated IDX file
    data = gzip.compress(gzip.decompress(data)[:-5])
  else:
    data = data[:-5]
  path.write_bytes(data)
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(excinfo, name, 'truncated', '100 data bytes',
                             'promises 105')


def test_idx_truncated_gzip_stream(tmp_path):
  write_idx_dir(tmp_path, 'gz', np.random.default_rng(0))
  path = tmp_path / 'train-labels-idx1-ubyte.gz'
  path.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(excinfo, 'train-labels-idx1-ubyte.gz',
                             'corrupt or truncated gzip')


def test_idx_image_label_count_mismatch(tmp_path):
  write_idx_dir(tmp_path, 'raw', np.random.default_rng(0))
  (tmp_path / 'train-labels-idx1-ubyte').write_bytes(
      idx_bytes(np.zeros(6), datasets.IDX_LABELS_MAGIC))
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(excinfo, '7 images', '6 labels')


# ---------------------------------------------------------------- embedded --


@pytest.fixture(scope='module')
def embedded():
  return datasets.load(dataset_config(source='embedded',
                                            name='mnist_5k'))


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
  images, labels = datasets._read_embedded()
  rows = {(im.tobytes(), int(lb)) for im, lb in zip(images, labels)}
  assert len(rows) == 5000  # no duplicate rows, so sets can test disjointness
  train = {(im.tobytes(), int(lb))
           for im, lb in zip(embedded.train.images, embedded.train.labels)}
  test = {(im.tobytes(), int(lb))
          for im, lb in zip(embedded.test.images, embedded.test.labels)}
  assert not train & test
  assert train | test == rows


def test_embedded_split_is_deterministic(embedded):
  again = datasets.load(dataset_config(source='embedded',
                                             name='mnist_5k'))
  np.testing.assert_array_equal(again.test.images, embedded.test.images)
  np.testing.assert_array_equal(again.train.labels, embedded.train.labels)


def test_embedded_holdout_per_class_changes_the_split():
  dataset = datasets.load(dataset_config(
      source='embedded', name='mnist_5k', holdout_per_class=1))
  assert dataset.test.num_examples == 10
  assert dataset.train.num_examples == 4990


@pytest.mark.parametrize('holdout', [0, -3, 500, 1000, 2.5, True])
def test_embedded_holdout_out_of_range(holdout):
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='embedded', name='mnist_5k',
                                       holdout_per_class=holdout))
  assert_one_line_data_error(excinfo, 'holdout_per_class', '[1, 499]')


def test_embedded_unknown_name():
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='embedded', name='mnist_6k'))
  assert_one_line_data_error(excinfo, "'mnist_6k'",
                             '--config.dataset.name=mnist_5k')


def test_embedded_batches_are_real_digits_in_unit_range(embedded):
  batch = input_pipeline.train_batch(embedded.train, 3, batch_size=64, seed=1,
                                     max_shift=2)
  assert batch['image'].dtype == np.float32
  assert batch['image'].shape == (64, 28, 28, 1)
  assert batch['label'].dtype == np.int32
  assert batch['image'].min() >= 0 and batch['image'].max() <= 1
  assert batch['image'].max() > 0.9  # ink, not an empty or rescaled image


def test_unknown_source():
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='hdf5'))
  assert_one_line_data_error(excinfo, "'hdf5'", 'tfds', 'idx', 'embedded')


def test_split_rejects_wrong_dtypes():
  with pytest.raises(DataError) as excinfo:
    datasets.Split(images=np.zeros((2, 3, 3, 1), np.float32),
                         labels=np.zeros(2, np.int32))
  assert_one_line_data_error(excinfo, 'uint8', 'float32')
  with pytest.raises(DataError) as excinfo:
    datasets.Split(images=np.zeros((2, 3, 3, 1), np.uint8),
                         labels=np.zeros(2, np.int64))
  assert_one_line_data_error(excinfo, 'int32', '.astype(np.int32)')


# -------------------------------------------------------------------- tfds --

class CapsjaxDummyMnist(tfds.testing.DummyMnist):
  """tfds's 20-example fake MNIST, registered so it can be loaded by name."""


class CapsjaxDummyText(tfds.testing.DummyDataset):
  """A registered tfds dataset without 'image' and 'label' features."""


@pytest.fixture
def tfds_can_prepare(monkeypatch):
  """Lets tfds prepare datasets where importlib_resources is missing."""
  try:
    import importlib_resources  # pylint: disable=g-import-not-at-top,unused-import
  except ModuleNotFoundError:
    # tensorflow-datasets 4.9.10 imports importlib_resources to prepare any
    # dataset but declares it only for Python < 3.9
    # (github.com/tensorflow/datasets/issues/11212); the standard library's
    # importlib.resources has the `abc.Traversable` tfds uses from it.
    monkeypatch.setitem(sys.modules, 'importlib_resources',
                        importlib.resources)


@pytest.fixture
def offline_http(monkeypatch):
  """Every HTTP request tfds makes fails as on a machine without network."""
  calls = []

  def refuse(self, request, **kwargs):
    del self, kwargs
    calls.append(request.url)
    raise requests.exceptions.ConnectionError(
        f'Failed to resolve {request.url} (patched by the test)')

  monkeypatch.setattr(requests.adapters.HTTPAdapter, 'send', refuse)
  monkeypatch.setattr(datasets.urllib.request, 'getproxies', dict)
  return calls


def test_tfds_mock_data_load(offline_http, monkeypatch):
  # mock_data makes download_and_prepare a no-op, so nothing is probed or
  # downloaded, even on a machine without network.
  def no_network(address, *args, **kwargs):
    raise socket.gaierror(-2, f'Name or service not known: {address[0]}')

  monkeypatch.setattr(socket, 'create_connection', no_network)
  with tfds.testing.mock_data(num_examples=7):
    dataset = datasets.load(dataset_config(source='tfds', name='mnist'))
  assert dataset.name == 'tfds:mnist'
  assert dataset.num_classes == 10
  assert dataset.image_shape == (28, 28, 1)
  for split in (dataset.train, dataset.test):
    assert split.images.shape == (7, 28, 28, 1)
    assert split.images.dtype == np.uint8
    assert split.labels.shape == (7,) and split.labels.dtype == np.int32
    assert 0 <= split.labels.min() and split.labels.max() < 10


def test_tfds_prepares_and_slices_a_real_builder(tmp_path, tfds_can_prepare,
                                                 offline_http):
  dataset = datasets.load(dataset_config(
      source='tfds', name='capsjax_dummy_mnist', data_dir=str(tmp_path),
      train_split='train[:50%]', test_split='test'))
  assert not offline_http  # DummyMnist generates its data, no download
  assert dataset.train.num_examples == 10
  assert dataset.test.num_examples == 20
  # DummyMnist labels are i % 10 for i < 20; tfds shuffles when preparing.
  np.testing.assert_array_equal(np.bincount(dataset.test.labels), [2] * 10)
  assert dataset.train.images.dtype == np.uint8
  assert dataset.train.images.shape == (10, 28, 28, 1)
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(
        source='tfds', name='capsjax_dummy_mnist', data_dir=str(tmp_path),
        test_split='validation'))
  assert_one_line_data_error(excinfo, "no split 'validation'",
                             "['test', 'train']",
                             '--config.dataset.test_split')


def test_tfds_unknown_dataset_name():
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='tfds', name='mnistt'))
  assert_one_line_data_error(
      excinfo, "unknown tfds dataset 'mnistt'", 'tfds.list_builders()',
      "dataset.source='idx'/'embedded'")


def test_tfds_malformed_dataset_name():
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='tfds', name='mnist:9.9.9'))
  assert_one_line_data_error(excinfo, "'mnist:9.9.9'",
                             'fix --config.dataset.name')


def test_tfds_dataset_without_image_and_label():
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='tfds',
                                       name='capsjax_dummy_text'))
  assert_one_line_data_error(excinfo, "has features ['id']",
                             'image classification')


OFFLINE_FRAGMENTS = (
    "tfds could not download 'mnist'", 'probably no network',
    '--config.dataset.source=idx --config.dataset.directory=DIR',
    '/usr/share/datasets/fashion-mnist', '--config=configs/quickstart.py')


def test_tfds_no_network_fails_fast_before_downloading(
    tmp_path, monkeypatch, tfds_can_prepare, offline_http):
  def unresolvable(address, *args, **kwargs):
    raise socket.gaierror(-2, f'Name or service not known: {address[0]}')

  monkeypatch.setattr(socket, 'create_connection', unresolvable)
  start = time.monotonic()
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='tfds', name='mnist',
                                       data_dir=str(tmp_path)))
  assert time.monotonic() - start < 10
  assert_one_line_data_error(excinfo, 'storage.googleapis.com:443',
                             *OFFLINE_FRAGMENTS)
  assert not offline_http  # the probe failed before tfds tried to download


def test_tfds_no_network_during_download(tmp_path, monkeypatch,
                                         tfds_can_prepare, offline_http):
  # The probe succeeds (e.g. a host answers) but the downloads fail: the
  # error from tfds's downloader is translated too.
  class Connection:
    def close(self):
      pass

  monkeypatch.setattr(socket, 'create_connection',
                      lambda *args, **kwargs: Connection())
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='tfds', name='mnist',
                                       data_dir=str(tmp_path)))
  assert_one_line_data_error(excinfo, 'ConnectionError', *OFFLINE_FRAGMENTS)
  assert offline_http  # tfds really went through the patched HTTP layer


def test_tfds_missing_module_during_prepare(tmp_path, monkeypatch):
  def missing_module(self, *args, **kwargs):
    raise ModuleNotFoundError("No module named 'importlib_resources'",
                              name='importlib_resources')

  monkeypatch.setattr(datasets, '_check_download_hosts_reachable',
                      lambda builder, name: None)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      missing_module)
  with pytest.raises(DataError) as excinfo:
    datasets.load(dataset_config(source='tfds', name='mnist',
                                       data_dir=str(tmp_path)))
  assert_one_line_data_error(excinfo, "'importlib_resources'",
                             'pip install importlib_resources')
