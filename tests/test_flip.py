"""random_flip mirrors training images left to right: column x becomes column
W - 1 - x, rows stay in place (never upside down), and a MultiMNIST image's
two digits (its reconstruction targets) are mirrored with it."""
import numpy as np
import pytest

from capsjax import data

# Not square, so a flip along the wrong axis cannot keep the shape by chance
# of symmetry; random pixels, so no image equals any flip of itself.
HEIGHT, WIDTH = 6, 9


def _split(num=40, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(1, 256, (num, HEIGHT, WIDTH, 1)).astype(np.uint8)
  return data.Split(images, (np.arange(num) % 10).astype(np.int32))


def _mirrored(image):
  """The image mirrored left to right, by its definition."""
  out = np.zeros_like(image)
  for y in range(image.shape[-3]):
    for x in range(image.shape[-2]):
      out[..., y, x, :] = image[..., y, WIDTH - 1 - x, :]
  return out


@pytest.mark.parametrize('max_shift', [0, 2])
def test_random_flip_mirrors_left_to_right(max_shift):
  plain = data.train_batch(
      _split(), 5, batch_size=32, seed=3,
      preprocessing=data.Preprocessing(max_shift=max_shift))
  flipped = data.train_batch(
      _split(), 5, batch_size=32, seed=3,
      preprocessing=data.Preprocessing(max_shift=max_shift, random_flip=True))
  np.testing.assert_array_equal(flipped['label'], plain['label'])
  mirrored = 0
  for got, image in zip(flipped['image'], plain['image']):
    if np.array_equal(got, image):
      continue
    np.testing.assert_array_equal(got, _mirrored(image))
    mirrored += 1
  assert 0 < mirrored < 32


def test_random_flip_mirrors_both_digits_with_their_overlay():
  # MultiMNIST: the overlay and both digits it is made of are mirrored
  # together, so each reconstruction target still matches its image.
  split = _split(seed=1)
  plain = data.train_batch(
      split, 4, batch_size=32, seed=2,
      preprocessing=data.Preprocessing(max_shift=1, pairs=True))
  flipped = data.train_batch(
      split, 4, batch_size=32, seed=2,
      preprocessing=data.Preprocessing(max_shift=1, pairs=True,
                                       random_flip=True))
  np.testing.assert_array_equal(flipped['label'], plain['label'])
  mirrored = 0
  for b in range(32):
    if np.array_equal(flipped['image'][b], plain['image'][b]):
      np.testing.assert_array_equal(flipped['digits'][b], plain['digits'][b])
      continue
    mirrored += 1
    np.testing.assert_array_equal(flipped['image'][b],
                                  _mirrored(plain['image'][b]))
    for t in range(2):
      np.testing.assert_array_equal(flipped['digits'][b, t],
                                    _mirrored(plain['digits'][b, t]))
  assert 0 < mirrored < 32
