"""Tests for capsjax.input_pipeline: loaders, batching and their errors."""
import gzip
import importlib.resources
import importlib.resources.abc  # pylint: disable=unused-import
import socket
import sys
import threading
import time

import ml_collections
import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds

from capsjax import input_pipeline
from capsjax.input_pipeline import DataError


def dataset_config(**overrides):
  fields = dict(source='tfds', name='mnist', directory='', data_dir='',
                train_split='train', test_split='test', holdout_per_class=100)
  return ml_collections.ConfigDict({**fields, **overrides})


def assert_one_line_data_error(excinfo, *fragments):
  message = str(excinfo.value)
  assert isinstance(excinfo.value, ValueError)
  assert '\n' not in message, message
  for fragment in fragments:
    assert fragment in message, message


def labelled_split(num_examples, height=4, width=4):
  """A split whose label is the example's index and whose pixels encode it."""
  labels = np.arange(num_examples, dtype=np.int32)
  images = np.broadcast_to(labels[:, None, None, None] % 256,
                           (num_examples, height, width, 1)).astype(np.uint8)
  return input_pipeline.Split(images=images, labels=labels)


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
    magic = (input_pipeline.IDX_IMAGES_MAGIC if array.ndim == 3
             else input_pipeline.IDX_LABELS_MAGIC)
    data = idx_bytes(array, magic)
    name = input_pipeline.IDX_FILES[key]
    if compression == 'gz':
      data, name = gzip.compress(data), name + '.gz'
    elif compression == 'gz_content_raw_name':
      data = gzip.compress(data)  # detected by magic bytes, not by name
    (directory / name).write_bytes(data)
  return arrays


@pytest.mark.parametrize('compression', ['raw', 'gz', 'gz_content_raw_name'])
def test_idx_round_trips_pixels_and_labels(tmp_path, compression):
  arrays = write_idx_dir(tmp_path, compression, np.random.default_rng(0))
  dataset = input_pipeline.load(
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
    input_pipeline.load(
        dataset_config(source='idx', directory=str(tmp_path / 'nope')))
  assert_one_line_data_error(excinfo, 'does not exist', 'nope',
                             '--config.dataset.directory')


def test_idx_empty_directory_setting():
  with pytest.raises(DataError) as excinfo:
    input_pipeline.load(dataset_config(source='idx', directory=''))
  assert_one_line_data_error(excinfo, 'directory is empty',
                             '--config.dataset.directory=DIR')


def test_idx_missing_file_lists_the_four_names(tmp_path):
  write_idx_dir(tmp_path, 'raw', np.random.default_rng(0))
  (tmp_path / 't10k-labels-idx1-ubyte').unlink()
  with pytest.raises(DataError) as excinfo:
    input_pipeline.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(
      excinfo, 'no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz',
      *input_pipeline.IDX_FILES.values())


def test_idx_wrong_magic_says_expected_and_found(tmp_path):
  write_idx_dir(tmp_path, 'raw', np.random.default_rng(0))
  # A labels file where the images should be.
  (tmp_path / 'train-images-idx3-ubyte').write_bytes(
      idx_bytes(np.zeros(7), input_pipeline.IDX_LABELS_MAGIC))
  with pytest.raises(DataError) as excinfo:
    input_pipeline.load(dataset_config(source='idx', directory=str(tmp_path)))
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
    input_pipeline.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(excinfo, name, 'truncated', '100 data bytes',
                             'promises 105')


def test_idx_truncated_gzip_stream(tmp_path):
  write_idx_dir(tmp_path, 'gz', np.random.default_rng(0))
  path = tmp_path / 'train-labels-idx1-ubyte.gz'
  path.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(DataError) as excinfo:
    input_pipeline.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(excinfo, 'train-labels-idx1-ubyte.gz',
                             'corrupt or truncated gzip')


def test_idx_image_label_count_mismatch(tmp_path):
  write_idx_dir(tmp_path, 'raw', np.random.default_rng(0))
  (tmp_path / 'train-labels-idx1-ubyte').write_bytes(
      idx_bytes(np.zeros(6), input_pipeline.IDX_LABELS_MAGIC))
  with pytest.raises(DataError) as excinfo:
    input_pipeline.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(excinfo, '7 images', '6 labels')


# ---------------------------------------------------------------- embedded --


@pytest.fixture(scope='module')
def embedded():
  return input_pipeline.load(dataset_config(source='embedded',
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
  images, labels = input_pipeline._read_embedded()
  rows = {(im.tobytes(), int(lb)) for im, lb in zip(images, labels)}
  assert len(rows) == 5000  # no duplicate rows, so sets can test disjointness
  train = {(im.tobytes(), int(lb))
           for im, lb in zip(embedded.train.images, embedded.train.labels)}
  test = {(im.tobytes(), int(lb))
          for im, lb in zip(embedded.test.images, embedded.test.labels)}
  assert not train & test
  assert train | test == rows


def test_embedded_split_is_deterministic(embedded):
  again = input_pipeline.load(dataset_config(source='embedded',
                                             name='mnist_5k'))
  np.testing.assert_array_equal(again.test.images, embedded.test.images)
  np.testing.assert_array_equal(again.train.labels, embedded.train.labels)


def test_embedded_holdout_per_class_changes_the_split():
  dataset = input_pipeline.load(dataset_config(
      source='embedded', name='mnist_5k', holdout_per_class=1))
  assert dataset.test.num_examples == 10
  assert dataset.train.num_examples == 4990


@pytest.mark.parametrize('holdout', [0, -3, 500, 1000, 2.5, True])
def test_embedded_holdout_out_of_range(holdout):
  with pytest.raises(DataError) as excinfo:
    input_pipeline.load(dataset_config(source='embedded', name='mnist_5k',
                                       holdout_per_class=holdout))
  assert_one_line_data_error(excinfo, 'holdout_per_class', '[1, 499]')


def test_embedded_unknown_name():
  with pytest.raises(DataError) as excinfo:
    input_pipeline.load(dataset_config(source='embedded', name='mnist'))
  assert_one_line_data_error(excinfo, "'mnist'",
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
    input_pipeline.load(dataset_config(source='hdf5'))
  assert_one_line_data_error(excinfo, "'hdf5'", 'tfds', 'idx', 'embedded')


# ---------------------------------------------------------------- batching --


def test_train_batch_is_a_pure_function_of_seed_and_step():
  split = labelled_split(50)
  kwargs = dict(batch_size=8, seed=3, max_shift=1)
  first = input_pipeline.train_batch(split, 7, **kwargs)
  again = input_pipeline.train_batch(split, 7, **kwargs)
  np.testing.assert_array_equal(first['image'], again['image'])
  np.testing.assert_array_equal(first['label'], again['label'])
  next_step = input_pipeline.train_batch(split, 8, **kwargs)
  assert not np.array_equal(first['label'], next_step['label'])
  other_seed = input_pipeline.train_batch(split, 7, **{**kwargs, 'seed': 4})
  assert not np.array_equal(first['label'], other_seed['label'])


@pytest.mark.parametrize('num_examples,batch_size', [(12, 4), (10, 3)])
def test_each_epoch_visits_examples_once(num_examples, batch_size):
  split = labelled_split(num_examples)
  steps_per_epoch = num_examples // batch_size
  epochs = []
  for epoch in range(3):
    batches = [
        input_pipeline.train_batch(split, epoch * steps_per_epoch + i,
                                   batch_size=batch_size, seed=0, max_shift=0)
        for i in range(steps_per_epoch)]
    labels = np.concatenate([b['label'] for b in batches])
    images = np.concatenate([b['image'] for b in batches])
    # Each image still belongs to its label.
    np.testing.assert_array_equal(np.round(images[:, 0, 0, 0] * 255), labels)
    # Without a remainder an epoch is a permutation of the whole split; with
    # one, `steps_per_epoch * batch_size` distinct examples.
    assert len(set(labels.tolist())) == steps_per_epoch * batch_size
    if num_examples % batch_size == 0:
      np.testing.assert_array_equal(np.sort(labels), split.labels)
    epochs.append(labels)
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch


def loop_shift(images, shifts):
  out = np.zeros_like(images)
  batch, height, width, _ = images.shape
  for b in range(batch):
    dy, dx = shifts[b]
    for y in range(height):
      for x in range(width):
        if 0 <= y - dy < height and 0 <= x - dx < width:
          out[b, y, x] = images[b, y - dy, x - dx]
  return out


def test_shift_images_matches_loop_reference():
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, (40, 5, 7, 2)).astype(np.uint8)
  shifts = rng.integers(-9, 10, (40, 2))  # includes shifts past the border
  shifts[:3] = [[0, 0], [5, 0], [0, -7]]
  out = input_pipeline.shift_images(images, shifts)
  assert out.dtype == np.uint8 and out.shape == images.shape
  np.testing.assert_array_equal(out, loop_shift(images, shifts))
  np.testing.assert_array_equal(out[0], images[0])
  assert not out[1].any() and not out[2].any()  # shifted fully out: all zero


def test_shift_images_fills_vacated_pixels_with_zero():
  images = np.ones((1, 3, 4, 1), np.uint8)
  out = input_pipeline.shift_images(images, np.array([[1, -2]]))
  np.testing.assert_array_equal(out[0, ..., 0], [[0, 0, 0, 0],
                                                 [1, 1, 0, 0],
                                                 [1, 1, 0, 0]])


def test_shifts_stay_within_max_shift_and_cover_the_range():
  size, centre, max_shift = 9, 4, 2
  images = np.zeros((1, size, size, 1), np.uint8)
  images[0, centre, centre, 0] = 255
  split = input_pipeline.Split(images=images.repeat(64, 0),
                               labels=np.zeros(64, np.int32))
  offsets = set()
  for step in range(20):
    batch = input_pipeline.train_batch(split, step, batch_size=64, seed=0,
                                       max_shift=max_shift)
    for image in batch['image']:
      ys, xs = np.nonzero(image[..., 0])
      assert len(ys) == 1  # the pixel is moved, never lost at this size
      offsets.add((int(ys[0]) - centre, int(xs[0]) - centre))
  grid = range(-max_shift, max_shift + 1)
  assert offsets == {(dy, dx) for dy in grid for dx in grid}


def test_train_batch_without_shift_is_the_scaled_pixels():
  split = labelled_split(20)
  batch = input_pipeline.train_batch(split, 0, batch_size=5, seed=0,
                                     max_shift=0)
  np.testing.assert_array_equal(batch['image'],
                                split.images[batch['label']] / np.float32(255))


@pytest.mark.parametrize('kwargs,fragment', [
    (dict(batch_size=21), 'lower --config.batch_size'),
    (dict(batch_size=0), 'batch_size must be an int >= 1'),
    (dict(seed=-1), 'seed must be an int >= 0'),
    (dict(max_shift=4), 'below 4'),
])
def test_train_batch_errors(kwargs, fragment):
  split = labelled_split(20)
  arguments = {**dict(batch_size=4, seed=0, max_shift=0), **kwargs}
  with pytest.raises(DataError) as excinfo:
    input_pipeline.train_batch(split, 0, **arguments)
  assert_one_line_data_error(excinfo, fragment)
  with pytest.raises(DataError):  # raised at the call, not at the first next()
    input_pipeline.train_batches(split, **arguments)


@pytest.mark.parametrize('num_examples,batch_size', [(10, 4), (12, 4), (3, 5)])
def test_eval_batches_cover_every_example_once_with_mask(num_examples,
                                                         batch_size):
  split = labelled_split(num_examples)
  batches = list(input_pipeline.eval_batches(split, batch_size))
  assert len(batches) == -(-num_examples // batch_size)
  for batch in batches:
    assert batch['image'].shape == (batch_size, 4, 4, 1)
    assert batch['image'].dtype == np.float32
    assert batch['label'].dtype == np.int32
    assert batch['mask'].dtype == np.float32
    assert batch['label'].shape == batch['mask'].shape == (batch_size,)
  mask = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  images = np.concatenate([b['image'] for b in batches])
  num_padding = len(mask) - num_examples
  np.testing.assert_array_equal(mask, [1] * num_examples + [0] * num_padding)
  np.testing.assert_array_equal(labels[:num_examples], split.labels)
  np.testing.assert_array_equal(images[:num_examples],
                                split.images / np.float32(255))
  assert not images[num_examples:].any() and not labels[num_examples:].any()


def assert_same_batches(batches, expected):
  for batch, want in zip(batches, expected, strict=True):
    np.testing.assert_array_equal(batch['image'], want['image'])
    np.testing.assert_array_equal(batch['label'], want['label'])


@pytest.mark.parametrize('prefetch', [0, 1, 3])
def test_train_batches_resume_at_start_step(prefetch):
  split = labelled_split(30)
  kwargs = dict(batch_size=4, seed=5, max_shift=1)
  start = 11  # mid-epoch: 7 steps per epoch
  iterator = input_pipeline.train_batches(split, start_step=start,
                                          prefetch=prefetch, **kwargs)
  got = [next(iterator) for _ in range(9)]
  iterator.close()
  assert_same_batches(got, [input_pipeline.train_batch(split, start + i,
                                                       **kwargs)
                            for i in range(9)])


def prefetch_threads():
  return [t for t in threading.enumerate()
          if t.name.startswith('capsjax-train-batches')]


def test_prefetching_thread_stops_when_the_consumer_stops():
  split = labelled_split(30)
  assert not prefetch_threads()
  iterator = input_pipeline.train_batches(split, batch_size=4, seed=0,
                                          max_shift=1, prefetch=2)
  assert not prefetch_threads()  # nothing started before the first batch
  next(iterator)
  assert prefetch_threads()
  iterator.close()
  assert not prefetch_threads()
  iterator = input_pipeline.train_batches(split, batch_size=4, seed=0,
                                          max_shift=1, prefetch=2)
  next(iterator)
  del iterator  # dropped without close()
  assert not prefetch_threads()


def test_prefetching_forwards_errors(monkeypatch):
  split = labelled_split(30)
  train_batch = input_pipeline.train_batch

  def failing_from_step_3(split, step, **kwargs):
    if step >= 3:
      raise RuntimeError(f'step {step} failed')
    return train_batch(split, step, **kwargs)

  monkeypatch.setattr(input_pipeline, 'train_batch', failing_from_step_3)
  iterator = input_pipeline.train_batches(split, batch_size=4, seed=0,
                                          max_shift=0, prefetch=2)
  assert [int(next(iterator)['label'][0]) >= 0 for _ in range(3)]
  with pytest.raises(RuntimeError, match='step 3 failed'):
    next(iterator)
  assert not prefetch_threads()


def test_split_rejects_wrong_dtypes():
  with pytest.raises(DataError) as excinfo:
    input_pipeline.Split(images=np.zeros((2, 3, 3, 1), np.float32),
                         labels=np.zeros(2, np.int32))
  assert_one_line_data_error(excinfo, 'uint8', 'float32')
  with pytest.raises(DataError) as excinfo:
    input_pipeline.Split(images=np.zeros((2, 3, 3, 1), np.uint8),
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
  monkeypatch.setattr(input_pipeline.urllib.request, 'getproxies', dict)
  return calls


def test_tfds_mock_data_load(offline_http, monkeypatch):
  # mock_data makes download_and_prepare a no-op, so nothing is probed or
  # downloaded, even on a machine without network.
  def no_network(address, *args, **kwargs):
    raise socket.gaierror(-2, f'Name or service not known: {address[0]}')

  monkeypatch.setattr(socket, 'create_connection', no_network)
  with tfds.testing.mock_data(num_examples=7):
    dataset = input_pipeline.load(dataset_config(source='tfds', name='mnist'))
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
  dataset = input_pipeline.load(dataset_config(
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
    input_pipeline.load(dataset_config(
        source='tfds', name='capsjax_dummy_mnist', data_dir=str(tmp_path),
        test_split='validation'))
  assert_one_line_data_error(excinfo, "no split 'validation'",
                             "['test', 'train']",
                             '--config.dataset.test_split')


def test_tfds_unknown_dataset_name():
  with pytest.raises(DataError) as excinfo:
    input_pipeline.load(dataset_config(source='tfds', name='mnistt'))
  assert_one_line_data_error(
      excinfo, "unknown tfds dataset 'mnistt'", 'tfds.list_builders()',
      "dataset.source='idx'/'embedded'")


def test_tfds_malformed_dataset_name():
  with pytest.raises(DataError) as excinfo:
    input_pipeline.load(dataset_config(source='tfds', name='mnist:9.9.9'))
  assert_one_line_data_error(excinfo, "'mnist:9.9.9'",
                             'fix --config.dataset.name')


def test_tfds_dataset_without_image_and_label():
  with pytest.raises(DataError) as excinfo:
    input_pipeline.load(dataset_config(source='tfds',
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
    input_pipeline.load(dataset_config(source='tfds', name='mnist',
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
    input_pipeline.load(dataset_config(source='tfds', name='mnist',
                                       data_dir=str(tmp_path)))
  assert_one_line_data_error(excinfo, 'ConnectionError', *OFFLINE_FRAGMENTS)
  assert offline_http  # tfds really went through the patched HTTP layer


def test_tfds_missing_module_during_prepare(tmp_path, monkeypatch):
  def missing_module(self, *args, **kwargs):
    raise ModuleNotFoundError("No module named 'importlib_resources'",
                              name='importlib_resources')

  monkeypatch.setattr(input_pipeline, '_check_download_hosts_reachable',
                      lambda builder, name: None)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      missing_module)
  with pytest.raises(DataError) as excinfo:
    input_pipeline.load(dataset_config(source='tfds', name='mnist',
                                       data_dir=str(tmp_path)))
  assert_one_line_data_error(excinfo, "'importlib_resources'",
                             'pip install importlib_resources')
