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
