"""Dataset sources -> a `Dataset` of two in-memory `Split`s.

`SOURCES` maps `config.dataset.source` to a loader; a new source is one entry:

  'tfds'      any TensorFlow Datasets image classification dataset
  'idx'       a directory of the four MNIST-format IDX files (optionally gzip)
  'embedded'  the 5,000-digit MNIST sample shipped in capsjax/data (offline)
  'folder'    your own PNG/JPEG images, one subfolder per class

Everything here is numpy; only the tfds loader imports TensorFlow (through
tensorflow-datasets, the `tfds` extra) and only the folder loader imports
Pillow (the `train` extra), each only when it is used. Batching and
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
    class_names: the name of each class, by label, if the source has names
      (folder names, tfds label names); else None.
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
  class_names: tuple[str, ...] | None = None
  train_shift: int = 0
  pairs: bool = False

  def __post_init__(self):
    if (self.class_names is not None
        and len(self.class_names) != self.num_classes):
      raise errors.DataError(
          f'{self.name}: {len(self.class_names)} class names for '
          f'{self.num_classes} classes; pass one name per class.')
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
      with `source` (a name in `SOURCES`) and that source's fields:
      tfds: `name`, `data_dir` ('' = tfds default), `train_split`,
      `test_split`, `image_feature`, `label_feature`, `read_size`; idx:
      `directory`; embedded: `name` ('mnist_5k') and `holdout_per_class`;
      folder: `directory`, `image_size`, `channels`, `resize` and
      `holdout_fraction`. `multimnist` or `canvas_size` turn any of them into
      a generated set (see `composite.compose`).

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

  image_key, label_key, read_size = _tfds_feature_options(config)
  features = builder.info.features
  # Checked before any download: a dataset we cannot use is not worth fetching.
  if image_key not in features or label_key not in features:
    raise errors.DataError(
        f'tfds dataset {name!r} has features {sorted(features.keys())}, not '
        f'{image_key!r} and {label_key!r}; name its image and label features '
        f'with --config.dataset.image_feature and '
        f'--config.dataset.label_feature, or choose an image classification '
        f'dataset such as \'mnist\'.')
  image_shape = tuple(features[image_key].shape)
  if len(image_shape) != 3 or None in image_shape:
    raise errors.DataError(
        f'tfds dataset {name!r} has images of shape {image_shape}, not a fixed '
        f'(H, W, C); choose a dataset with fixed-size images such as '
        f'\'mnist\', \'fashion_mnist\' or \'cifar10\'.')
  if np.dtype(features[image_key].np_dtype) != np.uint8:
    raise errors.DataError(
        f'tfds dataset {name!r} has {np.dtype(features[image_key].np_dtype)} '
        f'images, not uint8; choose a dataset with 8-bit images.')
  num_classes = getattr(features[label_key], 'num_classes', None)
  if not num_classes:
    raise errors.DataError(
        f'tfds dataset {name!r} has a {label_key!r} feature that is not a '
        f'ClassLabel; choose an image classification dataset.')

  if not builder.is_prepared():
    _download_and_prepare(builder, name)
  names = getattr(features[label_key], 'names', None)
  return Dataset(
      name=f'tfds:{name}',
      train=_read_tfds_split(tfds, builder, name, train_split, 'train_split',
                             image_key, label_key, read_size),
      test=_read_tfds_split(tfds, builder, name, test_split, 'test_split',
                            image_key, label_key, read_size),
      num_classes=int(num_classes),
      class_names=(tuple(map(str, names))
                   if names and len(names) == num_classes else None))


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


# The tfds fields of config.dataset a config may lack (runs recorded before
# they existed): an image classification dataset's own names, no resizing.


def _tfds_feature_options(config) -> tuple[str, str, int]:
  """(image feature, label feature, read_size) of a tfds dataset config.

  smallNORB, for one, names its features 'image' (and 'image2', the other
  camera of the stereo pair) and 'label_category'. `read_size` > 0 resizes
  the images to `read_size x read_size` with area averaging as they are read (the
  matrix capsules paper downscales smallNORB's 96x96 to 48x48).
  """
  values = {name: _field(config, name)
            for name in ('image_feature', 'label_feature', 'read_size')}
  for name in ('image_feature', 'label_feature'):
    if not isinstance(values[name], str) or not values[name]:
      raise errors.DataError(
          f'config.dataset.{name} must be a feature name, got '
          f'{values[name]!r}; set --config.dataset.{name}='
          f'{name.split("_")[0]}.')
  read_size = values['read_size']
  if (isinstance(read_size, bool) or not isinstance(read_size, int)
      or read_size < 0):
    raise errors.DataError(
        f'config.dataset.read_size must be an int >= 0 (0 = keep the size), '
        f'got {read_size!r}; set --config.dataset.read_size=0.')
  return values['image_feature'], values['label_feature'], read_size


def _read_tfds_split(tfds, builder, name: str, split: str, field: str,
                     image_key: str = 'image', label_key: str = 'label',
                     read_size: int = 0) -> Split:
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
  ds = ds.map(lambda ex: (ex[image_key], ex[label_key]))
  if read_size:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    def resized(image, label):
      image = tf.image.resize(image, (read_size, read_size), method='area')
      return tf.cast(tf.round(image), tf.uint8), label
    ds = ds.map(resized)
  ds = ds.batch(_TFDS_READ_CHUNK)
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


# ------------------------------------------------------------------ folder --

# Files the folder source reads (case-insensitive); anything else, and hidden
# files, are skipped.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg')

# The folder source's held-out images are drawn with this fixed seed, never
# the training seed, so every run on a folder is evaluated on the same images.
FOLDER_SPLIT_SEED = 0

RESIZE_MODES = ('stretch', 'pad')
CHANNEL_CHOICES = (0, 1, 3)

# Pillow modes of one channel (plus alpha for 'LA'); every other mode is
# read as RGB (palettes, CMYK, YCbCr; alpha is dropped).
_GRAY_MODES = ('1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16B', 'I;16L', 'F')


@dataclasses.dataclass(frozen=True)
class ImageOptions:
  """How an image file becomes a `[H, W, C] uint8` array.

  Attributes:
    size: `(H, W)` of the result.
    channels: 1 (grayscale), 3 (RGB), or 0 (the file's own: 1 for grayscale
      files, 3 for colour ones).
    resize: 'stretch' (resize to `size`, ignoring the aspect ratio) or 'pad'
      (shrink or enlarge to fit inside `size` keeping the aspect ratio, then
      centre on black).
  """
  size: tuple[int, int]
  channels: int
  resize: str


def image_options(config) -> ImageOptions:
  """The folder source's `ImageOptions` from a dataset config, checked.

  Raises:
    errors.ConfigError: naming the first bad field and a value that works.
  """
  size = _field(config, 'image_size')
  try:
    size = tuple(size)
  except TypeError:
    size = (size,)
  if len(size) != 2 or not all(
      isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size):
    raise errors.ConfigError(
        f'config.dataset.image_size must be two ints >= 1 (H, W), got '
        f'{_field(config, "image_size")!r}; set '
        f"--config.dataset.image_size='(28, 28)'.")
  channels = _field(config, 'channels')
  if isinstance(channels, bool) or channels not in CHANNEL_CHOICES:
    raise errors.ConfigError(
        f'config.dataset.channels must be 1 (grayscale), 3 (RGB) or 0 (keep '
        f'the files\' own), got {channels!r}; set --config.dataset.channels=0.')
  resize = _field(config, 'resize')
  if resize not in RESIZE_MODES:
    raise errors.ConfigError(
        f'config.dataset.resize must be one of {", ".join(RESIZE_MODES)}, got '
        f'{resize!r}; set --config.dataset.resize=stretch.')
  return ImageOptions(size=size, channels=int(channels), resize=resize)


def check_folder_config(config) -> None:
  """Checks the folder source's fields without reading any image.

  Raises:
    errors.ConfigError: naming the first bad field and a value that works.
  """
  image_options(config)
  fraction = _field(config, 'holdout_fraction')
  if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
      or not 0 < fraction < 1):
    raise errors.ConfigError(
        f'config.dataset.holdout_fraction must be a number in (0, 1), got '
        f'{fraction!r}; set --config.dataset.holdout_fraction=0.2.')
  directory = _field(config, 'directory')
  if not isinstance(directory, str) or not directory:
    raise errors.ConfigError(
        'config.dataset.directory is empty; set --config.dataset.directory=DIR '
        'to a folder with one subfolder of images per class.')


def _import_pil():
  try:
    import PIL.Image  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.DataError(
        'dataset.source=\'folder\' reads images with Pillow, which is not '
        'installed; pip install "capsjax[train]" (or pip install pillow).'
    ) from None
  return PIL.Image


def _file_channels(mode: str) -> int:
  return 1 if mode in _GRAY_MODES else 3


def read_image(path: str, options: ImageOptions) -> np.ndarray:
  """One PNG or JPEG file as `[H, W, C] uint8`, converted as `options` say.

  The folder source reads every image with this function, and `predict` its
  inputs, so a model sees new images exactly as it saw its training images.

  Raises:
    errors.DataError: naming the file, if it cannot be read as an image.
  """
  pil_image = _import_pil()
  try:
    with pil_image.open(path) as image:
      image.load()
      if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
        # 16-bit and float grays: Pillow's conversion to 'L' clips at 255.
        array = np.asarray(image, np.float64)
        top = 65535.0 if image.mode.startswith('I;16') else max(
            float(array.max()), 1.0)
        image = pil_image.fromarray(
            np.clip(np.round(array * (255.0 / top)), 0, 255).astype(np.uint8))
      channels = options.channels or _file_channels(image.mode)
      image = image.convert('L' if channels == 1 else 'RGB')
      image = _fit(pil_image, image, options)
  except (OSError, ValueError, SyntaxError,
          pil_image.DecompressionBombError) as e:
    # UnidentifiedImageError and truncated files are OSErrors.
    raise errors.DataError(
        f'cannot read image {path} ({_one_line(e) or type(e).__name__}); '
        f'delete or replace it (PNG or JPEG).') from None
  array = np.asarray(image, np.uint8)
  return array.reshape(*array.shape[:2], channels)


def _fit(pil_image, image, options: ImageOptions):
  """`image` resized (stretched) or letterboxed to `options.size` (H, W)."""
  height, width = options.size
  if image.size == (width, height):
    return image
  resample = pil_image.Resampling.BILINEAR
  if options.resize == 'stretch':
    return image.resize((width, height), resample)
  scale = min(width / image.width, height / image.height)
  inner = (max(1, round(image.width * scale)),
           max(1, round(image.height * scale)))
  canvas = pil_image.new(image.mode, (width, height), 0)
  canvas.paste(image.resize(inner, resample),
               ((width - inner[0]) // 2, (height - inner[1]) // 2))
  return canvas


def image_files(directory: str) -> list[str]:
  """The PNG/JPEG files directly in `directory`, sorted by name."""
  return sorted(
      os.path.join(directory, name) for name in os.listdir(directory)
      if not name.startswith('.')
      and name.lower().endswith(IMAGE_EXTENSIONS)
      and os.path.isfile(os.path.join(directory, name)))


def _subfolders(directory: str) -> list[str]:
  return sorted(name for name in os.listdir(directory)
                if not name.startswith('.')
                and os.path.isdir(os.path.join(directory, name)))


def _class_files(root: str) -> dict[str, list[str]]:
  """Class name -> its image files, for a folder of class subfolders."""
  classes = _subfolders(root)
  if not classes:
    raise errors.DataError(
        f'{root} has no class subfolders; put each class\'s images in '
        f'{root}/CLASS_NAME/ (PNG or JPEG), one subfolder per class.')
  files = {}
  for name in classes:
    files[name] = image_files(os.path.join(root, name))
    if not files[name]:
      raise errors.DataError(
          f'class folder {os.path.join(root, name)} has no PNG or JPEG '
          f'images; add images to it or remove it.')
  return files


def _load_folder(config) -> Dataset:
  """Your own images: one subfolder per class, optionally train/ and test/.

  Class names are the sorted subfolder names, labels their positions. With
  `directory/train/` and `directory/test/` those are the splits; otherwise a
  stratified `holdout_fraction` of every class (at least one image of each
  class stays in training) is held out, drawn with `FOLDER_SPLIT_SEED`.
  Every image goes through `read_image` and is kept as uint8: N images of
  H x W x C take N*H*W*C bytes.
  """
  check_folder_config(config)
  directory = config.directory
  options = image_options(config)
  if not os.path.isdir(directory):
    raise errors.DataError(
        f'image folder {directory!r} does not exist; set '
        f'--config.dataset.directory to a folder with one subfolder of images '
        f'per class.')
  top = _subfolders(directory)
  if 'train' in top and 'test' in top:
    train_files = _class_files(os.path.join(directory, 'train'))
    test_files = _class_files(os.path.join(directory, 'test'))
    unknown = sorted(set(test_files) - set(train_files))
    if unknown:
      raise errors.DataError(
          f'{directory}/test has classes {unknown} that {directory}/train '
          f'lacks; add them to train/ or remove them from test/.')
    class_names = sorted(train_files)
    _check_two_classes(directory, class_names)
  else:
    files = _class_files(directory)
    class_names = sorted(files)
    _check_two_classes(directory, class_names)
    train_files, test_files = _split_files(files, config.holdout_fraction)
    if not any(test_files.values()):
      raise errors.DataError(
          f'{directory}: holdout_fraction {config.holdout_fraction} holds out '
          f'no image (every class needs 2 or more images to lend one); raise '
          f'--config.dataset.holdout_fraction or add images.')
  labels = {name: index for index, name in enumerate(class_names)}
  first_with = {}  # Channel count -> the first file that has it.
  return Dataset(
      name=f'folder:{directory}',
      train=_read_split(train_files, labels, options, first_with),
      test=_read_split(test_files, labels, options, first_with),
      num_classes=len(class_names), class_names=tuple(class_names))


def _check_two_classes(directory: str, class_names: list[str]) -> None:
  if len(class_names) < 2:
    raise errors.DataError(
        f'{directory} has {len(class_names)} class folder '
        f'({", ".join(class_names)}); a classifier needs 2 or more, add a '
        f'subfolder of images per class.')


def _split_files(files: dict[str, list[str]], fraction: float):
  """Stratified held-out split: `(train, test)` dicts like `files`."""
  rng = np.random.default_rng(FOLDER_SPLIT_SEED)
  train, test = {}, {}
  for name in sorted(files):  # Sorted: the draws are reproducible.
    members = files[name]
    num_test = min(len(members) - 1, round(fraction * len(members)))
    is_test = np.zeros(len(members), bool)
    is_test[rng.permutation(len(members))[:num_test]] = True
    train[name] = [f for f, held in zip(members, is_test) if not held]
    test[name] = [f for f, held in zip(members, is_test) if held]
  return train, test


def _read_split(files: dict[str, list[str]], labels: dict[str, int],
                options: ImageOptions, first_with: dict[int, str]) -> Split:
  """The listed files as a `Split`.

  Records in `first_with` the first file of each channel count it reads.
  """
  images, split_labels = [], []
  for name in sorted(files):
    for path in files[name]:
      image = read_image(path, options)
      first_with.setdefault(image.shape[-1], path)
      images.append(image)
      split_labels.append(labels[name])
  if len(first_with) > 1:
    # Before np.stack, whose shape error would not name the files.
    _raise_mixed_channels(first_with)
  return Split(images=np.stack(images),
               labels=np.asarray(split_labels, np.int32))


def _raise_mixed_channels(first_with: dict[int, str]):
  raise errors.DataError(
      f'the images mix channel counts (grayscale {first_with[1]}, colour '
      f'{first_with[3]}); set --config.dataset.channels=1 (grayscale) or 3 '
      f'(RGB) to convert them all.')


# config.dataset.source -> loader(dataset_config) -> Dataset.
SOURCES = {
    'tfds': _load_tfds,
    'idx': _load_idx,
    'embedded': _load_embedded,
    'folder': _load_folder,
}
