"""The in-memory data types: a `Dataset` of two `Split`s.

Every source (`data.sources`) returns a `Dataset`; batching (`data.batching`)
reads its splits. Everything here is numpy.
"""
import dataclasses
from typing import Optional

import numpy as np

from capsjax import errors


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """The examples of one split, in memory.

  `eq=False`: comparing arrays elementwise has no single truth value, so
  splits compare (and hash) by identity.

  Attributes:
    images: `[N, H, W, C] uint8` pixels, 0-255.
    labels: `[N] int32` class indices, or `[N, T] int32` for images of T
      digits (MultiMNIST, see `data.multimnist`).
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
    train_shift: 0, or (set by `data.multimnist`) the padding of the training
      digits: each training digit is shifted by up to this many pixels in
      place of `config.dataset.max_shift`.
    pairs: (set by `data.multimnist`) each training example overlays two
      digits of different classes (MultiMNIST).
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
