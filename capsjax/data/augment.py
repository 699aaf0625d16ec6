"""Pure image transforms on numpy batches: shift, pad, overlay, crop, flip,
jitter, standardize, and the uint8 -> float32 scaling.

Each takes `[B, H, W, C]` images (uint8 or float32 as stated) and returns a
new array; none draws random numbers (callers pass the draws), so each is a
pure function of its arguments.
"""
import numpy as np

from capsjax import errors
from capsjax.data import dataset


def to_float(images: np.ndarray) -> np.ndarray:
  """uint8 pixels 0-255 -> float32 in [0, 1]: the one place that scales.

  Division, not multiplication by 1/255: it is exactly rounded, so 255 maps
  to exactly 1.0 and the range is [0, 1], not [0, 1 + 1 ulp].
  """
  return np.asarray(images).astype(np.float32) / np.float32(255)


def shift(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
  """Translates each image by whole pixels, filling vacated pixels with 0.

  `out[b, y, x] = images[b, y - dy_b, x - dx_b]` where that source pixel
  exists, else 0: positive `dy` moves content down, positive `dx` right, and
  content moved past the border is lost.

  Args:
    images: `[B, H, W, C]`, any dtype.
    shifts: `[B, 2]` ints, `(dy, dx)` per image.

  Returns:
    `[B, H, W, C]`, the dtype of `images`.

  Raises:
    errors.DataError: `images` is not 4-D or `shifts` not `[B, 2]` ints.
  """
  images = np.asarray(images)
  shifts = np.asarray(shifts)
  if images.ndim != 4:
    raise errors.DataError(
        f'augment.shift needs [B, H, W, C] images, got shape {images.shape}; '
        f'add the missing batch/channel axes.')
  if (shifts.shape != (len(images), 2)
      or not np.issubdtype(shifts.dtype, np.integer)):
    raise errors.DataError(
        f'augment.shift needs [{len(images)}, 2] integer shifts, got '
        f'{dataset.describe_array(shifts)}; pass one (dy, dx) int pair per '
        f'image.')
  batch, height, width, _ = images.shape
  # Shifting by the full size or more leaves nothing; clipping bounds the pad.
  dy = np.clip(shifts[:, 0], -height, height)
  dx = np.clip(shifts[:, 1], -width, width)
  amount = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
  if amount == 0:
    return images.copy()
  padded = pad(images, amount)
  rows = np.arange(height)[None, :] - dy[:, None] + amount  # [B, H] sources
  cols = np.arange(width)[None, :] - dx[:, None] + amount  # [B, W] sources
  return padded[np.arange(batch)[:, None, None], rows[:, :, None],
                cols[:, None, :]]


def pad(images: np.ndarray, amount: int) -> np.ndarray:
  """Zero-pads `[N, H, W, C]` images by `amount` pixels on every side."""
  return np.pad(images, ((0, 0), (amount, amount), (amount, amount), (0, 0)))


def overlay(first: np.ndarray, second: np.ndarray) -> np.ndarray:
  """Pixelwise sum clipped to 255 of two uint8 image batches (the MultiMNIST
  paper's official code merges its pairs so)."""
  total = first.astype(np.int32) + second.astype(np.int32)
  return np.minimum(total, 255).astype(np.uint8)


def crop(images: np.ndarray, offsets: np.ndarray, size: int) -> np.ndarray:
  """`out[b] = images[b, y_b:y_b + size, x_b:x_b + size]`, offsets `[B, 2]`."""
  rows = offsets[:, 0, None] + np.arange(size)[None, :]  # [B, size]
  cols = offsets[:, 1, None] + np.arange(size)[None, :]
  return images[np.arange(len(images))[:, None, None], rows[:, :, None],
                cols[:, None, :]]


def center_offsets(image_shape, size: int, batch: int) -> np.ndarray:
  """`[batch, 2]` offsets of the central `size x size` crop."""
  height, width = image_shape[:2]
  return np.tile([(height - size) // 2, (width - size) // 2], (batch, 1))


def flip(images: np.ndarray, where: np.ndarray) -> np.ndarray:
  """`images[b]` mirrored left-right where `where[b]`, else unchanged.

  Args:
    images: `[B, ..., H, W, C]`; width is the axis before channels.
    where: `[B]` bools.
  """
  mask = np.asarray(where).reshape(-1, *([1] * (images.ndim - 1)))
  return np.where(mask, np.flip(images, axis=-2), images)


def jitter(images: np.ndarray, brightness: np.ndarray,
           contrast: np.ndarray) -> np.ndarray:
  """Per-image brightness shift then contrast scaling (no clipping).

  `x -> (x + b - m) * c + m` with m the image's mean after the shift, as
  tf.image.adjust_brightness then adjust_contrast (per channel).

  Args:
    images: `[B, H, W, C]` float32.
    brightness: `[B]` added to every pixel.
    contrast: `[B]` factors around each image's mean.
  """
  images = images + brightness[:, None, None, None].astype(np.float32)
  mean = images.mean(axis=(1, 2), keepdims=True)
  return ((images - mean) * contrast[:, None, None, None].astype(np.float32)
          + mean).astype(np.float32)


def standardize(images: np.ndarray) -> np.ndarray:
  """Each image to zero mean and unit variance (tf's per_image_standardization).

  The std is floored at `1 / sqrt(H * W * C)` so constant images stay finite.
  """
  mean = images.mean(axis=(1, 2, 3), keepdims=True)
  std = images.std(axis=(1, 2, 3), keepdims=True)
  floor = 1.0 / np.sqrt(np.prod(images.shape[1:]))
  return ((images - mean) / np.maximum(std, floor)).astype(np.float32)
