"""dataset.source='idx': a directory of the four MNIST-format IDX files.

Each file may be gzip-compressed (detected from its magic bytes, not its
name); e.g. Debian's dataset-fashion-mnist in /usr/share/datasets.
"""
import gzip
import os

import numpy as np

from capsjax import checks
from capsjax import errors
from capsjax.data.dataset import Dataset
from capsjax.data.dataset import Split

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


def load(config) -> Dataset:
  """Reads the four MNIST-format IDX files of a directory.

  `num_classes` is the largest label in either split plus one: IDX files do
  not record the number of classes.
  """
  directory = checks.string(checks.field(config, 'directory'),
                            'dataset.directory', error=errors.DataError)
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
          f'{path} is a corrupt or truncated gzip file '
          f'({errors.first_line(e)}); replace it with an intact copy.') from e
  if len(data) < 4:
    raise errors.DataError(
        f'{path} is truncated: {len(data)} bytes, shorter than an IDX '
        f'header; replace it with an intact copy.')
  magic = int.from_bytes(data[:4], 'big')
  if magic != expected_magic:
    kind = 'images' if expected_magic == IDX_IMAGES_MAGIC else 'labels'
    raise errors.DataError(
        f'{path} has magic number 0x{magic:08x}, expected '
        f'0x{expected_magic:08x} (uint8 {kind}); it is not an MNIST-format '
        f'IDX {kind} file, replace it with one.')
  rank = magic & 0xff
  header_size = 4 + 4 * rank
  if len(data) < header_size:
    raise errors.DataError(
        f'{path} is truncated inside its header; replace it with an intact '
        f'copy.')
  shape = tuple(int(d) for d in np.frombuffer(data, '>u4', rank, offset=4))
  size = int(np.prod(shape))
  if len(data) != header_size + size:
    raise errors.DataError(
        f'{path} has {len(data) - header_size} data bytes but its header '
        f'promises {size} (shape {shape}); the file is truncated or corrupt, '
        f'replace it with an intact copy.')
  return np.frombuffer(data, np.uint8, size, offset=header_size).reshape(shape)
