"""dataset.source='tfds': any TensorFlow Datasets image classification set.

Reads two splits whole into memory. TensorFlow (through tensorflow-datasets,
the `tfds` extra) is imported only when this source loads: it takes seconds
to import and no other source needs it.
"""
import socket
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from capsjax import checks
from capsjax import errors
from capsjax.data.dataset import Dataset
from capsjax.data.dataset import Split

# The largest `read_size`: images are resized in memory.
MAX_READ_SIZE = 4096

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


def _string(dataset_config, name: str) -> str:
  return checks.string(checks.field(dataset_config, name), f'dataset.{name}',
                       error=errors.DataError)


def load(config) -> Dataset:
  """Reads two splits of a tfds dataset whole into memory.

  Meant for small image datasets (MNIST-sized: 60k 28x28 images are 47 MB);
  both splits are materialised as numpy arrays. The dataset is downloaded and
  prepared first if `data_dir` does not hold it yet.
  """
  name = _string(config, 'name')
  data_dir = _string(config, 'data_dir')
  train_split = _string(config, 'train_split')
  test_split = _string(config, 'test_split')
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
        f'tfds cannot build {name!r}: {errors.first_line(e)}; fix '
        f'--config.dataset.name (format name[/config][:version]).') from e

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
          f'(probably no network: {errors.first_line(e)}); '
          f'{_OFFLINE_ALTERNATIVES}.') from e


def check_config(dataset_config) -> None:
  """Checks the tfds source's feature and size fields, reading no data.

  Raises:
    errors.ConfigError: naming the first bad field and a value that works.
  """
  _tfds_feature_options(dataset_config, errors.ConfigError)


def _tfds_feature_options(config, error=errors.DataError
                          ) -> tuple[str, str, int]:
  """(image feature, label feature, read_size) of a tfds dataset config.

  smallNORB, for one, names its features 'image' (and 'image2', the other
  camera of the stereo pair) and 'label_category'. `read_size` > 0 resizes
  the images to `read_size x read_size` with area averaging as they are
  read (the matrix capsules paper downscales smallNORB's 96x96 to 48x48).
  """
  image_key, label_key = (
      checks.string(checks.field(config, name), f'dataset.{name}',
                    name.split('_')[0], allow_empty=False, error=error)
      for name in ('image_feature', 'label_feature'))
  read_size = checks.int_at_least(
      checks.field(config, 'read_size'), 'dataset.read_size', 0, 0,
      why=' (0 = keep the size)', error=error)
  # Resized in memory: bounded so that a typo is an error, not a crash.
  checks.int_in(read_size, 'dataset.read_size', 0, MAX_READ_SIZE, 48,
                error=error)
  return image_key, label_key, read_size


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
          f'({errors.first_line(e.args[0] if e.args else e)}); set '
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
    raise errors.DataError(
        f'tfds split {split!r} of {name!r} is empty; set '
        f'--config.dataset.{field} to a non-empty split.')
  return Split(images=np.concatenate(images).astype(np.uint8, copy=False),
               labels=np.concatenate(labels).astype(np.int32))
