"""Generated sets built from a single-digit source: MultiMNIST and canvases.

Both are views of any `datasets.Dataset` (tfds, IDX or the embedded sample),
never a stored copy:

  MultiMNIST (Sabour et al. 2017, Section 6): each digit is padded by `shift`
    pixels (28x28 -> 36x36 for the paper's 4), shifted by up to `shift` pixels
    in each direction, and overlaid on a separately shifted digit of another
    class from the same split. Overlay = pixelwise sum clipped to 255, as the
    paper's official code (mnist_shift.py, `shift_write_multi_mnist`) merges
    its pairs.
  Canvas (the paper's "expanded MNIST", Section 5.2): each digit is placed at
    a random position on a black `canvas_size` square (40x40 in the paper),
    i.e. padded by `(canvas_size - 28) / 2` and shifted by up to as much.

`compose(dataset, dataset_config)` pads the training split (the training
pipeline draws shifts and partners as a pure function of (seed, step), see
`input_pipeline.train_batch`) and replaces the test split by a fixed set drawn
with `TEST_SEED`, the same for every run. Everything here is numpy.
"""
import numpy as np

from capsjax import datasets
from capsjax import errors

# The test overlays and placements are drawn with this seed, never the
# training seed, so runs with different seeds are evaluated on the same set.
TEST_SEED = 0


def pad(images: np.ndarray, amount: int) -> np.ndarray:
  """Zero-pads `[N, H, W, C]` images by `amount` pixels on every side."""
  return np.pad(images, ((0, 0), (amount, amount), (amount, amount), (0, 0)))


def overlay(first: np.ndarray, second: np.ndarray) -> np.ndarray:
  """Pixelwise sum clipped to 255 of two uint8 image batches (official code)."""
  total = first.astype(np.int32) + second.astype(np.int32)
  return np.minimum(total, 255).astype(np.uint8)


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
  # Imported here: input_pipeline imports this module.
  from capsjax import input_pipeline  # pylint: disable=g-import-not-at-top
  others = partners(labels, bases, rng)
  shifts = rng.integers(-shift, shift, size=(len(bases), 2, 2), endpoint=True)
  first = input_pipeline.shift_images(images[bases], shifts[:, 0])
  second = input_pipeline.shift_images(images[others], shifts[:, 1])
  pair_labels = np.stack([labels[bases], labels[others]], 1).astype(np.int32)
  return overlay(first, second), pair_labels, np.stack([first, second], 1)


def options(dataset_config) -> tuple[bool, int]:
  """`(multimnist, canvas_size)` of a dataset config."""
  return (bool(dataset_config.multimnist), int(dataset_config.canvas_size))


def compose(dataset: datasets.Dataset, dataset_config) -> datasets.Dataset:
  """The MultiMNIST or canvas view of `dataset`, or `dataset` if both are off.

  Args:
    dataset: a single-digit dataset.
    dataset_config: `config.dataset`; reads `multimnist`, `multimnist_shift`,
      `multimnist_test_size` and `canvas_size` (fields absent from configs
      recorded before they existed count as off).

  Returns:
    A `Dataset` whose train split holds the padded single digits (with
    `train_shift` and `pairs` telling `input_pipeline.train_batch` how to
    compose them) and whose test split is the fixed composed test set; a
    MultiMNIST test split has `[M, 2]` labels and the two `digits`.

  Raises:
    errors.DataError: the images do not fit the canvas.
  """
  multimnist, canvas_size = options(dataset_config)
  if multimnist:
    shift = int(dataset_config.multimnist_shift)
    size = int(dataset_config.multimnist_test_size)
    train = pad(dataset.train.images, shift)
    test_images = pad(dataset.test.images, shift)
    rng = np.random.default_rng([TEST_SEED, shift, size])
    # Every test digit is a base once before any is twice, in a seeded
    # order (splits may be sorted by class).
    bases = np.resize(rng.permutation(dataset.test.num_examples), size)
    merged, labels, digits = overlay_pairs(
        test_images, dataset.test.labels, bases, rng, shift)
    return datasets.Dataset(
        name=f'multimnist:{dataset.name}',
        train=datasets.Split(train, dataset.train.labels),
        test=datasets.Split(merged, labels, digits=digits),
        num_classes=dataset.num_classes, train_shift=shift, pairs=True)
  if canvas_size:
    height, width = dataset.image_shape[:2]
    margin = canvas_size - height
    if height != width or margin < 0 or margin % 2:
      raise errors.DataError(
          f'dataset.canvas_size {canvas_size} does not fit {height}x{width} '
          f'images; set --config.dataset.canvas_size to {height} + an even '
          f'number of pixels (the paper puts 28x28 digits on 40x40).')
    amount = margin // 2
    test = pad(dataset.test.images, amount)
    shifts = np.random.default_rng([TEST_SEED, canvas_size]).integers(
        -amount, amount, size=(len(test), 2), endpoint=True)
    from capsjax import input_pipeline  # pylint: disable=g-import-not-at-top
    return datasets.Dataset(
        name=f'canvas{canvas_size}:{dataset.name}',
        train=datasets.Split(pad(dataset.train.images, amount),
                             dataset.train.labels),
        test=datasets.Split(input_pipeline.shift_images(test, shifts),
                            dataset.test.labels),
        num_classes=dataset.num_classes, train_shift=amount)
  return dataset
