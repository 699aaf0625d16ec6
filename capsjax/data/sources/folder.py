"""dataset.source='folder': your own PNG/JPEG images, one subfolder per class.

Pillow (the `train` extra) is imported only when the images are read (see
`data.images`).
"""
import os

import numpy as np

from capsjax import checks
from capsjax import errors
from capsjax.data import images
from capsjax.data.dataset import Dataset
from capsjax.data.dataset import Split

# The held-out images are drawn with this fixed seed, never the training
# seed, so every run on a folder is evaluated on the same images.
FOLDER_SPLIT_SEED = 0


def check_config(dataset_config) -> None:
  """Checks the folder source's fields without reading any image.

  Raises:
    errors.ConfigError: naming the first bad field and a value that works.
  """
  images.image_options(dataset_config)
  checks.number_in(checks.field(dataset_config, 'holdout_fraction'),
                   'dataset.holdout_fraction', 0, 1, 0.2, low_open=True,
                   high_open=True)
  directory = checks.field(dataset_config, 'directory')
  if not isinstance(directory, str) or not directory:
    raise errors.ConfigError(
        'config.dataset.directory is empty; set --config.dataset.directory=DIR '
        'to a folder with one subfolder of images per class.')


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
    files[name] = images.image_files(os.path.join(root, name))
    if not files[name]:
      raise errors.DataError(
          f'class folder {os.path.join(root, name)} has no PNG or JPEG '
          f'images; add images to it or remove it.')
  return files


def load(config) -> Dataset:
  """Your own images: one subfolder per class, optionally train/ and test/.

  Class names are the sorted subfolder names, labels their positions. With
  `directory/train/` and `directory/test/` those are the splits; otherwise a
  stratified `holdout_fraction` of every class (at least one image of each
  class stays in training) is held out, drawn with `FOLDER_SPLIT_SEED`.
  Every image goes through `images.read_image` and is kept as uint8: N images of
  H x W x C take N*H*W*C bytes.
  """
  check_config(config)
  directory = config.directory
  options = images.image_options(config)
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
                options: images.ImageOptions,
                first_with: dict[int, str]) -> Split:
  """The listed files as a `Split`.

  Records in `first_with` the first file of each channel count it reads.
  """
  arrays, split_labels = [], []
  for name in sorted(files):
    for path in files[name]:
      image = images.read_image(path, options)
      first_with.setdefault(image.shape[-1], path)
      arrays.append(image)
      split_labels.append(labels[name])
  if len(first_with) > 1:
    # Before np.stack, whose shape error would not name the files.
    _raise_mixed_channels(first_with)
  return Split(images=np.stack(arrays),
               labels=np.asarray(split_labels, np.int32))


def _raise_mixed_channels(first_with: dict[int, str]):
  raise errors.DataError(
      f'the images mix channel counts (grayscale {first_with[1]}, colour '
      f'{first_with[3]}); set --config.dataset.channels=1 (grayscale) or 3 '
      f'(RGB) to convert them all.')
