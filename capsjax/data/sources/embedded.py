"""dataset.source='embedded': the MNIST sample shipped with capsjax.

5,000 digits, 500 per class, in capsjax/data/mnist_5k.csv.gz (see
capsjax/data/README.md for provenance): training and evaluation with no
network and no downloads.
"""
import gzip
import importlib.resources
import io

import numpy as np

from capsjax import checks
from capsjax import errors
from capsjax.data.dataset import Dataset
from capsjax.data.dataset import Split

EMBEDDED_NAME = 'mnist_5k'

# The held-out digits of the embedded sample are chosen with this fixed seed,
# never the training seed, so every run is evaluated on the same 1,000 digits
# and test accuracies of runs with different seeds are comparable.
EMBEDDED_SPLIT_SEED = 0


def load(config) -> Dataset:
  """The offline MNIST sample: 5,000 digits, 500 per class ('mnist_5k').

  See capsjax/data/README.md for provenance. `holdout_per_class` digits of
  each class form the test split (100 -> 4,000 train / 1,000 test).
  """
  name = checks.string(checks.field(config, 'name'), 'dataset.name',
                       EMBEDDED_NAME, error=errors.DataError)
  # The sample is MNIST's, so the configs' default name 'mnist' selects it
  # too: --config.dataset.source=embedded alone works on any MNIST config.
  if name not in (EMBEDDED_NAME, 'mnist'):
    raise errors.DataError(
        f'unknown embedded dataset {name!r}; set '
        f'--config.dataset.name={EMBEDDED_NAME} (the only one).')
  holdout = checks.field(config, 'holdout_per_class')
  images, labels = read_sample()
  smallest_class = int(np.bincount(labels).min())
  if not checks.is_int(holdout) or not 1 <= holdout < smallest_class:
    raise errors.DataError(
        f'holdout_per_class={holdout!r} is out of range; set '
        f'--config.dataset.holdout_per_class to an int in [1, '
        f'{smallest_class - 1}] (each class has {smallest_class} examples).')
  test_index = _stratified_holdout(labels, int(holdout))
  is_test = np.zeros(len(labels), bool)
  is_test[test_index] = True
  # Boolean masks keep both splits in file order.
  return Dataset(
      name=f'embedded:{EMBEDDED_NAME}',
      train=Split(images=images[~is_test], labels=labels[~is_test]),
      test=Split(images=images[is_test], labels=labels[is_test]),
      num_classes=int(labels.max()) + 1)


def read_sample() -> tuple[np.ndarray, np.ndarray]:
  """`[5000, 28, 28, 1] uint8` images and `[5000] int32` labels."""
  resource = importlib.resources.files('capsjax.data') / 'mnist_5k.csv.gz'
  try:
    compressed = resource.read_bytes()
  except FileNotFoundError:
    raise errors.DataError(
        f'the embedded sample {resource} is missing from this capsjax install; '
        f'reinstall capsjax (pip install -e .) from a complete checkout.'
    ) from None
  try:
    with gzip.open(io.BytesIO(compressed), 'rt') as text:
      table = np.loadtxt(text, delimiter=',', dtype=np.int32, ndmin=2)
  except (OSError, EOFError, ValueError) as e:
    raise errors.DataError(
        f'the embedded sample {resource} is corrupt '
        f'({errors.first_line(e)}); restore it with git checkout.') from e
  # 784 pixels of a 28x28 digit, then the label.
  if table.shape[1] != 28 * 28 + 1 or table.min() < 0 or table.max() > 255:
    raise errors.DataError(
        f'the embedded sample {resource} is not 785 columns of 0-255; '
        f'restore it with git checkout.')
  images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
  return images, table[:, -1].copy()


def _stratified_holdout(labels: np.ndarray, per_class: int) -> np.ndarray:
  """Indices of `per_class` examples of every class, chosen at random."""
  rng = np.random.default_rng(EMBEDDED_SPLIT_SEED)
  chosen = []
  for label in np.unique(labels):  # ascending, so the draws are reproducible
    members = np.flatnonzero(labels == label)
    chosen.append(members[rng.permutation(len(members))[:per_class]])
  return np.sort(np.concatenate(chosen))
