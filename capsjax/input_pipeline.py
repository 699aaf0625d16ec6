"""Image classification data: sources -> in-memory arrays -> numpy batches.

Three sources fill a `Dataset` of two in-memory `Split`s:

  'tfds'      any TensorFlow Datasets image classification dataset
  'idx'       a directory of the four MNIST-format IDX files (optionally gzip)
  'embedded'  the 5,000-digit MNIST sample shipped in capsjax/data (offline)

Training batches are a pure function of `(split, step, batch_size, seed,
max_shift)`, so a run resumed from a checkpointed step sees exactly the batches
it would have seen without the interruption. With several processes (hosts)
each builds only its rows of every global batch, and the global batch is the
same for any number of processes. Everything here is numpy; only
the tfds loader imports TensorFlow, and only when it is used.
"""
import collections
import concurrent.futures
import dataclasses
import gzip
import importlib.resources
import io
import itertools
import operator
import os
import socket
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

SOURCES = ('tfds', 'idx', 'embedded')

EMBEDDED_NAME = 'mnist_5k'

IDX_FILES = {
    'train_images': 'train-images-idx3-ubyte',
    'train_labels': 'train-labels-idx1-ubyte',
    'test_images': 't10k-images-idx3-ubyte',
    'test_labels': 't10k-labels-idx1-ubyte',
}

# IDX magic numbers: two zero bytes, a type code (0x08 = unsigned byte) and
# the number of dimensions.
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

# The held-out digits of the embedded sample are chosen with this fixed seed,
# never the training seed, so every run is evaluated on the same 1,000 digits
# and test accuracies of runs with different seeds are comparable.
EMBEDDED_SPLIT_SEED = 0

# Said in every "cannot get the data" message: the offline alternatives.
_OFFLINE_ALTERNATIVES = (
    'use --config.dataset.source=idx --config.dataset.directory=DIR '
    '(MNIST-format IDX files, e.g. Debian\'s dataset-fashion-mnist in '
    '/usr/share/datasets/fashion-mnist) or --config=configs/quickstart.py '
    '(the embedded 5k MNIST sample)')

# Seconds to wait for a TCP connection to a download host before deciding
# there is no network (tfds itself would retry for ~3.5 minutes).
_PROBE_TIMEOUT = 3.0

# Examples per tf.data batch when reading a tfds split into memory.
_TFDS_READ_CHUNK = 10_000


class DataError(ValueError):
  """A dataset cannot be loaded or batched as configured; says how to fix it."""


def _one_line(text) -> str:
  """The first line of `text`, for quoting another library's message."""
  return str(text).strip().splitlines()[0] if str(text).strip() else ''


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


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """The examples of one split, in memory.

  `eq=False`: comparing arrays elementwise has no single truth value, so
  splits compare (and hash) by identity.

  Attributes:
    images: `[N, H, W, C] uint8` pixels, 0-255.
    labels: `[N] int32` class indices.
  """
  images: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    images, labels = self.images, self.labels
    if not (isinstance(images, np.ndarray) and images.ndim == 4
            and images.dtype == np.uint8):
      raise DataError(
          f'Split.images must be a [N, H, W, C] uint8 numpy array, got '
          f'{_describe(images)}; add a channel axis and convert with '
          f'.astype(np.uint8).')
    if not (isinstance(labels, np.ndarray) and labels.ndim == 1
            and labels.dtype == np.int32):
      raise DataError(
          f'Split.labels must be a [N] int32 numpy array, got '
          f'{_describe(labels)}; convert with .astype(np.int32).')
    if len(images) != len(labels):
      raise DataError(
          f'Split has {len(images)} images but {len(labels)} labels; pass '
          f'one label per image.')

  @property
  def num_examples(self) -> int:
    return len(self.labels)


def _describe(array) -> str:
  if isinstance(array, np.ndarray):
    return f'shape {array.shape} dtype {array.dtype}'
  return type(array).__name__


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A train and a test split of one image classification dataset.

  Attributes:
    name: where the data came from, e.g. 'tfds:mnist',
      'idx:/usr/share/datasets/fashion-mnist', 'embedded:mnist_5k'.
    train: the split to train on.
    test: the split to evaluate on.
    num_classes: labels are in `[0, num_classes)`.
  """
  name: str
  train: Split
  test: Split
  num_classes: int

  def __post_init__(self):
    if self.train.images.shape[1:] != self.test.images.shape[1:]:
      raise DataError(
          f'{self.name}: train images are {self.train.images.shape[1:]} but '
          f'test images are {self.test.images.shape[1:]}; use train and test '
          f'splits of the same dataset.')
    for split_name, split in (('train', self.train), ('test', self.test)):
      if split.num_examples and not (
          0 <= split.labels.min() and split.labels.max() < self.num_classes):
        raise DataError(
            f'{self.name}: {split_name} labels span [{split.labels.min()}, '
            f'{split.labels.max()}], outside [0, {self.num_classes}); the '
            f'label data is corrupt or num_classes is too small.')

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """`(H, W, C)` of every image."""
    return tuple(self.train.images.shape[1:])


# ----------------------------------------------------------------- loading --


def _field(config, name: str):
  try:
    return getattr(config, name)
  except AttributeError:
    raise DataError(
        f'the dataset config has no field {name!r}; add '
        f'config.dataset.{name} (see configs/mnist.py for all fields).'
    ) from None


def _str_field(config, name: str) -> str:
  value = _field(config, name)
  if not isinstance(value, str):
    raise DataError(f'config.dataset.{name} must be a string, got {value!r}; '
                    f'set --config.dataset.{name} to a string.')
  return value


def load(config) -> Dataset:
  """Loads the dataset described by a dataset config into memory.

  Args:
    config: an `ml_collections.ConfigDict` (only its attributes are read)
      with `source` ('tfds' | 'idx' | 'embedded') and that source's fields:
      tfds: `name`, `data_dir` ('' = tfds default), `train_split`,
      `test_split`; idx: `directory`; embedded: `name` ('mnist_5k') and
      `holdout_per_class`.

  Returns:
    The `Dataset`, both splits as numpy arrays.

  Raises:
    DataError: the config or the data is unusable; the message says how to
      fix it.
  """
  source = _field(config, 'source')
  if source == 'tfds':
    return _load_tfds(config)
  if source == 'idx':
    return _load_idx(config)
  if source == 'embedded':
    return _load_embedded(config)
  raise DataError(f'unknown dataset source {source!r}; set '
                  f'--config.dataset.source to one of {", ".join(SOURCES)}.')


# -------------------------------------------------------------------- tfds --


def _load_tfds(config) -> Dataset:
  """Reads two splits of a tfds dataset whole into memory.

  Meant for small image datasets (MNIST-sized: 60k 28x28 images are 47 MB);
  both splits are materialised as numpy arrays. The dataset is downloaded and
  prepared first if `data_dir` does not hold it yet.
  """
  name = _str_field(config, 'name')
  data_dir = _str_field(config, 'data_dir')
  train_split = _str_field(config, 'train_split')
  test_split = _str_field(config, 'test_split')
  # Imported here: TensorFlow takes seconds to import and only this source
  # needs it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.DatasetNotFoundError:
    # `from None`: tfds's message lists every registered dataset.
    raise DataError(
        f'unknown tfds dataset {name!r}: tfds has no builder of that name; see '
        f'tfds.list_builders(), or set dataset.source=\'idx\'/\'embedded\'.'
    ) from None
  except (ValueError, AssertionError) as e:
    # Malformed names, unknown configs and unknown versions.
    raise DataError(
        f'tfds cannot build {name!r}: {_one_line(e)}; fix --config.dataset.name'
        f' (format name[/config][:version]).') from e

  features = builder.info.features
  # Checked before any download: a dataset we cannot use is not worth fetching.
  if 'image' not in features or 'label' not in features:
    raise DataError(
        f'tfds dataset {name!r} has features {sorted(features.keys())}, not '
        f'\'image\' and \'label\'; choose an image classification dataset such '
        f'as \'mnist\' or \'fashion_mnist\'.')
  image_shape = tuple(features['image'].shape)
  if len(image_shape) != 3 or None in image_shape:
    raise DataError(
        f'tfds dataset {name!r} has images of shape {image_shape}, not a fixed '
        f'(H, W, C); choose a dataset with fixed-size images such as '
        f'\'mnist\', \'fashion_mnist\' or \'cifar10\'.')
  if np.dtype(features['image'].np_dtype) != np.uint8:
    raise DataError(
        f'tfds dataset {name!r} has {np.dtype(features["image"].np_dtype)} '
        f'images, not uint8; choose a dataset with 8-bit images.')
  num_classes = getattr(features['label'], 'num_classes', None)
  if not num_classes:
    raise DataError(
        f'tfds dataset {name!r} has a \'label\' feature that is not a '
        f'ClassLabel; choose an image classification dataset.')

  if not builder.is_prepared():
    _download_and_prepare(builder, name)
  return Dataset(
      name=f'tfds:{name}',
      train=_read_tfds_split(tfds, builder, name, train_split, 'train_split'),
      test=_read_tfds_split(tfds, builder, name, test_split, 'test_split'),
      num_classes=int(num_classes))


def _download_and_prepare(builder, name: str) -> None:
  """`builder.download_and_prepare()`, with offline failures made readable.

  Only errors of this step are translated: an unprepared dataset fails here
  when the machine is offline, and nowhere else.
  """
  import requests  # pylint: disable=g-import-not-at-top  # tfds's HTTP client

  try:
    _check_download_hosts_reachable(builder, name)
    builder.download_and_prepare()
  except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
          urllib.error.URLError) as e:
    raise DataError(
        f'tfds could not download {name!r} (probably no network: '
        f'{type(e).__name__}); {_OFFLINE_ALTERNATIVES}.') from e
  except ModuleNotFoundError as e:
    # tensorflow-datasets 4.9.10 imports importlib_resources to prepare any
    # dataset but declares it only for Python < 3.9
    # (github.com/tensorflow/datasets/issues/11212).
    raise DataError(
        f'tfds needs the Python module {e.name!r} to download {name!r} but it '
        f'is not installed; pip install {e.name} (or {_OFFLINE_ALTERNATIVES}).'
    ) from e


def _check_download_hosts_reachable(builder, name: str) -> None:
  """Fails in seconds when the dataset's download hosts cannot be reached.

  Without this, an offline machine spends ~3.5 minutes in tfds: requests
  retries each URL 10 times with exponential backoff, and tfds offers no
  option to shorten that.
  """
  if urllib.request.getproxies():
    # requests will go through the proxy; a direct probe would say nothing.
    return
  method = type(builder).download_and_prepare
  if not getattr(method, '__module__', '').startswith('tensorflow_datasets.'
                                                      'core'):
    # Replaced, e.g. by tfds.testing.mock_data: it downloads nothing.
    return
  hosts = set()
  for url in builder.url_infos or ():
    parts = urllib.parse.urlsplit(url)
    if parts.hostname:
      default_port = {'http': 80, 'ftp': 21}.get(parts.scheme, 443)
      hosts.add((parts.hostname, parts.port or default_port))
  for host, port in sorted(hosts):
    try:
      socket.create_connection((host, port), timeout=_PROBE_TIMEOUT).close()
    except OSError as e:
      raise DataError(
          f'tfds could not download {name!r}: cannot reach {host}:{port} '
          f'(probably no network: {_one_line(e)}); {_OFFLINE_ALTERNATIVES}.'
      ) from e


def _read_tfds_split(tfds, builder, name: str, split: str,
                     field: str) -> Split:
  # `builder.info.splits` is empty when the split sizes are unknown (e.g.
  # under tfds.testing.mock_data); as_dataset then reports bad splits itself.
  if builder.info.splits:
    try:
      builder.info.splits[split]  # pylint: disable=pointless-statement
    except (KeyError, ValueError) as e:
      raise DataError(
          f'tfds dataset {name!r} has no split {split!r} '
          f'({_one_line(e.args[0] if e.args else e)}); set '
          f'--config.dataset.{field} to one of {sorted(builder.info.splits)}, '
          f'optionally sliced like \'train[:90%]\'.') from e
  # Not `batch_size=-1`: it batches by the recorded split size, which is 0
  # under tfds.testing.mock_data, and TensorFlow then aborts the process.
  ds = builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(lambda ex: (ex['image'], ex['label'])).batch(_TFDS_READ_CHUNK)
  images, labels = [], []
  for image_chunk, label_chunk in tfds.as_numpy(ds):
    images.append(image_chunk)
    labels.append(label_chunk)
  if not images:
    raise DataError(f'tfds split {split!r} of {name!r} is empty; set '
                    f'--config.dataset.{field} to a non-empty split.')
  return Split(images=np.concatenate(images).astype(np.uint8, copy=False),
               labels=np.concatenate(labels).astype(np.int32))


# --------------------------------------------------------------------- idx --


def _load_idx(config) -> Dataset:
  """Reads the four MNIST-format IDX files of a directory.

  `num_classes` is the largest label in either split plus one: IDX files do
  not record the number of classes.
  """
  directory = _str_field(config, 'directory')
  if not directory:
    raise DataError(
        'config.dataset.directory is empty; set --config.dataset.directory=DIR '
        'to a directory of MNIST-format IDX files (e.g. '
        '/usr/share/datasets/fashion-mnist).')
  if not os.path.isdir(directory):
    raise DataError(
        f'IDX directory {directory!r} does not exist; set '
        f'--config.dataset.directory to a directory holding '
        f'{_expected_idx_names()} (e.g. /usr/share/datasets/fashion-mnist from '
        f'apt-get install dataset-fashion-mnist).')
  paths = {key: _find_idx_file(directory, base)
           for key, base in IDX_FILES.items()}
  splits = {}
  for split_name in ('train', 'test'):
    images_path = paths[f'{split_name}_images']
    labels_path = paths[f'{split_name}_labels']
    images = _read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
      raise DataError(
          f'{images_path} holds {len(images)} images but {labels_path} holds '
          f'{len(labels)} labels; the files are corrupt or from different '
          f'datasets, replace them with a matching pair.')
    splits[split_name] = Split(images=images[..., np.newaxis],
                               labels=labels.astype(np.int32))
  num_classes = 1 + max(int(s.labels.max(initial=0)) for s in splits.values())
  return Dataset(name=f'idx:{directory}', train=splits['train'],
                 test=splits['test'], num_classes=num_classes)


def _expected_idx_names() -> str:
  return ', '.join(f'{base}[.gz]' for base in IDX_FILES.values())


def _find_idx_file(directory: str, base: str) -> str:
  # The uncompressed file wins when both exist: it needs no decompression.
  for candidate in (base, base + '.gz'):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  raise DataError(
      f'{directory!r} has no {base} or {base}.gz; put the four MNIST-format '
      f'IDX files there: {_expected_idx_names()}.')


def _read_idx(path: str, expected_magic: int) -> np.ndarray:
  """Reads one unsigned-byte IDX file, gzip-compressed or not.

  Compression is detected from the gzip magic bytes, not the file name.

  Args:
    path: the file.
    expected_magic: `IDX_IMAGES_MAGIC` (rank 3) or `IDX_LABELS_MAGIC` (rank 1).

  Returns:
    A uint8 array with the dimensions of the header, e.g. `[N, H, W]` for
    images and `[N]` for labels.
  """
  with open(path, 'rb') as f:
    data = f.read()
  if data[:2] == b'\x1f\x8b':
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError) as e:  # BadGzipFile is an OSError
      raise DataError(
          f'{path} is a corrupt or truncated gzip file ({_one_line(e)}); '
          f'replace it with an intact copy.') from e
  if len(data) < 4:
    raise DataError(f'{path} is truncated: {len(data)} bytes, shorter than an '
                    f'IDX header; replace it with an intact copy.')
  magic = int.from_bytes(data[:4], 'big')
  if magic != expected_magic:
    kind = 'images' if expected_magic == IDX_IMAGES_MAGIC else 'labels'
    raise DataError(
        f'{path} has magic number 0x{magic:08x}, expected 0x{expected_magic:08x}'
        f' (uint8 {kind}); it is not an MNIST-format IDX {kind} file, replace '
        f'it with one.')
  rank = magic & 0xff
  header_size = 4 + 4 * rank
  if len(data) < header_size:
    raise DataError(f'{path} is truncated inside its header; replace it with '
                    f'an intact copy.')
  shape = tuple(int(d) for d in np.frombuffer(data, '>u4', rank, offset=4))
  size = int(np.prod(shape))
  if len(data) != header_size + size:
    raise DataError(
        f'{path} has {len(data) - header_size} data bytes but its header '
        f'promises {size} (shape {shape}); the file is truncated or corrupt, '
        f'replace it with an intact copy.')
  return np.frombuffer(data, np.uint8, size, offset=header_size).reshape(shape)


# ---------------------------------------------------------------- embedded --


def _load_embedded(config) -> Dataset:
  """The offline MNIST sample: 5,000 digits, 500 per class.

  See capsjax/data/README.md for provenance. `holdout_per_class` digits of
  each class form the test split (100 -> 4,000 train / 1,000 test).
  """
  name = _str_field(config, 'name')
  if name != EMBEDDED_NAME:
    raise DataError(f'unknown embedded dataset {name!r}; set '
                    f'--config.dataset.name={EMBEDDED_NAME} (the only one).')
  holdout = _field(config, 'holdout_per_class')
  images, labels = _read_embedded()
  smallest_class = int(np.bincount(labels).min())
  if (isinstance(holdout, bool) or not isinstance(holdout, (int, np.integer))
      or not 1 <= holdout < smallest_class):
    raise DataError(
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


def _read_embedded() -> tuple[np.ndarray, np.ndarray]:
  """`[5000, 28, 28, 1] uint8` images and `[5000] int32` labels."""
  resource = importlib.resources.files('capsjax') / 'data' / 'mnist_5k.csv.gz'
  try:
    compressed = resource.read_bytes()
  except FileNotFoundError:
    raise DataError(
        f'the embedded sample {resource} is missing from this capsjax install; '
        f'reinstall capsjax (pip install -e .) from a complete checkout.'
    ) from None
  try:
    with gzip.open(io.BytesIO(compressed), 'rt') as text:
      table = np.loadtxt(text, delimiter=',', dtype=np.int32, ndmin=2)
  except (OSError, EOFError, ValueError) as e:
    raise DataError(f'the embedded sample {resource} is corrupt '
                    f'({_one_line(e)}); restore it with git checkout.') from e
  # 784 pixels of a 28x28 digit, then the label.
  if table.shape[1] != 28 * 28 + 1 or table.min() < 0 or table.max() > 255:
    raise DataError(f'the embedded sample {resource} is not 785 columns of '
                    f'0-255; restore it with git checkout.')
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
        f'{_describe(shifts)}; pass one (dy, dx) int pair per image.')
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


def _check_batching(split: Split, batch_size, seed, max_shift):
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


def train_batch(split: Split, step: int, *, batch_size: int, seed: int,
                max_shift: int, process_index: int = 0,
                process_count: int = 1) -> dict[str, np.ndarray]:
  """This process's rows of the training batch of `step`; a pure function.

  Epochs are `N // batch_size` steps (the remainder of each epoch's order is
  dropped); epoch `e` visits the examples in a random order seeded by
  `(seed, e)`. Each image is then shifted by `(dy, dx)`, both uniform in
  `[-max_shift, max_shift]`, with zero fill (the paper's augmentation), drawn
  from a generator seeded by `(seed, step)`.

  The order and the shifts are drawn for the whole global batch, and process
  `p` of `P` gathers and shifts only rows `[p * B / P, (p + 1) * B / P)`; so
  the processes' rows concatenate to the single-process batch, whatever `P`.

  Args:
    split: the training examples.
    step: global training step, >= 0.
    batch_size: examples per global batch, at most `split.num_examples`.
    seed: non-negative int; the same seed gives the same batches.
    max_shift: largest shift in pixels; 0 turns augmentation off.
    process_index: this process, in `[0, process_count)`.
    process_count: processes sharing the global batch; divides `batch_size`.

  Returns:
    `{'image': [B/P, H, W, C] float32 in [0, 1], 'label': [B/P] int32}`.
  """
  batch_size, seed, max_shift = _check_batching(split, batch_size, seed,
                                                max_shift)
  rows = _process_rows(batch_size, process_index, process_count)
  step = _check_int(step, 'step', 0)
  epoch, index_in_epoch = divmod(step, split.num_examples // batch_size)
  # The leading 0 / 1 keep the order and shift streams apart even when an
  # epoch number equals a step number.
  order = np.random.default_rng([0, seed, epoch]).permutation(
      split.num_examples)
  indices = order[index_in_epoch * batch_size:(index_in_epoch + 1) * batch_size]
  indices = indices[rows]
  images = split.images[indices]
  if max_shift:
    shifts = np.random.default_rng([1, seed, step]).integers(
        -max_shift, max_shift, size=(batch_size, 2), endpoint=True)
    images = shift_images(images, shifts[rows])
  return {'image': _to_float(images), 'label': split.labels[indices]}


def train_batches(split: Split, *, batch_size: int, seed: int, max_shift: int,
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
    max_shift: see `train_batch`.
    start_step: the first step, e.g. the step restored from a checkpoint.
    prefetch: batches computed ahead; 0 computes each batch on demand.
    process_index: see `train_batch`.
    process_count: see `train_batch`.

  Returns:
    An iterator of `train_batch` dicts.
  """
  # Checked now, not at the first next(): errors belong to the call site.
  batch_size = _check_batching(split, batch_size, seed, max_shift)[0]
  _process_rows(batch_size, process_index, process_count)
  start_step = _check_int(start_step, 'start_step', 0)
  prefetch = _check_int(prefetch, 'prefetch', 0)

  def make(step):
    return train_batch(split, step, batch_size=batch_size, seed=seed,
                       max_shift=max_shift, process_index=process_index,
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


def eval_batches(split: Split, batch_size: int, *, process_index: int = 0,
                 process_count: int = 1):
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

  Returns:
    An iterator of `{'image': [B/P, H, W, C] float32 in [0, 1],
    'label': [B/P] int32, 'mask': [B/P] float32}` with mask 1 for real rows
    and 0 for padding.
  """
  batch_size = _check_int(batch_size, 'batch_size', 1)
  rows = _process_rows(batch_size, process_index, process_count)
  return _eval_batches(split, batch_size, rows)


def _eval_batches(split: Split, batch_size: int, rows: slice):
  local_size = rows.stop - rows.start
  for start in range(0, split.num_examples, batch_size):
    # Slicing clips at the end of the split: a process past it gets 0 rows.
    images = split.images[start + rows.start:start + rows.stop]
    labels = split.labels[start + rows.start:start + rows.stop]
    mask = np.ones(local_size, np.float32)
    num_real = len(labels)
    if num_real < local_size:
      padding = local_size - num_real
      images = np.pad(images, ((0, padding), (0, 0), (0, 0), (0, 0)))
      labels = np.pad(labels, (0, padding))
      mask[num_real:] = 0
    yield {'image': _to_float(images), 'label': labels, 'mask': mask}
