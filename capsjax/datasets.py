"""Dataset sources -> a `Dataset` of two in-memory `Split`s.

`SOURCES` maps `config.dataset.source` to a loader; a new source is one entry:

  'tfds'      any TensorFlow Datasets image classification dataset
  'idx'       a directory of the four MNIST-format IDX files (optionally gzip)
  'embedded'  the 5,000-digit MNIST sample shipped in capsjax/data (offline)

Everything here is numpy; only the tfds loader imports TensorFlow (through
tensorflow-datasets, the `tfds` extra), and only when it is used. Batching and
augmentation live in `input_pipeline`.
"""
import dataclasses
import gzip
import importlib.resources
import io
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

import numpy as np

from capsjax import errors

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




def _one_line(text) -> str:
  """The first line of `text`, for quoting another library's message."""
  return str(text).strip().splitlines()[0] if str(text).strip() else ''


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """The examples of one split, in memory.

  `eq=False`: comparing arrays elementwise has no single truth value, so
  splits compare (and hash) by identity.

  Attributes:
    images: `[N, H, W, C] uint8` pixels, 0-255.
    labels: `[N] int32` class indices, or `[N, T] int32` for images of T
      digits (MultiMNIST, see `composite`).
    digits: None, or with `[N, T]` labels the `[N, T, H, W, C] uint8` digits
      each image was made of, in label order (reconstruction targets).
  """
  images: np.ndarray
  labels: np.ndarray
  digits: Optional[np.ndarray] = None

  def __post_init__(self):
    images, labels = self.images, self.labels
    if not (isinstance(images, np.ndarray) and images.ndim == 4
            and images.dtype == np.uint8):
      raise errors.DataError(
          f'Split.images must be a [N, H, W, C] uint8 numpy array, got '
          f'{describe_array(images)}; add a channel axis and convert with '
          f'.astype(np.uint8).')
    if not (isinstance(labels, np.ndarray) and labels.ndim in (1, 2)
            and labels.dtype == np.int32):
      raise errors.DataError(
          f'Split.labels must be a [N] (or [N, T]) int32 numpy array, got '
          f'{describe_array(labels)}; convert with .astype(np.int32).')
    wanted = (*labels.shape, *images.shape[1:])
    if (self.digits is not None or labels.ndim == 2) and not (
        isinstance(self.digits, np.ndarray) and self.digits.shape == wanted
        and self.digits.dtype == np.uint8):
      raise errors.DataError(
          f'Split.digits must be {list(wanted)} uint8 with [N, T] labels (and '
          f'None otherwise), got {describe_array(self.digits)}.')
    if len(images) != len(labels):
      raise errors.DataError(
          f'Split has {len(images)} images but {len(labels)} labels; pass '
          f'one label per image.')

  @property
  def num_examples(self) -> int:
    return len(self.labels)


def describe_array(array) -> str:
  """Shape and dtype of an array, or the type of anything else, for errors."""
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
    train_shift: 0, or (set by `composite`) the padding of the training
      digits: each training digit is shifted by up to this many pixels in
      place of `config.dataset.max_shift`.
    pairs: (set by `composite`) each training example overlays two digits of
      different classes (MultiMNIST).
  """
  name: str
  train: Split
  test: Split
  num_classes: int
  train_shift: int = 0
  pairs: bool = False

  def __post_init__(self):
    if self.train.images.shape[1:] != self.test.images.shape[1:]:
      raise errors.DataError(
          f'{self.name}: train images are {self.train.images.shape[1:]} but '
          f'test images are {self.test.images.shape[1:]}; use train and test '
          f'splits of the same dataset.')
    for split_name, split in (('train', self.train), ('test', self.test)):
      if split.num_examples and not (
          0 <= split.labels.min() and split.labels.max() < self.num_classes):
        raise errors.DataError(
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
    raise errors.DataError(
        f'the dataset config has no field {name!r}; add '
        f'config.dataset.{name} (see configs/mnist.py for all fields).'
    ) from None


def _str_field(config, name: str) -> str:
  value = _field(config, name)
  if not isinstance(value, str):
    raise errors.DataError(f'config.dataset.{name} must be a string, got {value!r}; '
                    f'set --config.dataset.{name} to a string.')
  return value


def load(config) -> Dataset:
  """Loads the dataset described by a dataset config into memory.

  Args:
    config: an `ml_collections.ConfigDict` (only its attributes are read)
      with `source` ('tfds' | 'idx' | 'embedded') and that source's fields:
      tfds: `name`, `data_dir` ('' = tfds default), `train_split`,
      `test_split`; idx: `directory`; embedded: `name` ('mnist_5k') and
      `holdout_per_class`. `multimnist` or `canvas_size` turn it into a
      generated set (see `composite.compose`).

  Returns:
    The `Dataset`, both splits as numpy arrays.

  Raises:
    errors.DataError: the config or the data is unusable; the message says how to
      fix it.
  """
  source = _field(config, 'source')
  if source not in SOURCES:
    raise errors.DataError(f'unknown dataset source {source!r}; set '
                    f'--config.dataset.source to one of {", ".join(SOURCES)}.')
  # Imported here: composite builds on this module's Split and Dataset.
  from capsjax import composite  # pylint: disable=g-import-not-at-top
  return composite.compose(SOURCES[source](config), config)


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
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.DataError(
        'dataset.source=\'tfds\' needs tensorflow-datasets, which is not '
        'installed; pip install "capsjax[tfds]", or use '
        '--config.dataset.source=idx or embedded.') from None
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # tfds uses TensorFlow only to read files; the accelerators are JAX's.
  tf.config.set_visible_devices([], 'GPU')

  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.DatasetNotFoundError:
    # `from None`: tfds's message lists every registered dataset.
    raise errors.DataError(
        f'unknown tfds dataset {name!r}: tfds has no builder of that name; see '
        f'tfds.list_builders(), or set dataset.source=\'idx\'/\'embedded\'.'
    ) from None
  except (ValueError, AssertionError) as e:
    # Malformed names, unknown configs and unknown versions.
    raise errors.DataError(
        f'tfds cannot build {name!r}: {_one_line(e)}; fix --config.dataset.name'
        f' (format name[/config][:version]).') from e

  features = builder.info.features
  # Checked before any download: a dataset we cannot use is not worth fetching.
  if 'image' not in features or 'label' not in features:
    raise errors.DataError(
        f'tfds dataset {name!r} has features {sorted(features.keys())}, not '
        f'\'image\' and \'label\'; choose an image classification dataset such '
        f'as \'mnist\' or \'fashion_mnist\'.')
  image_shape = tuple(features['image'].shape)
  if len(image_shape) != 3 or None in image_shape:
    raise errors.DataError(
        f'tfds dataset {name!r} has images of shape {image_shape}, not a fixed '
        f'(H, W, C); choose a dataset with fixed-size images such as '
        f'\'mnist\', \'fashion_mnist\' or \'cifar10\'.')
  if np.dtype(features['image'].np_dtype) != np.uint8:
    raise errors.DataError(
        f'tfds dataset {name!r} has {np.dtype(features["image"].np_dtype)} '
        f'images, not uint8; choose a dataset with 8-bit images.')
  num_classes = getattr(features['label'], 'num_classes', None)
  if not num_classes:
    raise errors.DataError(
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
    raise errors.DataError(
        f'tfds could not download {name!r} (probably no network: '
        f'{type(e).__name__}); {_OFFLINE_ALTERNATIVES}.') from e
  except ModuleNotFoundError as e:
    # tensorflow-datasets 4.9.10 imports importlib_resources to prepare any
    # dataset but declares it only for Python < 3.9
    # (github.com/tensorflow/datasets/issues/11212).
    raise errors.DataError(
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
      raise errors.DataError(
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
      raise errors.DataError(
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
    raise errors.DataError(f'tfds split {split!r} of {name!r} is empty; set '
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
    raise errors.DataError(
        'config.dataset.directory is empty; set --config.dataset.directory=DIR '
        'to a directory of MNIST-format IDX files (e.g. '
        '/usr/share/datasets/fashion-mnist).')
  if not os.path.isdir(directory):
    raise errors.DataError(
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
      raise errors.DataError(
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
  raise errors.DataError(
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
      raise errors.DataError(
          f'{path} is a corrupt or truncated gzip file ({_one_line(e)}); '
          f'replace it with an intact copy.') from e
  if len(data) < 4:
    raise errors.DataError(f'{path} is truncated: {len(data)} bytes, shorter than an '
                    f'IDX header; replace it with an intact copy.')
  magic = int.from_bytes(data[:4], 'big')
  if magic != expected_magic:
    kind = 'images' if expected_magic == IDX_IMAGES_MAGIC else 'labels'
    raise errors.DataError(
        f'{path} has magic number 0x{magic:08x}, expected 0x{expected_magic:08x}'
        f' (uint8 {kind}); it is not an MNIST-format IDX {kind} file, replace '
        f'it with one.')
  rank = magic & 0xff
  header_size = 4 + 4 * rank
  if len(data) < header_size:
    raise errors.DataError(f'{path} is truncated inside its header; replace it with '
                    f'an intact copy.')
  shape = tuple(int(d) for d in np.frombuffer(data, '>u4', rank, offset=4))
  size = int(np.prod(shape))
  if len(data) != header_size + size:
    raise errors.DataError(
        f'{path} has {len(data) - header_size} data bytes but its header '
        f'promises {size} (shape {shape}); the file is truncated or corrupt, '
        f'replace it with an intact copy.')
  return np.frombuffer(data, np.uint8, size, offset=header_size).reshape(shape)


# ---------------------------------------------------------------- embedded --


def _load_embedded(config) -> Dataset:
  """The offline MNIST sample: 5,000 digits, 500 per class ('mnist_5k').

  See capsjax/data/README.md for provenance. `holdout_per_class` digits of
  each class form the test split (100 -> 4,000 train / 1,000 test).
  """
  name = _str_field(config, 'name')
  # The sample is MNIST's, so the configs' default name 'mnist' selects it
  # too: --config.dataset.source=embedded alone works on any MNIST config.
  if name not in (EMBEDDED_NAME, 'mnist'):
    raise errors.DataError(f'unknown embedded dataset {name!r}; set '
                    f'--config.dataset.name={EMBEDDED_NAME} (the only one).')
  holdout = _field(config, 'holdout_per_class')
  images, labels = _read_embedded()
  smallest_class = int(np.bincount(labels).min())
  if (isinstance(holdout, bool) or not isinstance(holdout, (int, np.integer))
      or not 1 <= holdout < smallest_class):
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


def _read_embedded() -> tuple[np.ndarray, np.ndarray]:
  """`[5000, 28, 28, 1] uint8` images and `[5000] int32` labels."""
  resource = importlib.resources.files('capsjax') / 'data' / 'mnist_5k.csv.gz'
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
    raise errors.DataError(f'the embedded sample {resource} is corrupt '
                    f'({_one_line(e)}); restore it with git checkout.') from e
  # 784 pixels of a 28x28 digit, then the label.
  if table.shape[1] != 28 * 28 + 1 or table.min() < 0 or table.max() > 255:
    raise errors.DataError(f'the embedded sample {resource} is not 785 columns of '
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


# config.dataset.source -> loader(dataset_config) -> Dataset.
SOURCES = {
    'tfds': _load_tfds,
    'idx': _load_idx,
    'embedded': _load_embedded,
}
