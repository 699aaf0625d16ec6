"""Tests for capsjax.data.sources: the registry, load and check_config.

Each source has its own file: test_tfds.py, test_idx.py, test_embedded.py,
test_folder.py.
"""
import pytest

import conftest
from conftest import assert_one_line_data_error
from capsjax import errors
from capsjax.data import sources


def test_every_source_is_registered():
  assert set(sources.SOURCES) == {'tfds', 'idx', 'embedded', 'folder'}


def test_unknown_source():
  for call in (sources.load, sources.check_config):
    with pytest.raises(errors.DataError) as excinfo:
      call(conftest.dataset_config(source='hdf5'))
    assert_one_line_data_error(excinfo, "'hdf5'", 'tfds', 'idx', 'embedded')


def test_missing_field_is_named():
  config = conftest.dataset_config(source='embedded')
  del config['holdout_per_class']
  with pytest.raises(errors.DataError) as excinfo:
    sources.load(config)
  assert_one_line_data_error(excinfo, "no field 'holdout_per_class'",
                             'config.dataset.holdout_per_class')


def test_check_config_checks_the_chosen_source_only():
  # A bad tfds field is an error for the tfds source, not for the others.
  config = conftest.dataset_config(source='tfds', read_size=-1)
  with pytest.raises(errors.ConfigError) as excinfo:
    sources.check_config(config)
  assert_one_line_data_error(excinfo, '--config.dataset.read_size=0')
  sources.check_config(conftest.dataset_config(source='idx', read_size=-1))


def test_load_composes_multimnist_on_any_source():
  dataset = sources.load(conftest.dataset_config(
      source='embedded', name='mnist_5k', multimnist=True,
      multimnist_shift=2, multimnist_test_size=10))
  assert dataset.name == 'multimnist:embedded:mnist_5k'
  assert dataset.pairs and dataset.image_shape == (32, 32, 1)
