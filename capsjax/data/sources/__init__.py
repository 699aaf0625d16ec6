"""Dataset sources -> a `Dataset` of two in-memory `Split`s.

`SOURCES` maps `config.dataset.source` to a loader `load(dataset_config) ->
Dataset`; a new source is one module here plus one entry:

  'tfds'      any TensorFlow Datasets image classification dataset
  'idx'       a directory of the four MNIST-format IDX files (optionally gzip)
  'embedded'  the 5,000-digit MNIST sample shipped in capsjax/data (offline)
  'folder'    your own PNG/JPEG images, one subfolder per class

Everything is numpy; only the tfds loader imports TensorFlow and only the
folder loader Pillow, each when it is used.
"""
from capsjax import checks
from capsjax import errors
from capsjax.data import multimnist
from capsjax.data.dataset import Dataset
from capsjax.data.sources import embedded
from capsjax.data.sources import folder
from capsjax.data.sources import idx
from capsjax.data.sources import tfds

# config.dataset.source -> loader(dataset_config) -> Dataset.
SOURCES = {
    'tfds': tfds.load,
    'idx': idx.load,
    'embedded': embedded.load,
    'folder': folder.load,
}

# config.dataset.source -> a check of its fields that reads no data.
_CONFIG_CHECKS = {
    'folder': folder.check_config,
    'tfds': tfds.check_config,
}


def _source(dataset_config) -> str:
  source = checks.field(dataset_config, 'source')
  if source not in SOURCES:
    raise errors.DataError(
        f'unknown dataset source {source!r}; set --config.dataset.source to '
        f'one of {", ".join(SOURCES)}.')
  return source


def check_config(dataset_config) -> None:
  """Checks the source's fields of `config.dataset` without reading data.

  Raises:
    errors.DataError: an unknown source.
    errors.ConfigError: a bad field of the source, with a value that works.
  """
  source = _source(dataset_config)
  if source in _CONFIG_CHECKS:
    _CONFIG_CHECKS[source](dataset_config)


def load(dataset_config) -> Dataset:
  """Loads the dataset described by `config.dataset` into memory.

  Args:
    dataset_config: an `ml_collections.ConfigDict` (only its attributes are
      read) with `source` (a name in `SOURCES`) and that source's fields:
      tfds: `name`, `data_dir` ('' = tfds default), `train_split`,
      `test_split`, `image_feature`, `label_feature`, `read_size`; idx:
      `directory`; embedded: `name` ('mnist_5k') and `holdout_per_class`;
      folder: `directory`, `image_size`, `channels`, `resize` and
      `holdout_fraction`. `multimnist` or `canvas_size` turn any of them into
      a generated set (see `multimnist.compose`).

  Returns:
    The `Dataset`, both splits as numpy arrays.

  Raises:
    errors.DataError: the config or the data is unusable; the message says
      how to fix it.
  """
  source = _source(dataset_config)
  return multimnist.compose(SOURCES[source](dataset_config), dataset_config)
