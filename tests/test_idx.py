"""Tests for dataset.source='idx' (capsjax.data.sources.idx)."""
import gzip

import numpy as np
import pytest

import conftest
from conftest import assert_one_line_data_error
from capsjax.data import sources
from capsjax.data.sources import idx
from capsjax.errors import DataError


def dataset_config(**overrides):
  return conftest.dataset_config(**{'source': 'tfds', **overrides})



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
    magic = (idx.IDX_IMAGES_MAGIC if array.ndim == 3
             else idx.IDX_LABELS_MAGIC)
    data = idx_bytes(array, magic)
    name = idx.IDX_FILES[key]
    if compression == 'gz':
      data, name = gzip.compress(data), name + '.gz'
    elif compression == 'gz_content_raw_name':
      data = gzip.compress(data)  # detected by magic bytes, not by name
    (directory / name).write_bytes(data)
  return arrays


@pytest.mark.parametrize('compression', ['raw', 'gz', 'gz_content_raw_name'])
def test_idx_round_trips_pixels_and_labels(tmp_path, compression):
  arrays = write_idx_dir(tmp_path, compression, np.random.default_rng(0))
  dataset = sources.load(
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
    sources.load(
        dataset_config(source='idx', directory=str(tmp_path / 'nope')))
  assert_one_line_data_error(excinfo, 'does not exist', 'nope',
                             '--config.dataset.directory')


def test_idx_empty_directory_setting():
  with pytest.raises(DataError) as excinfo:
    sources.load(dataset_config(source='idx', directory=''))
  assert_one_line_data_error(excinfo, 'directory is empty',
                             '--config.dataset.directory=DIR')


def test_idx_missing_file_lists_the_four_names(tmp_path):
  write_idx_dir(tmp_path, 'raw', np.random.default_rng(0))
  (tmp_path / 't10k-labels-idx1-ubyte').unlink()
  with pytest.raises(DataError) as excinfo:
    sources.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(
      excinfo, 'no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz',
      *idx.IDX_FILES.values())


def test_idx_wrong_magic_says_expected_and_found(tmp_path):
  write_idx_dir(tmp_path, 'raw', np.random.default_rng(0))
  # A labels file where the images should be.
  (tmp_path / 'train-images-idx3-ubyte').write_bytes(
      idx_bytes(np.zeros(7), idx.IDX_LABELS_MAGIC))
  with pytest.raises(DataError) as excinfo:
    sources.load(dataset_config(source='idx', directory=str(tmp_path)))
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
    sources.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(excinfo, name, 'truncated', '100 data bytes',
                             'promises 105')


def test_idx_truncated_gzip_stream(tmp_path):
  write_idx_dir(tmp_path, 'gz', np.random.default_rng(0))
  path = tmp_path / 'train-labels-idx1-ubyte.gz'
  path.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(DataError) as excinfo:
    sources.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(excinfo, 'train-labels-idx1-ubyte.gz',
                             'corrupt or truncated gzip')


def test_idx_image_label_count_mismatch(tmp_path):
  write_idx_dir(tmp_path, 'raw', np.random.default_rng(0))
  (tmp_path / 'train-labels-idx1-ubyte').write_bytes(
      idx_bytes(np.zeros(6), idx.IDX_LABELS_MAGIC))
  with pytest.raises(DataError) as excinfo:
    sources.load(dataset_config(source='idx', directory=str(tmp_path)))
  assert_one_line_data_error(excinfo, '7 images', '6 labels')
