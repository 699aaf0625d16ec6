"""Tests for dataset.source='folder' (capsjax.data.sources.folder).

Every test writes its own tiny PNG/JPEG images to a temporary folder.
"""
import os

import numpy as np
import PIL.Image
import pytest

from conftest import load_config

from capsjax import errors
from capsjax import validation
from capsjax.data import images
from capsjax.data import sources


def folder_config(directory, **overrides):
  config = load_config('mnist', **{'dataset.source': 'folder',
                                   'dataset.directory': str(directory)})
  config.dataset.update(overrides)
  return config.dataset


def write_image(path, array, **save_args):
  """Writes `array` ([H, W] gray or [H, W, 3] RGB uint8) as PNG or JPEG."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  PIL.Image.fromarray(np.asarray(array, np.uint8)).save(path, **save_args)


def value_image(value, size=(6, 4), rgb=False):
  """An image of one value (so a loaded image says which file it was)."""
  shape = (*size, 3) if rgb else size
  return np.full(shape, value, np.uint8)


def write_classes(root, counts, size=(6, 4), rgb=False, ext='png'):
  """`counts[name]` images in root/name/; image j of class k has value
  `10 * k + j`, so the pixel identifies the file."""
  for k, name in enumerate(sorted(counts)):
    for j in range(counts[name]):
      write_image(os.path.join(root, name, f'{j:02d}.{ext}'),
                  value_image(10 * k + j, size, rgb))


def one_line_error(excinfo, *fragments):
  message = str(excinfo.value)
  assert isinstance(excinfo.value, errors.UserError)
  assert '\n' not in message, message
  for fragment in fragments:
    assert fragment in message, message


def test_layout_class_names_and_labels(tmp_path):
  write_classes(tmp_path, {'cat': 5, 'dog': 5, 'ant': 5})
  dataset = sources.load(folder_config(tmp_path, image_size=(6, 4)))
  assert dataset.class_names == ('ant', 'cat', 'dog')
  assert dataset.num_classes == 3
  assert dataset.image_shape == (6, 4, 1)
  assert dataset.name == f'folder:{tmp_path}'
  for split in (dataset.train, dataset.test):
    # The value 10 * k + j says the image came from class folder k.
    np.testing.assert_array_equal(split.images[:, 0, 0, 0] // 10,
                                  split.labels)
  assert dataset.train.num_examples + dataset.test.num_examples == 15
  # Ignored: hidden files, other extensions, nested folders.
  assert dataset.train.images.dtype == np.uint8


def test_seeded_stratified_split_is_fixed(tmp_path):
  write_classes(tmp_path, {'a': 10, 'b': 20})
  config = folder_config(tmp_path, image_size=(6, 4), holdout_fraction=0.3)
  first = sources.load(config)
  np.testing.assert_array_equal(np.bincount(first.test.labels), [3, 6])
  np.testing.assert_array_equal(np.bincount(first.train.labels), [7, 14])
  # The same images every time (no dependence on the training seed).
  again = sources.load(config)
  np.testing.assert_array_equal(first.test.images, again.test.images)
  # Held-out images are not also trained on, and they are a random draw,
  # not the first files of each class.
  test_values = set(first.test.images[:, 0, 0, 0].tolist())
  assert not test_values & set(first.train.images[:, 0, 0, 0].tolist())
  assert test_values != {0, 1, 2, 10, 11, 12, 13, 14, 15}


def test_small_classes_keep_one_training_image(tmp_path):
  write_classes(tmp_path, {'a': 1, 'b': 2})
  dataset = sources.load(folder_config(tmp_path, image_size=(6, 4),
                                       holdout_fraction=0.6))
  np.testing.assert_array_equal(np.bincount(dataset.train.labels), [1, 1])
  np.testing.assert_array_equal(dataset.test.labels, [1])


def test_train_and_test_subfolders(tmp_path):
  write_classes(tmp_path / 'train', {'x': 3, 'y': 4})
  write_classes(tmp_path / 'test', {'x': 2, 'y': 1})
  dataset = sources.load(folder_config(tmp_path, image_size=(6, 4)))
  assert dataset.class_names == ('x', 'y')
  np.testing.assert_array_equal(dataset.train.labels, [0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(dataset.test.labels, [0, 0, 1])
  np.testing.assert_array_equal(dataset.test.images[:, 0, 0, 0], [0, 1, 10])


def test_stretch_resize(tmp_path):
  # A left-black, right-white 8x16 image stretched to 4x4: still left/right.
  image = np.zeros((8, 16), np.uint8)
  image[:, 8:] = 255
  write_image(str(tmp_path / 'a' / '0.png'), image)
  write_image(str(tmp_path / 'b' / '0.png'), image)
  write_image(str(tmp_path / 'b' / '1.png'), image)
  dataset = sources.load(folder_config(tmp_path, image_size=(4, 4),
                                       resize='stretch', holdout_fraction=0.5))
  out = dataset.train.images[0, ..., 0]
  assert dataset.image_shape == (4, 4, 1)
  np.testing.assert_array_equal(out[:, 0], 0)
  np.testing.assert_array_equal(out[:, -1], 255)


def test_pad_keeps_aspect_ratio(tmp_path):
  # An all-white 4x8 (H x W) image into 8x8: white band in the middle rows,
  # black padding above and below.
  white = np.full((4, 8), 255, np.uint8)
  for name in ('a/0.png', 'b/0.png', 'b/1.png'):
    write_image(str(tmp_path / name), white)
  dataset = sources.load(folder_config(tmp_path, image_size=(8, 8),
                                       resize='pad', holdout_fraction=0.5))
  out = dataset.train.images[0, ..., 0]
  np.testing.assert_array_equal(out[2:6], 255)
  np.testing.assert_array_equal(out[:2], 0)
  np.testing.assert_array_equal(out[6:], 0)


def test_rgb_kept_converted_and_jpeg(tmp_path):
  red = np.zeros((5, 5, 3), np.uint8)
  red[..., 0] = 200
  for name in ('a/0.jpg', 'a/1.JPEG', 'b/0.jpg'):
    write_image(str(tmp_path / name), red, quality=95)
  kept = sources.load(folder_config(tmp_path, image_size=(5, 5),
                                    holdout_fraction=0.5))
  assert kept.image_shape == (5, 5, 3)
  assert kept.train.num_examples + kept.test.num_examples == 3  # .JPEG too
  # JPEG is lossy: red stays red within a few levels.
  np.testing.assert_allclose(kept.train.images[0].mean((0, 1)), [200, 0, 0],
                             atol=6)
  gray = sources.load(folder_config(tmp_path, image_size=(5, 5), channels=1,
                                    holdout_fraction=0.5))
  assert gray.image_shape == (5, 5, 1)
  # ITU-R 601-2 luma, as Pillow converts: 0.299 * 200.
  np.testing.assert_allclose(gray.train.images.mean(), 0.299 * 200, atol=6)


def test_gray_files_converted_to_rgb(tmp_path):
  write_classes(tmp_path, {'a': 2, 'b': 2}, size=(3, 3))
  dataset = sources.load(folder_config(tmp_path, image_size=(3, 3),
                                       channels=3, holdout_fraction=0.5))
  assert dataset.image_shape == (3, 3, 3)
  np.testing.assert_array_equal(dataset.train.images[..., 0],
                                dataset.train.images[..., 2])


def test_ignores_other_files_and_hidden_files(tmp_path):
  write_classes(tmp_path, {'a': 2, 'b': 2})
  (tmp_path / 'a' / 'notes.txt').write_text('not an image')
  (tmp_path / 'a' / '.hidden.png').write_text('not an image')
  (tmp_path / '.cache').mkdir()
  dataset = sources.load(folder_config(tmp_path, image_size=(6, 4),
                                       holdout_fraction=0.5))
  assert dataset.class_names == ('a', 'b')
  assert dataset.train.num_examples + dataset.test.num_examples == 4


# ------------------------------------------------------------ bad inputs --


def test_missing_folder(tmp_path):
  with pytest.raises(errors.DataError) as excinfo:
    sources.load(folder_config(tmp_path / 'nope'))
  one_line_error(excinfo, 'nope', 'does not exist',
                 '--config.dataset.directory')


def test_empty_folder(tmp_path):
  with pytest.raises(errors.DataError) as excinfo:
    sources.load(folder_config(tmp_path))
  one_line_error(excinfo, 'no class subfolders', 'CLASS_NAME')


def test_images_without_class_folders(tmp_path):
  write_image(str(tmp_path / 'loose.png'), value_image(1))
  with pytest.raises(errors.DataError) as excinfo:
    sources.load(folder_config(tmp_path))
  one_line_error(excinfo, 'no class subfolders')


def test_class_without_images(tmp_path):
  write_classes(tmp_path, {'a': 2, 'b': 2})
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'readme.txt').write_text('x')
  with pytest.raises(errors.DataError) as excinfo:
    sources.load(folder_config(tmp_path))
  one_line_error(excinfo, str(tmp_path / 'empty'), 'no PNG or JPEG')


def test_unreadable_file_is_named(tmp_path):
  write_classes(tmp_path, {'a': 2, 'b': 2})
  bad = tmp_path / 'b' / 'broken.png'
  bad.write_bytes(b'\x89PNG\r\n\x1a\n garbage')
  with pytest.raises(errors.DataError) as excinfo:
    sources.load(folder_config(tmp_path, image_size=(6, 4),
                               holdout_fraction=0.5))
  one_line_error(excinfo, str(bad), 'delete or replace')


def test_truncated_jpeg_is_named(tmp_path):
  write_classes(tmp_path, {'a': 2, 'b': 2}, size=(32, 32), ext='jpg')
  path = tmp_path / 'a' / '00.jpg'
  path.write_bytes(path.read_bytes()[:200])
  with pytest.raises(errors.DataError) as excinfo:
    sources.load(folder_config(tmp_path, image_size=(32, 32),
                               holdout_fraction=0.5))
  one_line_error(excinfo, str(path))


def test_mixed_channels_without_conversion(tmp_path):
  write_classes(tmp_path, {'a': 2})
  write_image(str(tmp_path / 'b' / '0.png'), value_image(3, rgb=True))
  write_image(str(tmp_path / 'b' / '1.png'), value_image(3, rgb=True))
  with pytest.raises(errors.DataError) as excinfo:
    sources.load(folder_config(tmp_path, image_size=(6, 4),
                               holdout_fraction=0.5))
  one_line_error(excinfo, 'mix channel counts', str(tmp_path / 'a'),
                 str(tmp_path / 'b'), '--config.dataset.channels=1')
  # Converting fixes it.
  dataset = sources.load(folder_config(tmp_path, image_size=(6, 4),
                                       channels=1, holdout_fraction=0.5))
  assert dataset.image_shape == (6, 4, 1)


def test_fewer_than_two_classes(tmp_path):
  write_classes(tmp_path, {'only': 4})
  with pytest.raises(errors.DataError) as excinfo:
    sources.load(folder_config(tmp_path))
  one_line_error(excinfo, '1 class folder', '2 or more')


def test_test_split_with_unknown_class(tmp_path):
  write_classes(tmp_path / 'train', {'x': 2, 'y': 2})
  write_classes(tmp_path / 'test', {'x': 1, 'z': 1})
  with pytest.raises(errors.DataError) as excinfo:
    sources.load(folder_config(tmp_path))
  one_line_error(excinfo, "['z']", 'train/')


def test_nothing_held_out(tmp_path):
  write_classes(tmp_path, {'a': 1, 'b': 1})
  with pytest.raises(errors.DataError) as excinfo:
    sources.load(folder_config(tmp_path))
  one_line_error(excinfo, 'holds out no image', 'holdout_fraction')


@pytest.mark.parametrize('field, value, fragment', [
    ('image_size', (28,), 'image_size'),
    ('image_size', (0, 28), 'image_size'),
    ('image_size', (28.0, 28), 'image_size'),
    ('channels', 2, 'channels'),
    ('channels', True, 'channels'),
    ('resize', 'crop', 'resize'),
    ('holdout_fraction', 0.0, 'holdout_fraction'),
    ('holdout_fraction', 1, 'holdout_fraction'),
    ('directory', '', 'directory'),
])
def test_bad_fields_fail_before_the_workdir(tmp_path, field, value, fragment):
  config = load_config('quickstart', **{'dataset.source': 'folder',
                                        'dataset.directory': str(tmp_path)})
  config.dataset[field] = value
  with pytest.raises(errors.ConfigError) as excinfo:
    validation.check_config(config)
  one_line_error(excinfo, f'--config.dataset.{fragment}')


def test_shipped_config_fields_are_valid(tmp_path):
  config = load_config('quickstart', **{'dataset.source': 'folder',
                                        'dataset.directory': str(tmp_path)})
  validation.check_config(config)


def test_read_image_matches_the_dataset(tmp_path):
  rng = np.random.default_rng(0)
  for name in ('train/a/0.png', 'train/b/0.png', 'test/a/0.png'):
    write_image(str(tmp_path / name),
                rng.integers(0, 256, (13, 9, 3), np.uint8))
  config = folder_config(tmp_path, image_size=(7, 7), resize='pad',
                         channels=1)
  dataset = sources.load(config)
  options = images.image_options(config)
  np.testing.assert_array_equal(
      images.read_image(str(tmp_path / 'train' / 'a' / '0.png'), options),
      dataset.train.images[0])
