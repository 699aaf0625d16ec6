"""Tests for capsjax.data.augment: the pure image transforms."""
import numpy as np
import pytest

from capsjax.data import augment
from capsjax.errors import DataError


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


def test_shift_matches_loop_reference():
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, (40, 5, 7, 2)).astype(np.uint8)
  shifts = rng.integers(-9, 10, (40, 2))  # includes shifts past the border
  shifts[:3] = [[0, 0], [5, 0], [0, -7]]
  out = augment.shift(images, shifts)
  assert out.dtype == np.uint8 and out.shape == images.shape
  np.testing.assert_array_equal(out, loop_shift(images, shifts))
  np.testing.assert_array_equal(out[0], images[0])
  assert not out[1].any() and not out[2].any()  # shifted fully out: all zero


def test_shift_fills_vacated_pixels_with_zero():
  images = np.ones((1, 3, 4, 1), np.uint8)
  out = augment.shift(images, np.array([[1, -2]]))
  np.testing.assert_array_equal(out[0, ..., 0], [[0, 0, 0, 0],
                                                 [1, 1, 0, 0],
                                                 [1, 1, 0, 0]])


def test_shift_rejects_bad_shapes():
  with pytest.raises(DataError, match='integer shifts'):
    augment.shift(np.zeros((2, 3, 3, 1)), np.zeros((2, 2)))
  with pytest.raises(DataError, match=r'\[B, H, W, C\]'):
    augment.shift(np.zeros((3, 3, 1)), np.zeros((3, 2), int))


def test_to_float_maps_0_255_to_exactly_0_1():
  out = augment.to_float(np.array([0, 51, 255], np.uint8))
  assert out.dtype == np.float32
  assert out[0] == 0.0 and out[2] == 1.0
  assert out[1] == np.float32(0.2)


def test_pad_and_overlay():
  images = np.full((2, 2, 3, 1), 200, np.uint8)
  padded = augment.pad(images, 1)
  assert padded.shape == (2, 4, 5, 1)
  assert padded.sum() == images.sum()
  np.testing.assert_array_equal(padded[:, 1:3, 1:4], images)
  merged = augment.overlay(images, np.full_like(images, 100))
  assert merged.dtype == np.uint8 and np.all(merged == 255)  # clipped sum


def test_crop_center_offsets_and_flip():
  images = np.arange(2 * 4 * 5).reshape(2, 4, 5, 1)
  offsets = augment.center_offsets(images.shape[1:], 2, 2)
  np.testing.assert_array_equal(offsets, [[1, 1], [1, 1]])
  np.testing.assert_array_equal(augment.crop(images, np.array([[0, 3], [2, 0]]),
                                             2),
                                [images[0, 0:2, 3:5], images[1, 2:4, 0:2]])
  flipped = augment.flip(images, np.array([True, False]))
  np.testing.assert_array_equal(flipped[0], images[0, :, ::-1])
  np.testing.assert_array_equal(flipped[1], images[1])


def test_jitter_and_standardize():
  images = np.random.default_rng(0).random((3, 4, 4, 2)).astype(np.float32)
  same = augment.jitter(images, np.zeros(3), np.ones(3))
  np.testing.assert_allclose(same, images, atol=1e-6)
  brighter = augment.jitter(images, np.full(3, 0.5), np.ones(3))
  np.testing.assert_allclose(brighter, images + 0.5, atol=1e-6)
  flat = augment.jitter(images, np.zeros(3), np.zeros(3))
  np.testing.assert_allclose(flat, np.broadcast_to(
      images.mean(axis=(1, 2), keepdims=True), images.shape), atol=1e-6)
  out = augment.standardize(images)
  np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-6)
  np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, rtol=1e-4)
  assert np.all(np.isfinite(augment.standardize(np.ones((1, 2, 2, 1)))))
