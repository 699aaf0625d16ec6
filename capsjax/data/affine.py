"""Affine-transformed digits: affNIST's files, or a seeded set like it.

The paper (Section 5.2) trains on "expanded MNIST" (digits placed at random on
a 40x40 canvas, `data.multimnist`) and tests on affNIST, MNIST test digits under
random small affine transformations on a 40x40 canvas. `load_affnist` reads
affNIST's published MATLAB files; without them, `generate` draws a set with
affNIST's published ranges (`AFFNIST_RANGES`) from any 28x28 test split.
Everything here is numpy (scipy reads the .mat files; it comes with JAX).
"""
import glob
import math
import os

import numpy as np

from capsjax import errors

# affNIST's ranges, from its page (Tijmen Tieleman, "affNIST",
# www.cs.toronto.edu/~tijmen/affNIST/): rotation at most 20 degrees either
# way; shear at most 0.2 either way; scaling by a factor between 0.8 and 1.2,
# horizontally and vertically independently; and a random translation that
# keeps the digit inside the 40x40 canvas.
AFFNIST_RANGES = {
    'rotation_degrees': (-20.0, 20.0),
    'shear': (-0.2, 0.2),
    'scale': (0.8, 1.2),
}
AFFNIST_SIZE = 40


def matrices(rotation_degrees: np.ndarray, shear: np.ndarray,
             scale_x: np.ndarray, scale_y: np.ndarray) -> np.ndarray:
  """`[N, 2, 2]` linear maps on `(x, y)`: rotation @ shear @ scale.

  x runs along the columns of an image and y down its rows.
  """
  angle = np.deg2rad(rotation_degrees)
  cos, sin = np.cos(angle), np.sin(angle)
  rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)],
                      -2)
  ones, zeros = np.ones_like(shear), np.zeros_like(shear)
  shearing = np.stack([np.stack([ones, shear], -1),
                       np.stack([zeros, ones], -1)], -2)
  scaling = np.stack([np.stack([scale_x, zeros], -1),
                      np.stack([zeros, scale_y], -1)], -2)
  return rotation @ shearing @ scaling


def warp(images: np.ndarray, linear: np.ndarray, translation: np.ndarray,
         size: int) -> np.ndarray:
  """Applies affine maps about the image centres, onto `size`x`size` canvases.

  Output pixel p (as `(x, y)`) takes the bilinear sample of the input at
  `linear^-1 (p - c_out - translation) + c_in`, with zeros outside the input;
  `c_in`, `c_out` are the centres of the input and output. The identity with
  zero translation therefore copies the image, centred on the canvas.

  Args:
    images: `[N, H, W, C]` uint8.
    linear: `[N, 2, 2]` maps on `(x, y)`.
    translation: `[N, 2]` `(tx, ty)` in output pixels.
    size: side of the output canvas.

  Returns:
    `[N, size, size, C]` uint8.
  """
  images = np.asarray(images)
  num, height, width, channels = images.shape
  inverse = np.linalg.inv(linear)  # [N, 2, 2]
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
  centre_out = (size - 1) / 2
  offset = np.stack([xs, ys], -1)[None] - centre_out  # [1, S, S, 2]
  offset = offset - translation[:, None, None, :]
  source = np.einsum('nij,nyxj->nyxi', inverse, offset)
  src_x = source[..., 0] + (width - 1) / 2
  src_y = source[..., 1] + (height - 1) / 2
  padded = np.pad(images.astype(np.float64),
                  ((0, 0), (1, 1), (1, 1), (0, 0)))
  # In padded coordinates; anything outside reads the zero border.
  src_x = np.clip(src_x + 1, 0, width + 1)
  src_y = np.clip(src_y + 1, 0, height + 1)
  x0 = np.clip(np.floor(src_x).astype(int), 0, width)
  y0 = np.clip(np.floor(src_y).astype(int), 0, height)
  fx = (src_x - x0)[..., None]
  fy = (src_y - y0)[..., None]
  n = np.arange(num)[:, None, None]
  top = padded[n, y0, x0] * (1 - fx) + padded[n, y0, x0 + 1] * fx
  bottom = padded[n, y0 + 1, x0] * (1 - fx) + padded[n, y0 + 1, x0 + 1] * fx
  out = top * (1 - fy) + bottom * fy
  del channels
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _ink_corners(images: np.ndarray) -> np.ndarray:
  """`[N, 4, 2]` corners `(x, y)` of each image's ink box, centre-relative."""
  num, height, width = images.shape[:3]
  ink = images.reshape(num, height, width, -1).max(-1) > 0
  rows, cols = ink.any(2), ink.any(1)
  corners = np.zeros((num, 4, 2))
  for i in range(num):
    r = np.flatnonzero(rows[i])
    c = np.flatnonzero(cols[i])
    if not len(r):  # a blank image: its whole frame
      r, c = np.array([0, height - 1]), np.array([0, width - 1])
    x_lo, x_hi = c[0] - 0.5 - (width - 1) / 2, c[-1] + 0.5 - (width - 1) / 2
    y_lo, y_hi = r[0] - 0.5 - (height - 1) / 2, r[-1] + 0.5 - (height - 1) / 2
    corners[i] = [[x_lo, y_lo], [x_hi, y_lo], [x_lo, y_hi], [x_hi, y_hi]]
  return corners


def random_transforms(images: np.ndarray, rng: np.random.Generator,
                      size: int = AFFNIST_SIZE) -> dict[str, np.ndarray]:
  """affNIST-like random transforms of `images: [N, H, W, C]`.

  Rotation, shear and the two scales are uniform in `AFFNIST_RANGES`; the
  translation is uniform over the positions that keep the transformed ink
  box inside the `size` canvas (centred when it does not fit).

  Returns:
    `{'rotation_degrees', 'shear', 'scale_x', 'scale_y': [N], 'linear':
    [N, 2, 2], 'translation': [N, 2]}`.
  """
  num = len(images)
  params = {
      'rotation_degrees': rng.uniform(*AFFNIST_RANGES['rotation_degrees'],
                                      num),
      'shear': rng.uniform(*AFFNIST_RANGES['shear'], num),
      'scale_x': rng.uniform(*AFFNIST_RANGES['scale'], num),
      'scale_y': rng.uniform(*AFFNIST_RANGES['scale'], num),
  }
  linear = matrices(**params)
  corners = np.einsum('nij,nkj->nki', linear, _ink_corners(images))
  half = size / 2
  low = -half - corners.min(1)   # [N, 2]: smallest translation that fits
  high = half - corners.max(1)
  fits = low <= high
  middle = (low + high) / 2
  low, high = np.where(fits, low, middle), np.where(fits, high, middle)
  params['translation'] = low + (high - low) * rng.random((num, 2))
  params['linear'] = linear
  return params


def generate(images: np.ndarray, seed: int,
             size: int = AFFNIST_SIZE) -> tuple[np.ndarray, dict]:
  """A seeded affNIST-like set: `([N, size, size, C] uint8, params)`."""
  params = random_transforms(images, np.random.default_rng([7, seed]), size)
  return warp(images, params['linear'], params['translation'], size), params


def load_affnist(directory: str) -> tuple[np.ndarray, np.ndarray, str]:
  """affNIST's test set from its published MATLAB files.

  Reads `test.mat` from `directory` (the unzipped test.mat.zip), or else
  every `*.mat` of `directory` in name order (e.g. test_batches/1.mat ...
  32.mat). Each holds a struct `affNISTdata` whose `image` is `[1600, N]`
  uint8, one 40x40 image per column stored row by row, and `label_int` the
  `N` classes.

  Returns:
    `([N, 40, 40, 1] uint8 images, [N] int32 labels, description)`.

  Raises:
    errors.DataError: no .mat files, or files that are not affNIST's.
  """
  if not os.path.isdir(directory):
    raise errors.DataError(
        f'--affnist_dir {directory} is not a directory; pass the directory '
        f'holding affNIST\'s test.mat (or test_batches/*.mat).')
  single = os.path.join(directory, 'test.mat')
  paths = ([single] if os.path.isfile(single)
           else sorted(glob.glob(os.path.join(directory, '*.mat')),
                       key=_batch_order))
  if not paths:
    raise errors.DataError(
        f'{directory} has no .mat files; download test.mat.zip from the '
        f'affNIST page, unzip it there, or omit --affnist_dir to generate a '
        f'set.')
  import scipy.io  # pylint: disable=g-import-not-at-top  # a JAX dependency
  images, labels = [], []
  for path in paths:
    try:
      data = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
      record = data['affNISTdata']
      pixels = np.asarray(record.image)
      label = np.atleast_1d(np.asarray(record.label_int))
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
      raise errors.DataError(
          f'{path} is not an affNIST .mat file ({type(e).__name__}: '
          f'{str(e).splitlines()[0] if str(e) else ""}); pass a directory of '
          f'affNIST\'s files as --affnist_dir.') from None
    if pixels.ndim == 1:
      pixels = pixels[:, None]
    if pixels.shape[0] != AFFNIST_SIZE ** 2 or pixels.shape[1] != len(label):
      raise errors.DataError(
          f'{path}: affNISTdata.image is {pixels.shape}, expected [1600, '
          f'{len(label)}]; pass a directory of affNIST\'s files.')
    images.append(pixels.T.reshape(-1, AFFNIST_SIZE, AFFNIST_SIZE, 1))
    labels.append(label)
  images = np.concatenate(images).astype(np.uint8)
  labels = np.concatenate(labels).astype(np.int32)
  names = ', '.join(os.path.basename(p) for p in paths[:3])
  more = ' ...' if len(paths) > 3 else ''
  return images, labels, f'affNIST {names}{more} ({len(labels)} images)'


def _batch_order(path: str):
  # 2.mat before 10.mat.
  stem = os.path.splitext(os.path.basename(path))[0]
  return (0, int(stem), '') if stem.isdigit() else (1, math.inf, stem)
