"""Tests for capsjax.data.dataset: the Split and Dataset types."""
import numpy as np
import pytest

from conftest import assert_one_line_data_error
from capsjax.data.dataset import Dataset
from capsjax.data.dataset import Split
from capsjax.errors import DataError


def split(num=4, size=3, num_classes=2):
  return Split(images=np.zeros((num, size, size, 1), np.uint8),
               labels=np.arange(num, dtype=np.int32) % num_classes)


def test_split_rejects_wrong_dtypes():
  with pytest.raises(DataError) as excinfo:
    Split(images=np.zeros((2, 3, 3, 1), np.float32),
          labels=np.zeros(2, np.int32))
  assert_one_line_data_error(excinfo, 'uint8', 'float32')
  with pytest.raises(DataError) as excinfo:
    Split(images=np.zeros((2, 3, 3, 1), np.uint8),
          labels=np.zeros(2, np.int64))
  assert_one_line_data_error(excinfo, 'int32', '.astype(np.int32)')


def test_split_needs_one_label_per_image_and_digits_with_pairs():
  with pytest.raises(DataError) as excinfo:
    Split(images=np.zeros((3, 3, 3, 1), np.uint8),
          labels=np.zeros(2, np.int32))
  assert_one_line_data_error(excinfo, '3 images but 2 labels')
  with pytest.raises(DataError) as excinfo:
    Split(images=np.zeros((2, 3, 3, 1), np.uint8),
          labels=np.zeros((2, 2), np.int32))
  assert_one_line_data_error(excinfo, 'Split.digits must be [2, 2, 3, 3, 1]')


def test_dataset_checks_shapes_labels_and_names():
  assert Dataset('x', split(), split(), 2).image_shape == (3, 3, 1)
  with pytest.raises(DataError) as excinfo:
    Dataset('x', split(), split(size=4), 2)
  assert_one_line_data_error(excinfo, 'same dataset')
  with pytest.raises(DataError) as excinfo:
    Dataset('x', split(num_classes=3), split(), 2)
  assert_one_line_data_error(excinfo, 'outside [0, 2)')
  with pytest.raises(DataError) as excinfo:
    Dataset('x', split(), split(), 2, class_names=('a',))
  assert_one_line_data_error(excinfo, '1 class names for 2 classes')
