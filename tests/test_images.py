"""Tests for capsjax.data.images: image files -> uint8 arrays.

The folder source's tests (test_folder.py) read whole folders through these
functions; these read single files.
"""
import numpy as np
import PIL.Image
import pytest

import conftest
from capsjax import errors
from capsjax.data import images


def save(path, array):
  PIL.Image.fromarray(array).save(path)
  return str(path)


def test_read_image_stretches_and_converts(tmp_path):
  gray = np.zeros((8, 16), np.uint8)
  gray[:, 8:] = 255  # left black, right white
  path = save(tmp_path / 'g.png', gray)
  out = images.read_image(path, images.ImageOptions((4, 4), 3, 'stretch'))
  assert out.shape == (4, 4, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[:, 0], 0)
  np.testing.assert_array_equal(out[:, -1], 255)
  own = images.read_image(path, images.ImageOptions((8, 16), 0, 'stretch'))
  np.testing.assert_array_equal(own[..., 0], gray)  # the file's 1 channel


def test_read_image_pads_keeping_the_aspect_ratio(tmp_path):
  path = save(tmp_path / 'w.png', np.full((4, 8), 255, np.uint8))
  out = images.read_image(path, images.ImageOptions((8, 8), 1, 'pad'))[..., 0]
  np.testing.assert_array_equal(out[2:6], 255)
  np.testing.assert_array_equal(out[:2], 0)
  np.testing.assert_array_equal(out[6:], 0)


def test_read_image_scales_16_bit_gray(tmp_path):
  path = save(tmp_path / 'd.png', np.array([[0, 32896, 65535]], np.uint16))
  out = images.read_image(path, images.ImageOptions((1, 3), 1, 'stretch'))
  np.testing.assert_array_equal(out[..., 0], [[0, 128, 255]])


def test_unreadable_file_is_named(tmp_path):
  bad = tmp_path / 'bad.png'
  bad.write_bytes(b'\x89PNG\r\n\x1a\n garbage')
  with pytest.raises(errors.DataError) as excinfo:
    images.read_image(str(bad), images.ImageOptions((2, 2), 1, 'stretch'))
  conftest.assert_one_line_data_error(excinfo, str(bad), 'delete or replace')


def test_image_files_lists_images_only(tmp_path):
  for name in ('b.PNG', 'a.jpg', '.hidden.png', 'notes.txt'):
    (tmp_path / name).write_bytes(b'')
  (tmp_path / 'sub.png').mkdir()
  assert images.image_files(str(tmp_path)) == [
      str(tmp_path / 'a.jpg'), str(tmp_path / 'b.PNG')]


@pytest.mark.parametrize('field, value', [
    ('image_size', (28,)), ('image_size', (0, 28)), ('image_size', (True, 2)),
    ('channels', 2), ('channels', True), ('resize', 'crop')])
def test_image_options_names_the_bad_field(field, value):
  config = conftest.dataset_config(**{field: value})
  with pytest.raises(errors.ConfigError) as excinfo:
    images.image_options(config)
  conftest.assert_one_line_data_error(excinfo, f'--config.dataset.{field}')


def test_image_options_from_config():
  config = conftest.dataset_config(image_size=(6, 4), channels=3,
                                   resize='pad')
  assert images.image_options(config) == images.ImageOptions((6, 4), 3, 'pad')
