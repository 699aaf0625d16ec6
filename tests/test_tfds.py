"""Tests for dataset.source='tfds' (capsjax.data.sources.tfds)."""
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
from capsjax.data import sources
from capsjax.data.sources import tfds as tfds_source
from capsjax.errors import DataError


def dataset_config(**overrides):
  return conftest.dataset_config(**{'source': 'tfds', **overrides})


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
  monkeypatch.setattr(tfds_source.urllib.request, 'getproxies', dict)
  return calls


def test_tfds_mock_data_load(offline_http, monkeypatch):
  # mock_data makes download_and_prepare a no-op, so nothing is probed or
  # downloaded, even on a machine without network.
  def no_network(address, *args, **kwargs):
    raise socket.gaierror(-2, f'Name or service not known: {address[0]}')

  monkeypatch.setattr(socket, 'create_connection', no_network)
  with tfds.testing.mock_data(num_examples=7):
    dataset = sources.load(dataset_config(source='tfds', name='mnist'))
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
  dataset = sources.load(dataset_config(
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
    sources.load(dataset_config(
        source='tfds', name='capsjax_dummy_mnist', data_dir=str(tmp_path),
        test_split='validation'))
  assert_one_line_data_error(excinfo, "no split 'validation'",
                             "['test', 'train']",
                             '--config.dataset.test_split')


def test_tfds_unknown_dataset_name():
  with pytest.raises(DataError) as excinfo:
    sources.load(dataset_config(source='tfds', name='mnistt'))
  assert_one_line_data_error(
      excinfo, "unknown tfds dataset 'mnistt'", 'tfds.list_builders()',
      "dataset.source='idx'/'embedded'")


def test_tfds_malformed_dataset_name():
  with pytest.raises(DataError) as excinfo:
    sources.load(dataset_config(source='tfds', name='mnist:9.9.9'))
  assert_one_line_data_error(excinfo, "'mnist:9.9.9'",
                             'fix --config.dataset.name')


def test_tfds_dataset_without_image_and_label():
  with pytest.raises(DataError) as excinfo:
    sources.load(dataset_config(source='tfds',
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
    sources.load(dataset_config(source='tfds', name='mnist',
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
    sources.load(dataset_config(source='tfds', name='mnist',
                                data_dir=str(tmp_path)))
  assert_one_line_data_error(excinfo, 'ConnectionError', *OFFLINE_FRAGMENTS)
  assert offline_http  # tfds really went through the patched HTTP layer


def test_tfds_missing_module_during_prepare(tmp_path, monkeypatch):
  def missing_module(self, *args, **kwargs):
    raise ModuleNotFoundError("No module named 'importlib_resources'",
                              name='importlib_resources')

  monkeypatch.setattr(tfds_source, '_check_download_hosts_reachable',
                      lambda builder, name: None)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      missing_module)
  with pytest.raises(DataError) as excinfo:
    sources.load(dataset_config(source='tfds', name='mnist',
                                data_dir=str(tmp_path)))
  assert_one_line_data_error(excinfo, "'importlib_resources'",
                             'pip install importlib_resources')


def test_tfds_class_names():
  with tfds.testing.mock_data(num_examples=4):
    dataset = sources.load(conftest.load_config('mnist').dataset)
  assert dataset.class_names == tuple(str(d) for d in range(10))
