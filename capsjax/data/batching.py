"""In-memory splits -> numpy batches: training batches as a pure function of
`(seed, step)`, evaluation batches, prefetching.

A run resumed from a checkpointed step sees exactly the batches it would have
seen without the interruption. With several processes (hosts) each builds
only its rows of every global batch, and the global batch is the same for any
number of processes. How images are shifted, paired, flipped, cropped,
jittered and standardized is a `Preprocessing`, built once from
`config.dataset` and the loaded `Dataset`. Everything here is numpy.
"""
import collections
import concurrent.futures
import dataclasses
import itertools

import numpy as np

from capsjax import checks
from capsjax import errors
from capsjax.data import augment
from capsjax.data import multimnist
from capsjax.data.dataset import Dataset
from capsjax.data.dataset import Split


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How a split's uint8 images become a model's float32 inputs.

  Training (`train_batch`) applies all of it; evaluation (`eval_batches`,
  `eval_images`) only the central crop and `standardize`.

  Attributes:
    max_shift: largest shift in pixels of each training image (or, with
      `pairs`, of each digit); 0 turns it off.
    pairs: each training example overlays two digits of different classes
      (MultiMNIST, see `multimnist`).
    random_flip: mirror half the training images left-right.
    crop_size: side of the square crop (random in training, central in
      evaluation); 0 keeps the whole image.
    brightness_delta: largest brightness shift (images are in [0, 1]).
    contrast_delta: largest deviation of the contrast factor from 1, < 1.
    standardize: each image to zero mean and unit variance.

  Raises:
    errors.DataError: a field of the wrong type or out of range.
  """
  max_shift: int = 0
  pairs: bool = False
  random_flip: bool = False
  crop_size: int = 0
  brightness_delta: float = 0.0
  contrast_delta: float = 0.0
  standardize: bool = False

  def __post_init__(self):
    _check_fields(dataclasses.asdict(self), errors.DataError, prefix='')

  @classmethod
  def from_config(cls, dataset_config,
                  dataset: Dataset | None = None) -> 'Preprocessing':
    """The preprocessing `config.dataset` asks for, checked.

    Args:
      dataset_config: `config.dataset`; reads max_shift, random_flip,
        crop_size, brightness_delta, contrast_delta and standardize.
      dataset: the loaded data, if any: a MultiMNIST or canvas dataset
        places its digits by its own `train_shift` (and `pairs`), and the
        shift and crop are checked against its images.

    Raises:
      errors.ConfigError: naming the first bad `config.dataset` field and a
        value that works.
    """
    options = {field.name: checks.field(dataset_config, field.name,
                                        error=errors.ConfigError)
               for field in dataclasses.fields(cls) if field.name != 'pairs'}
    _check_fields(options, errors.ConfigError, prefix='dataset.')
    if dataset is None:
      return cls(**options)
    # A canvas or MultiMNIST dataset places its digits by its own shift.
    options['max_shift'] = dataset.train_shift or options['max_shift']
    preprocessing = cls(pairs=dataset.pairs, **options)
    preprocessing.check_images(dataset.image_shape, errors.ConfigError)
    return preprocessing

  def check_images(self, image_shape, error=errors.DataError, *,
                   training: bool = True) -> None:
    """Raises `error` if the crop (and in `training` the shift) does not fit
    `(H, W, C)` images."""
    height, width = image_shape[:2]
    if training and self.max_shift >= min(height, width):
      raise error(
          f'max_shift {self.max_shift} would shift {height}x{width} images '
          f'out of view; set --config.dataset.max_shift below '
          f'{min(height, width)} (the paper uses 2).')
    if self.crop_size > min(height, width):
      raise error(
          f'crop_size {self.crop_size} is larger than the {height}x{width} '
          f'images; set --config.dataset.crop_size to at most '
          f'{min(height, width)} (0 = no crop).')

  def output_shape(self, image_shape) -> tuple[int, int, int]:
    """`(H, W, C)` of the batches built from `image_shape` images."""
    height, width, channels = image_shape
    if self.crop_size:
      height = width = self.crop_size
    return (height, width, channels)


def _check_fields(values: dict, error, prefix: str) -> None:
  """The type and range checks of `Preprocessing`'s fields in `values`."""
  checks.int_at_least(values['max_shift'], prefix + 'max_shift', 0, 2,
                      error=error)
  for name in ('pairs', 'random_flip', 'standardize'):
    if name in values:
      checks.boolean(values[name], prefix + name, error=error)
  checks.int_at_least(values['crop_size'], prefix + 'crop_size', 0, 32,
                      why=' (0 = no crop)', error=error)
  checks.number_in(values['brightness_delta'], prefix + 'brightness_delta',
                   0.0, np.inf, 0, error=error)
  checks.number_in(values['contrast_delta'], prefix + 'contrast_delta', 0.0,
                   1.0, 0, high_open=True, error=error)


def _int(value, name: str, minimum: int) -> int:
  return checks.int_at_least(value, name, minimum, minimum,
                             error=errors.DataError)


def _check_batch_size(split: Split, batch_size) -> int:
  batch_size = _int(batch_size, 'batch_size', 1)
  if batch_size > split.num_examples:
    raise errors.DataError(
        f'batch_size {batch_size} is larger than the training split '
        f'({split.num_examples} examples); lower --config.batch_size.')
  return batch_size


def _process_rows(batch_size: int, process_index, process_count) -> slice:
  """This process's contiguous rows of a global batch of `batch_size`."""
  process_count = _int(process_count, 'process_count', 1)
  process_index = _int(process_index, 'process_index', 0)
  if process_index >= process_count:
    raise errors.DataError(
        f'process_index {process_index} is out of range for {process_count} '
        f'processes; pass an index in [0, {process_count - 1}].')
  if batch_size % process_count:
    raise errors.DataError(
        f'batch size {batch_size} is not divisible by the {process_count} '
        f'processes; use a multiple of {process_count}.')
  rows = batch_size // process_count
  return slice(process_index * rows, (process_index + 1) * rows)


def train_batch(split: Split, step: int, *, batch_size: int, seed: int,
                preprocessing: Preprocessing = Preprocessing(),
                process_index: int = 0,
                process_count: int = 1) -> dict[str, np.ndarray]:
  """This process's rows of the training batch of `step`; a pure function.

  Epochs are `N // batch_size` steps (the remainder of each epoch's order is
  dropped); epoch `e` visits the examples in a random order seeded by
  `(seed, e)`. Each image is then shifted by `(dy, dx)`, both uniform in
  `[-max_shift, max_shift]`, with zero fill (the paper's augmentation), drawn
  from a generator seeded by `(seed, step)`.

  With `preprocessing.pairs` (MultiMNIST, see `multimnist`) each example
  instead overlays its digit and a digit of another class, each shifted
  separately; partners and shifts are drawn from a generator seeded by
  `(seed, step)`. With `random_flip` each image is mirrored left-right with
  probability 1/2. Then, as the matrix capsules paper does for smallNORB
  (Sec. 4), each image can be cropped to a random `crop_size` square, get a
  random brightness shift in `[-brightness_delta, brightness_delta]` and
  contrast factor in `[1 - contrast_delta, 1 + contrast_delta]`
  (`augment.jitter`) and be standardised (`augment.standardize`). Every draw
  comes from its own generator seeded by `(stream, seed, step)`.

  The order, shifts, partners, flips, crops and jitter are drawn for the
  whole global batch, and process `p` of `P` gathers and transforms only
  rows `[p * B / P, (p + 1) * B / P)`; so the processes' rows concatenate to
  the single-process batch, whatever `P`.

  Args:
    split: the training examples.
    step: global training step, >= 0.
    batch_size: examples per global batch, at most `split.num_examples`.
    seed: non-negative int; the same seed gives the same batches.
    preprocessing: the augmentation; the default has none.
    process_index: this process, in `[0, process_count)`.
    process_count: processes sharing the global batch; divides `batch_size`.

  Returns:
    `{'image': [B/P, H, W, C] float32, 'label': [B/P] int32}`; H = W =
    crop_size if set; the pixels are in [0, 1] unless jittered or
    standardised. With `pairs`, 'label' is `[B/P, 2]` (base, partner) and
    'digits' `[B/P, 2, H, W, C]` float32 holds the two shifted digits.

  Raises:
    errors.DataError: a bad argument, or a shift or crop too large for the
      images.
  """
  batch_size = _check_batch_size(split, batch_size)
  seed = _int(seed, 'seed', 0)
  step = _int(step, 'step', 0)
  preprocessing.check_images(split.images.shape[1:])
  rows = _process_rows(batch_size, process_index, process_count)
  p = preprocessing
  epoch, index_in_epoch = divmod(step, split.num_examples // batch_size)
  # The leading 0 / 1 keep the order and shift streams apart even when an
  # epoch number equals a step number.
  order = np.random.default_rng([0, seed, epoch]).permutation(
      split.num_examples)
  indices = order[index_in_epoch * batch_size:(index_in_epoch + 1) * batch_size]
  if p.pairs:
    # Drawn for the whole global batch, then this process's rows.
    merged, labels, digits = multimnist.overlay_pairs(
        split.images, split.labels, indices,
        np.random.default_rng([4, seed, step]), p.max_shift)
    batch = {'image': merged[rows], 'label': labels[rows],
             'digits': digits[rows]}
  else:
    indices = indices[rows]
    images = split.images[indices]
    if p.max_shift:
      shifts = np.random.default_rng([1, seed, step]).integers(
          -p.max_shift, p.max_shift, size=(batch_size, 2), endpoint=True)
      images = augment.shift(images, shifts[rows])
    batch = {'image': images, 'label': split.labels[indices]}
  if p.random_flip:
    flip = np.random.default_rng([5, seed, step]).random(batch_size)[rows] < 0.5
    for key in ('image', 'digits'):
      if key in batch:
        batch[key] = augment.flip(batch[key], flip)
  if p.crop_size:
    height, width = split.images.shape[1:3]
    offsets = np.random.default_rng([2, seed, step]).integers(
        0, [height - p.crop_size, width - p.crop_size], size=(batch_size, 2),
        endpoint=True)
    batch['image'] = augment.crop(batch['image'], offsets[rows], p.crop_size)
  for key in ('image', 'digits'):
    if key in batch:
      batch[key] = augment.to_float(batch[key])
  if p.brightness_delta or p.contrast_delta:
    draws = np.random.default_rng([3, seed, step]).uniform(
        -1.0, 1.0, size=(batch_size, 2))[rows]
    batch['image'] = augment.jitter(
        batch['image'], p.brightness_delta * draws[:, 0],
        1.0 + p.contrast_delta * draws[:, 1])
  if p.standardize:
    batch['image'] = augment.standardize(batch['image'])
  return batch


def train_batches(split: Split, *, batch_size: int, seed: int,
                  preprocessing: Preprocessing = Preprocessing(),
                  start_step: int = 0, prefetch: int = 2,
                  process_index: int = 0, process_count: int = 1):
  """Endless `train_batch(split, s, ...)` for s = start_step, start_step + 1...

  With `prefetch > 0` the next `prefetch` batches are computed on one
  background thread while the caller uses the current one. Closing the
  iterator (or dropping it) stops and joins that thread.

  Args:
    split: the training examples.
    batch_size: see `train_batch`.
    seed: see `train_batch`.
    preprocessing: see `train_batch`.
    start_step: the first step, e.g. the step restored from a checkpoint.
    prefetch: batches computed ahead; 0 computes each batch on demand.
    process_index: see `train_batch`.
    process_count: see `train_batch`.

  Returns:
    An iterator of `train_batch` dicts.

  Raises:
    errors.DataError: as `train_batch`, at the call (not at the first
      `next`).
  """
  batch_size = _check_batch_size(split, batch_size)
  _int(seed, 'seed', 0)
  preprocessing.check_images(split.images.shape[1:])
  _process_rows(batch_size, process_index, process_count)
  start_step = _int(start_step, 'start_step', 0)
  prefetch = _int(prefetch, 'prefetch', 0)

  def make(step):
    # Looked up at each call, so a test can replace `train_batch`.
    return train_batch(split, step, batch_size=batch_size, seed=seed,
                       preprocessing=preprocessing,
                       process_index=process_index,
                       process_count=process_count)

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


def eval_images(images: np.ndarray,
                preprocessing: Preprocessing = Preprocessing()) -> np.ndarray:
  """uint8 `[B, H, W, C]` -> the float32 images `eval_batches` feeds: the
  central `crop_size` square, in [0, 1], standardised if asked."""
  size = preprocessing.crop_size
  if size:
    images = augment.crop(
        images, augment.center_offsets(images.shape[1:], size, len(images)),
        size)
  images = augment.to_float(images)
  return augment.standardize(images) if preprocessing.standardize else images


def eval_batches(split: Split, batch_size: int, *,
                 preprocessing: Preprocessing = Preprocessing(),
                 process_index: int = 0, process_count: int = 1):
  """Every example of `split` exactly once, in order, in fixed-size batches.

  All global batches have exactly `batch_size` rows, so a jitted eval step
  compiles once: the last batch is zero-padded and its `mask` marks the real
  rows. Process `p` of `P` gets rows `[p * B / P, (p + 1) * B / P)` of each
  global batch, and every process gets the same number of batches.

  Args:
    split: the examples to evaluate.
    batch_size: rows per global batch, >= 1.
    preprocessing: only its `crop_size` (central) and `standardize` apply
      (`eval_images`).
    process_index: this process, in `[0, process_count)`.
    process_count: processes sharing each batch; divides `batch_size`.

  Returns:
    An iterator of `{'image': [B/P, H, W, C] float32, 'label': [B/P] int32,
    'mask': [B/P] float32}` with mask 1 for real rows and 0 for padding; a
    split with `digits` (MultiMNIST) also gives 'digits' `[B/P, 2, H, W, C]`
    float32 and `[B/P, 2]` labels.

  Raises:
    errors.DataError: a bad argument, or a crop larger than the images.
  """
  batch_size = _int(batch_size, 'batch_size', 1)
  rows = _process_rows(batch_size, process_index, process_count)
  preprocessing.check_images(split.images.shape[1:], training=False)
  return _eval_batches(split, batch_size, rows, preprocessing)


def _eval_batches(split: Split, batch_size: int, rows: slice,
                  preprocessing: Preprocessing):
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
    batch['image'] = eval_images(batch['image'], preprocessing)
    if 'digits' in batch:
      batch['digits'] = augment.to_float(batch['digits'])
    batch['mask'] = mask
    yield batch
