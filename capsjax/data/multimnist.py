"""Generated sets built from a single-digit source: MultiMNIST and canvases.

Both are views of any `Dataset` (tfds, IDX or the embedded sample), never a
stored copy:

  MultiMNIST (Sabour et al. 2017, Section 6): each digit is padded by `shift`
    pixels (28x28 -> 36x36 for the paper's 4), shifted by up to `shift` pixels
    in each direction, and overlaid on a separately shifted digit of another
    class from the same split. Overlay = pixelwise sum clipped to 255, as the
    paper's official code (mnist_shift.py, `shift_write_multi_mnist`) merges
    its pairs.
  Canvas (the paper's "expanded MNIST", Section 5.2): each digit is placed at
    a random position on a black `canvas_size` square (40x40 in the paper),
    i.e. padded by `(canvas_size - 28) / 2` and shifted by up to as much.

`compose(dataset, dataset_config)` pads the training split (batching draws
shifts and partners as a pure function of (seed, step), see
`batching.train_batch`) and replaces the test split by a fixed set drawn with
`TEST_SEED`, the same for every run. Everything here is numpy.
"""
import numpy as np

from capsjax import checks
from capsjax import errors
from capsjax.data import augment
from capsjax.data.dataset import Dataset
from capsjax.data.dataset import Split

# The test overlays and placements are drawn with this seed, never the
# training seed, so runs with different seeds are evaluated on the same set.
TEST_SEED = 0
# Bounds of the generated images and test sets a host can hold in memory.
MAX_IMAGE_SIZE = 4096
MAX_GENERATED_EXAMPLES = 10**7


def check_config(dataset_config) -> None:
  """Checks the composition fields of `config.dataset` without any data:
  `multimnist`, `canvas_size`, `multimnist_shift`, `multimnist_test_size`,
  and `max_shift` 0 when either composes.

  Raises:
    errors.ConfigError: naming the first bad field and a value that works.
  """
  multimnist = checks.boolean(dataset_config.multimnist, 'dataset.multimnist')
  canvas_size = checks.int_at_least(dataset_config.canvas_size,
                                    'dataset.canvas_size', 0, 40,
                                    why=' (0 = off)')
  checks.int_at_least(dataset_config.multimnist_shift,
                      'dataset.multimnist_shift', 0, 4)
  checks.int_at_least(dataset_config.multimnist_test_size,
                      'dataset.multimnist_test_size', 1, 10000)
  # Generated in memory: bounded so that a typo is an error, not a crash.
  checks.int_in(canvas_size, 'dataset.canvas_size', 0, MAX_IMAGE_SIZE, 40)
  checks.int_in(dataset_config.multimnist_shift, 'dataset.multimnist_shift',
                0, MAX_IMAGE_SIZE, 4)
  checks.int_in(dataset_config.multimnist_test_size,
                'dataset.multimnist_test_size', 1, MAX_GENERATED_EXAMPLES,
                10000)
  if multimnist and canvas_size:
    raise errors.ConfigError(
        'config.dataset.multimnist and canvas_size cannot be combined; set '
        '--config.dataset.canvas_size=0.')
  composed = ('multimnist' if multimnist else
              'canvas_size' if canvas_size else None)
  if composed and dataset_config.max_shift:
    raise errors.ConfigError(
        f'config.dataset.max_shift must be 0 with dataset.{composed} (the '
        f'digits are already placed at random); set '
        f'--config.dataset.max_shift=0.')


def partners(labels: np.ndarray, bases: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
  """For each base index, a uniformly drawn index of a different class.

  Args:
    labels: `[N]` int class of every example of the split.
    bases: `[B]` indices into `labels`.
    rng: the generator to draw from.

  Returns:
    `[B]` indices `j` with `labels[j] != labels[bases]`, each uniform over
    all the examples of the other classes.

  Raises:
    errors.DataError: if a base's class is the only class in the split.
  """
  order = np.argsort(labels, kind='stable')
  classes, starts, counts = np.unique(labels[order], return_index=True,
                                      return_counts=True)
  base_class = np.searchsorted(classes, labels[bases])
  others = len(labels) - counts[base_class]
  if np.any(others == 0):
    raise errors.DataError(
        'MultiMNIST needs digits of at least two classes in each split; use '
        'a dataset with several classes or --config.dataset.multimnist=False.')
  # A uniform position among the examples of the other classes: the sorted
  # order with the base's class block cut out.
  position = rng.integers(0, others)
  after_block = position >= starts[base_class]
  position = position + after_block * counts[base_class]
  return order[position]


def overlay_pairs(images: np.ndarray, labels: np.ndarray, bases: np.ndarray,
                  rng: np.random.Generator, shift: int):
  """MultiMNIST examples: each base digit over a partner of another class.

  Args:
    images: `[N, S, S, C]` uint8 digits already padded by `shift`.
    labels: `[N]` int32.
    bases: `[B]` indices of the base digits.
    rng: draws the partners, then the shifts.
    shift: each digit moves by `(dy, dx)` uniform in `[-shift, shift]`.

  Returns:
    `(merged [B, S, S, C] uint8, pair_labels [B, 2] int32,
    digits [B, 2, S, S, C] uint8)`: the overlay, the (base, partner)
    classes, and the two shifted digits it was made of.
  """
  others = partners(labels, bases, rng)
  shifts = rng.integers(-shift, shift, size=(len(bases), 2, 2), endpoint=True)
  first = augment.shift(images[bases], shifts[:, 0])
  second = augment.shift(images[others], shifts[:, 1])
  pair_labels = np.stack([labels[bases], labels[others]], 1).astype(np.int32)
  return (augment.overlay(first, second), pair_labels,
          np.stack([first, second], 1))


def compose(dataset: Dataset, dataset_config) -> Dataset:
  """The MultiMNIST or canvas view of `dataset`, or `dataset` if both are off.

  Args:
    dataset: a single-digit dataset.
    dataset_config: `config.dataset`; reads `multimnist`, `multimnist_shift`,
      `multimnist_test_size` and `canvas_size`.

  Returns:
    A `Dataset` whose train split holds the padded single digits (with
    `train_shift` and `pairs` telling `batching.train_batch` how to compose
    them) and whose test split is the fixed composed test set; a MultiMNIST
    test split has `[M, 2]` labels and the two `digits`.

  Raises:
    errors.DataError: the images do not fit the canvas.
  """
  if bool(dataset_config.multimnist):
    return _multimnist(dataset, int(dataset_config.multimnist_shift),
                       int(dataset_config.multimnist_test_size))
  if int(dataset_config.canvas_size):
    return _canvas(dataset, int(dataset_config.canvas_size))
  return dataset


def _multimnist(dataset: Dataset, shift: int, size: int) -> Dataset:
  train = augment.pad(dataset.train.images, shift)
  test_images = augment.pad(dataset.test.images, shift)
  rng = np.random.default_rng([TEST_SEED, shift, size])
  # Every test digit is a base once before any is twice, in a seeded order
  # (splits may be sorted by class).
  bases = np.resize(rng.permutation(dataset.test.num_examples), size)
  merged, labels, digits = overlay_pairs(
      test_images, dataset.test.labels, bases, rng, shift)
  return Dataset(
      name=f'multimnist:{dataset.name}',
      train=Split(train, dataset.train.labels),
      test=Split(merged, labels, digits=digits),
      num_classes=dataset.num_classes, train_shift=shift, pairs=True)


def _canvas(dataset: Dataset, canvas_size: int) -> Dataset:
  height, width = dataset.image_shape[:2]
  margin = canvas_size - height
  if height != width or margin < 0 or margin % 2:
    raise errors.DataError(
        f'dataset.canvas_size {canvas_size} does not fit {height}x{width} '
        f'images; set --config.dataset.canvas_size to {height} + an even '
        f'number of pixels (the paper puts 28x28 digits on 40x40).')
  amount = margin // 2
  test = augment.pad(dataset.test.images, amount)
  shifts = np.random.default_rng([TEST_SEED, canvas_size]).integers(
      -amount, amount, size=(len(test), 2), endpoint=True)
  return Dataset(
      name=f'canvas{canvas_size}:{dataset.name}',
      train=Split(augment.pad(dataset.train.images, amount),
                  dataset.train.labels),
      test=Split(augment.shift(test, shifts), dataset.test.labels),
      num_classes=dataset.num_classes, train_shift=amount)
