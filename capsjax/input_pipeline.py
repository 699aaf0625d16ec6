"""In-memory splits -> numpy batches, with the paper's shift augmentation.

Training batches are a pure function of `(split, step, batch_size, seed,
max_shift)`, so a run resumed from a checkpointed step sees exactly the batches
it would have seen without the interruption. With several processes (hosts)
each builds only its rows of every global batch, and the global batch is the
same for any number of processes. Everything here is numpy. The splits come
from `datasets`.
"""
import collections
import concurrent.futures
import itertools
import operator

import numpy as np

from capsjax import composite
from capsjax import datasets
from capsjax.errors import DataError

def _check_int(value, name: str, minimum: int) -> int:
  # `bool` is an `int` subclass, but `True` as a batch size is a bug.
  index = None
  if not isinstance(value, bool):
    try:
      index = operator.index(value)
    except TypeError:
      pass
  if index is None or index < minimum:
    raise DataError(f'{name} must be an int >= {minimum}, got {value!r}; '
                    f'set it to a whole number >= {minimum}.')
  return index


# ---------------------------------------------------------------- batching --


def shift_images(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
  """Translates each image by whole pixels, filling vacated pixels with 0.

  `out[b, y, x] = images[b, y - dy_b, x - dx_b]` where that source pixel
  exists, else 0: positive `dy` moves content down, positive `dx` right, and
  content moved past the border is lost.

  Args:
    images: `[B, H, W, C]`, any dtype.
    shifts: `[B, 2]` ints, `(dy, dx)` per image.

  Returns:
    `[B, H, W, C]`, the dtype of `images`.
  """
  images = np.asarray(images)
  shifts = np.asarray(shifts)
  if images.ndim != 4:
    raise DataError(f'shift_images needs [B, H, W, C] images, got shape '
                    f'{images.shape}; add the missing batch/channel axes.')
  if (shifts.shape != (len(images), 2)
      or not np.issubdtype(shifts.dtype, np.integer)):
    raise DataError(
        f'shift_images needs [{len(images)}, 2] integer shifts, got '
        f'{datasets.describe_array(shifts)}; pass one (dy, dx) int pair per image.')
  batch, height, width, _ = images.shape
  # Shifting by the full size or more leaves nothing; clipping bounds the pad.
  dy = np.clip(shifts[:, 0], -height, height)
  dx = np.clip(shifts[:, 1], -width, width)
  pad = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
  if pad == 0:
    return images.copy()
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  rows = np.arange(height)[None, :] - dy[:, None] + pad  # [B, H] source rows
  cols = np.arange(width)[None, :] - dx[:, None] + pad  # [B, W] source cols
  return padded[np.arange(batch)[:, None, None], rows[:, :, None],
                cols[:, None, :]]


def _to_float(images: np.ndarray) -> np.ndarray:
  # Division, not multiplication by 1/255: it is exactly rounded, so 255 maps
  # to exactly 1.0 and the range is [0, 1], not [0, 1 + 1 ulp].
  return images.astype(np.float32) / np.float32(255)


# The fields of config.dataset that `train_batch` / `eval_batches` read
# beyond the shifts.
PREPROCESS_FIELDS = ('crop_size', 'brightness_delta', 'contrast_delta',
                     'standardize')


def preprocess_options(dataset_config, train: bool = True) -> dict:
  """`train_batch`'s (or, `train=False`, `eval_batches`') preprocessing kwargs.

  Read from `config.dataset`: crop_size, brightness_delta, contrast_delta,
  standardize.
  """
  options = {name: dataset_config[name] for name in PREPROCESS_FIELDS}
  if not train:
    del options['brightness_delta'], options['contrast_delta']
  return options


def output_image_shape(image_shape, crop_size: int) -> tuple[int, int, int]:
  """`(H, W, C)` of the batches built from `image_shape` images."""
  height, width, channels = image_shape
  if crop_size:
    height = width = crop_size
  return (height, width, channels)


def crop_images(images: np.ndarray, offsets: np.ndarray,
                size: int) -> np.ndarray:
  """`out[b] = images[b, y_b:y_b + size, x_b:x_b + size]`, offsets `[B, 2]`."""
  rows = offsets[:, 0, None] + np.arange(size)[None, :]  # [B, size]
  cols = offsets[:, 1, None] + np.arange(size)[None, :]
  return images[np.arange(len(images))[:, None, None], rows[:, :, None],
                cols[:, None, :]]


def center_offsets(image_shape, size: int, batch: int) -> np.ndarray:
  """`[batch, 2]` offsets of the central `size x size` crop."""
  height, width = image_shape[:2]
  return np.tile([(height - size) // 2, (width - size) // 2], (batch, 1))


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


def standardize_images(images: np.ndarray) -> np.ndarray:
  """Each image to zero mean and unit variance (tf's per_image_standardization).

  The std is floored at `1 / sqrt(H * W * C)` so constant images stay finite.
  """
  mean = images.mean(axis=(1, 2, 3), keepdims=True)
  std = images.std(axis=(1, 2, 3), keepdims=True)
  floor = 1.0 / np.sqrt(np.prod(images.shape[1:]))
  return ((images - mean) / np.maximum(std, floor)).astype(np.float32)


def _check_preprocess(image_shape, crop_size=0, brightness_delta=0.0,
                      contrast_delta=0.0, standardize=False):
  height, width = image_shape[:2]
  crop_size = _check_int(crop_size, 'crop_size', 0)
  if crop_size > min(height, width):
    raise DataError(
        f'crop_size {crop_size} is larger than the {height}x{width} images; '
        f'set --config.dataset.crop_size to at most {min(height, width)} '
        f'(0 = no crop).')
  for name, value, high in (('brightness_delta', brightness_delta, np.inf),
                            ('contrast_delta', contrast_delta, 1.0)):
    if (isinstance(value, bool) or not isinstance(value, (int, float))
        or not 0 <= value < high):
      raise DataError(
          f'{name} must be a number in [0, {high}), got {value!r}; set '
          f'--config.dataset.{name}=0 to turn it off.')
  if not isinstance(standardize, bool):
    raise DataError(f'standardize must be True or False, got '
                    f'{standardize!r}; set --config.dataset.standardize=True.')
  return crop_size


def _check_batching(split: datasets.Split, batch_size, seed, max_shift):
  batch_size = _check_int(batch_size, 'batch_size', 1)
  if batch_size > split.num_examples:
    raise DataError(
        f'batch_size {batch_size} is larger than the training split '
        f'({split.num_examples} examples); lower --config.batch_size.')
  seed = _check_int(seed, 'seed', 0)
  max_shift = _check_int(max_shift, 'max_shift', 0)
  height, width = split.images.shape[1:3]
  if max_shift >= min(height, width):
    raise DataError(
        f'max_shift {max_shift} would shift {height}x{width} images out of '
        f'view; set --config.dataset.max_shift below {min(height, width)} '
        f'(the paper uses 2).')
  return batch_size, seed, max_shift


def _process_rows(batch_size: int, process_index, process_count) -> slice:
  """This process's contiguous rows of a global batch of `batch_size`."""
  process_count = _check_int(process_count, 'process_count', 1)
  process_index = _check_int(process_index, 'process_index', 0)
  if process_index >= process_count:
    raise DataError(f'process_index {process_index} is out of range for '
                    f'{process_count} processes; pass an index in [0, '
                    f'{process_count - 1}].')
  if batch_size % process_count:
    raise DataError(
        f'batch size {batch_size} is not divisible by the {process_count} '
        f'processes; use a multiple of {process_count}.')
  rows = batch_size // process_count
  return slice(process_index * rows, (process_index + 1) * rows)


def train_batch(split: datasets.Split, step: int, *, batch_size: int, seed: int,
                max_shift: int, pairs: bool = False, random_flip: bool = False,
                process_index: int = 0, process_count: int = 1,
                crop_size: int = 0, brightness_delta: float = 0.0,
                contrast_delta: float = 0.0,
                standardize: bool = False) -> dict[str, np.ndarray]:
  """This process's rows of the training batch of `step`; a pure function.

  Epochs are `N // batch_size` steps (the remainder of each epoch's order is
  dropped); epoch `e` visits the examples in a random order seeded by
  `(seed, e)`. Each image is then shifted by `(dy, dx)`, both uniform in
  `[-max_shift, max_shift]`, with zero fill (the paper's augmentation), drawn
  from a generator seeded by `(seed, step)`.

  With `pairs` (MultiMNIST, see `composite`) each example instead overlays
  its digit and a digit of another class, each shifted separately; partners
  and shifts are drawn from a generator seeded by `(seed, step)`. With
  `random_flip` each image is mirrored left-right with probability 1/2. Then,
  as the matrix capsules paper does for smallNORB (Sec. 4), each image can be
  cropped to a random `crop_size` square, get a random brightness shift in
  `[-brightness_delta, brightness_delta]` and contrast factor in
  `[1 - contrast_delta, 1 + contrast_delta]` (`jitter`) and be standardised
  (`standardize_images`). Every draw comes from its own generator seeded by
  `(stream, seed, step)`.

  The order, shifts, partners, flips, crops and jitter are drawn for the
  whole global batch, and process `p` of `P` gathers and transforms only
  rows `[p * B / P, (p + 1) * B / P)`; so the processes' rows concatenate to
  the single-process batch, whatever `P`.

  Args:
    split: the training examples.
    step: global training step, >= 0.
    batch_size: examples per global batch, at most `split.num_examples`.
    seed: non-negative int; the same seed gives the same batches.
    max_shift: largest shift in pixels; 0 turns augmentation off.
    pairs: overlay pairs of digits of different classes (MultiMNIST).
    random_flip: mirror half the images left-right.
    process_index: this process, in `[0, process_count)`.
    process_count: processes sharing the global batch; divides `batch_size`.
    crop_size: side of the random square crop; 0 keeps the whole image.
    brightness_delta: largest brightness shift (images are in [0, 1]).
    contrast_delta: largest deviation of the contrast factor from 1.
    standardize: each image to zero mean and unit variance.

  Returns:
    `{'image': [B/P, H, W, C] float32, 'label': [B/P] int32}`; H = W =
    crop_size if set; the pixels are in [0, 1] unless jittered or
    standardised. With `pairs`, 'label' is `[B/P, 2]` (base, partner) and
    'digits' `[B/P, 2, H, W, C]` float32 holds the two shifted digits.
  """
  batch_size, seed, max_shift = _check_batching(split, batch_size, seed,
                                                max_shift)
  crop_size = _check_preprocess(split.images.shape[1:], crop_size,
                                brightness_delta, contrast_delta, standardize)
  rows = _process_rows(batch_size, process_index, process_count)
  step = _check_int(step, 'step', 0)
  epoch, index_in_epoch = divmod(step, split.num_examples // batch_size)
  # The leading 0 / 1 keep the order and shift streams apart even when an
  # epoch number equals a step number.
  order = np.random.default_rng([0, seed, epoch]).permutation(
      split.num_examples)
  indices = order[index_in_epoch * batch_size:(index_in_epoch + 1) * batch_size]
  if pairs:
    # Drawn for the whole global batch, then this process's rows.
    merged, labels, digits = composite.overlay_pairs(
        split.images, split.labels, indices,
        np.random.default_rng([4, seed, step]), max_shift)
    batch = {'image': merged[rows], 'label': labels[rows],
             'digits': digits[rows]}
  else:
    indices = indices[rows]
    images = split.images[indices]
    if max_shift:
      shifts = np.random.default_rng([1, seed, step]).integers(
          -max_shift, max_shift, size=(batch_size, 2), endpoint=True)
      images = shift_images(images, shifts[rows])
    batch = {'image': images, 'label': split.labels[indices]}
  if random_flip:
    flip = np.random.default_rng([5, seed, step]).random(batch_size)[rows] < 0.5
    for key in ('image', 'digits'):
      if key in batch:
        # Width is the axis before channels: [..., H, W, C].
        flipped = np.flip(batch[key], axis=-2)
        where = flip.reshape(-1, *([1] * (batch[key].ndim - 1)))
        batch[key] = np.where(where, flipped, batch[key])
  if crop_size:
    height, width = split.images.shape[1:3]
    offsets = np.random.default_rng([2, seed, step]).integers(
        0, [height - crop_size, width - crop_size], size=(batch_size, 2),
        endpoint=True)
    batch['image'] = crop_images(batch['image'], offsets[rows], crop_size)
  for key in ('image', 'digits'):
    if key in batch:
      batch[key] = _to_float(batch[key])
  if brightness_delta or contrast_delta:
    draws = np.random.default_rng([3, seed, step]).uniform(
        -1.0, 1.0, size=(batch_size, 2))[rows]
    batch['image'] = jitter(batch['image'], brightness_delta * draws[:, 0],
                            1.0 + contrast_delta * draws[:, 1])
  if standardize:
    batch['image'] = standardize_images(batch['image'])
  return batch


def train_batches(split: datasets.Split, *, batch_size: int, seed: int, max_shift: int,
                  pairs: bool = False, random_flip: bool = False,
                  start_step: int = 0, prefetch: int = 2,
                  process_index: int = 0, process_count: int = 1,
                  **preprocess):
  """Endless `train_batch(split, s, ...)` for s = start_step, start_step + 1...

  With `prefetch > 0` the next `prefetch` batches are computed on one
  background thread while the caller uses the current one. Closing the
  iterator (or dropping it) stops and joins that thread.

  Args:
    split: the training examples.
    batch_size: see `train_batch`.
    seed: see `train_batch`.
    max_shift: see `train_batch`.
    pairs: see `train_batch`.
    random_flip: see `train_batch`.
    start_step: the first step, e.g. the step restored from a checkpoint.
    prefetch: batches computed ahead; 0 computes each batch on demand.
    process_index: see `train_batch`.
    process_count: see `train_batch`.
    **preprocess: crop_size, brightness_delta, contrast_delta, standardize
      (see `train_batch`, `preprocess_options`).

  Returns:
    An iterator of `train_batch` dicts.
  """
  # Checked now, not at the first next(): errors belong to the call site.
  batch_size = _check_batching(split, batch_size, seed, max_shift)[0]
  _check_preprocess(split.images.shape[1:], **preprocess)
  _process_rows(batch_size, process_index, process_count)
  start_step = _check_int(start_step, 'start_step', 0)
  prefetch = _check_int(prefetch, 'prefetch', 0)

  def make(step):
    return train_batch(split, step, batch_size=batch_size, seed=seed,
                       max_shift=max_shift, pairs=pairs,
                       random_flip=random_flip, process_index=process_index,
                       process_count=process_count, **preprocess)

  if prefetch == 0:
    return (make(step) for step in itertools.count(start_step))
  return _prefetched(make, start_step, prefetch)


def _prefetched(make, start_step: int, prefetch: int):
  # Started lazily with the generator, so an iterator that is never used
  # never starts a thread.
  steps = itertools.count(start_step)
  pool = concurrent.futures.ThreadPoolExecutor(
      max_workers=1, thread_name_prefix='capsjax-train-batches')
  try:
    pending = collections.deque(
        pool.submit(make, next(steps)) for _ in range(prefetch))
    while True:
      batch = pending.popleft().result()
      pending.append(pool.submit(make, next(steps)))
      yield batch
  finally:
    # Runs on close(), on garbage collection and on errors: drop the queued
    # batches and wait for the one in flight (milliseconds), so no thread
    # outlives the iterator.
    pool.shutdown(wait=True, cancel_futures=True)


def eval_batches(split: datasets.Split, batch_size: int, *, process_index: int = 0,
                 process_count: int = 1, crop_size: int = 0,
                 standardize: bool = False):
  """Every example of `split` exactly once, in order, in fixed-size batches.

  All global batches have exactly `batch_size` rows, so a jitted eval step
  compiles once: the last batch is zero-padded and its `mask` marks the real
  rows. Process `p` of `P` gets rows `[p * B / P, (p + 1) * B / P)` of each
  global batch, and every process gets the same number of batches.

  Args:
    split: the examples to evaluate.
    batch_size: rows per global batch, >= 1.
    process_index: this process, in `[0, process_count)`.
    process_count: processes sharing each batch; divides `batch_size`.
    crop_size: side of the central square crop; 0 keeps the whole image.
    standardize: each image to zero mean and unit variance
      (`standardize_images`).

  Returns:
    An iterator of `{'image': [B/P, H, W, C] float32 (in [0, 1] unless
    standardised; H = W = crop_size if set),
    'label': [B/P] int32, 'mask': [B/P] float32}` with mask 1 for real rows
    and 0 for padding; a split with `digits` (MultiMNIST) also gives
    'digits' `[B/P, 2, H, W, C]` float32 and `[B/P, 2]` labels.
  """
  batch_size = _check_int(batch_size, 'batch_size', 1)
  rows = _process_rows(batch_size, process_index, process_count)
  crop_size = _check_preprocess(split.images.shape[1:], crop_size,
                                standardize=standardize)
  return _eval_batches(split, batch_size, rows, crop_size, standardize)


def eval_images(images: np.ndarray, *, crop_size: int = 0,
                standardize: bool = False) -> np.ndarray:
  """uint8 `[B, H, W, C]` -> the float32 images `eval_batches` feeds."""
  if crop_size:
    images = crop_images(images, center_offsets(images.shape[1:], crop_size,
                                                len(images)), crop_size)
  images = _to_float(images)
  return standardize_images(images) if standardize else images


def _eval_batches(split: datasets.Split, batch_size: int, rows: slice,
                  crop_size: int = 0, standardize: bool = False):
  local_size = rows.stop - rows.start
  for start in range(0, split.num_examples, batch_size):
    # Slicing clips at the end of the split: a process past it gets 0 rows.
    part = slice(start + rows.start, start + rows.stop)
    batch = {'image': split.images[part], 'label': split.labels[part]}
    if split.digits is not None:
      batch['digits'] = split.digits[part]
    mask = np.ones(local_size, np.float32)
    num_real = len(batch['label'])
    if num_real < local_size:
      padding = local_size - num_real
      batch = {k: np.pad(v, ((0, padding),) + ((0, 0),) * (v.ndim - 1))
               for k, v in batch.items()}
      mask[num_real:] = 0
    batch['image'] = eval_images(batch['image'], crop_size=crop_size,
                                 standardize=standardize)
    if 'digits' in batch:
      batch['digits'] = _to_float(batch['digits'])
    batch['mask'] = mask
    yield batch
