"""Tests for capsjax.data.batching: batches, prefetching, errors."""
import threading

import ml_collections
import numpy as np
import pytest

import conftest
from conftest import assert_one_line_data_error
from capsjax import data
from capsjax import errors
from capsjax import validation
from capsjax.data import batching
from capsjax.data import sources
from capsjax.data.batching import Preprocessing
from capsjax.data.dataset import Split
from capsjax.errors import DataError


def labelled_split(num_examples, height=4, width=4):
  """A split whose label is the example's index and whose pixels encode it."""
  labels = np.arange(num_examples, dtype=np.int32)
  images = np.broadcast_to(labels[:, None, None, None] % 256,
                           (num_examples, height, width, 1)).astype(np.uint8)
  return Split(images=images, labels=labels)


# ---------------------------------------------------------------- batching --


def test_train_batch_is_a_pure_function_of_seed_and_step():
  split = labelled_split(50)
  kwargs = dict(batch_size=8, seed=3,
                preprocessing=Preprocessing(max_shift=1))
  first = batching.train_batch(split, 7, **kwargs)
  again = batching.train_batch(split, 7, **kwargs)
  np.testing.assert_array_equal(first['image'], again['image'])
  np.testing.assert_array_equal(first['label'], again['label'])
  next_step = batching.train_batch(split, 8, **kwargs)
  assert not np.array_equal(first['label'], next_step['label'])
  other_seed = batching.train_batch(split, 7, **{**kwargs, 'seed': 4})
  assert not np.array_equal(first['label'], other_seed['label'])


@pytest.mark.parametrize('num_examples,batch_size', [(12, 4), (10, 3)])
def test_each_epoch_visits_examples_once(num_examples, batch_size):
  split = labelled_split(num_examples)
  steps_per_epoch = num_examples // batch_size
  epochs = []
  for epoch in range(3):
    batches = [
        batching.train_batch(split, epoch * steps_per_epoch + i,
                             batch_size=batch_size, seed=0)
        for i in range(steps_per_epoch)]
    labels = np.concatenate([b['label'] for b in batches])
    images = np.concatenate([b['image'] for b in batches])
    # Each image still belongs to its label.
    np.testing.assert_array_equal(np.round(images[:, 0, 0, 0] * 255), labels)
    # Without a remainder an epoch is a permutation of the whole split; with
    # one, `steps_per_epoch * batch_size` distinct examples.
    assert len(set(labels.tolist())) == steps_per_epoch * batch_size
    if num_examples % batch_size == 0:
      np.testing.assert_array_equal(np.sort(labels), split.labels)
    epochs.append(labels)
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch


def test_shifts_stay_within_max_shift_and_cover_the_range():
  size, centre, max_shift = 9, 4, 2
  images = np.zeros((1, size, size, 1), np.uint8)
  images[0, centre, centre, 0] = 255
  split = Split(images=images.repeat(64, 0),
                labels=np.zeros(64, np.int32))
  offsets = set()
  for step in range(20):
    batch = batching.train_batch(
        split, step, batch_size=64, seed=0,
        preprocessing=Preprocessing(max_shift=max_shift))
    for image in batch['image']:
      ys, xs = np.nonzero(image[..., 0])
      assert len(ys) == 1  # the pixel is moved, never lost at this size
      offsets.add((int(ys[0]) - centre, int(xs[0]) - centre))
  grid = range(-max_shift, max_shift + 1)
  assert offsets == {(dy, dx) for dy in grid for dx in grid}


def test_train_batch_without_shift_is_the_scaled_pixels():
  split = labelled_split(20)
  batch = batching.train_batch(split, 0, batch_size=5, seed=0)
  np.testing.assert_array_equal(batch['image'],
                                split.images[batch['label']] / np.float32(255))


@pytest.mark.parametrize('kwargs,fragment', [
    (dict(batch_size=21), 'lower --config.batch_size'),
    (dict(batch_size=0), 'batch_size must be an int >= 1'),
    (dict(seed=-1), 'seed must be an int >= 0'),
    (dict(preprocessing=Preprocessing(max_shift=4)), 'below 4'),
])
def test_train_batch_errors(kwargs, fragment):
  split = labelled_split(20)
  arguments = {**dict(batch_size=4, seed=0), **kwargs}
  with pytest.raises(DataError) as excinfo:
    batching.train_batch(split, 0, **arguments)
  assert_one_line_data_error(excinfo, fragment)
  with pytest.raises(DataError):  # raised at the call, not at the first next()
    batching.train_batches(split, **arguments)


@pytest.mark.parametrize('num_examples,batch_size', [(10, 4), (12, 4), (3, 5)])
def test_eval_batches_cover_every_example_once_with_mask(num_examples,
                                                         batch_size):
  split = labelled_split(num_examples)
  batches = list(batching.eval_batches(split, batch_size))
  assert len(batches) == -(-num_examples // batch_size)
  for batch in batches:
    assert batch['image'].shape == (batch_size, 4, 4, 1)
    assert batch['image'].dtype == np.float32
    assert batch['label'].dtype == np.int32
    assert batch['mask'].dtype == np.float32
    assert batch['label'].shape == batch['mask'].shape == (batch_size,)
  mask = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  images = np.concatenate([b['image'] for b in batches])
  num_padding = len(mask) - num_examples
  np.testing.assert_array_equal(mask, [1] * num_examples + [0] * num_padding)
  np.testing.assert_array_equal(labels[:num_examples], split.labels)
  np.testing.assert_array_equal(images[:num_examples],
                                split.images / np.float32(255))
  assert not images[num_examples:].any() and not labels[num_examples:].any()


def assert_same_batches(batches, expected):
  for batch, want in zip(batches, expected, strict=True):
    np.testing.assert_array_equal(batch['image'], want['image'])
    np.testing.assert_array_equal(batch['label'], want['label'])


@pytest.mark.parametrize('prefetch', [0, 1, 3])
def test_train_batches_resume_at_start_step(prefetch):
  split = labelled_split(30)
  kwargs = dict(batch_size=4, seed=5,
                preprocessing=Preprocessing(max_shift=1))
  start = 11  # mid-epoch: 7 steps per epoch
  iterator = batching.train_batches(split, start_step=start,
                                    prefetch=prefetch, **kwargs)
  got = [next(iterator) for _ in range(9)]
  iterator.close()
  assert_same_batches(got, [batching.train_batch(split, start + i,
                                                 **kwargs)
                            for i in range(9)])


def prefetch_threads():
  return [t for t in threading.enumerate()
          if t.name.startswith('capsjax-train-batches')]


def test_prefetching_thread_stops_when_the_consumer_stops():
  split = labelled_split(30)
  assert not prefetch_threads()
  iterator = batching.train_batches(
      split, batch_size=4, seed=0, preprocessing=Preprocessing(max_shift=1),
      prefetch=2)
  assert not prefetch_threads()  # nothing started before the first batch
  next(iterator)
  assert prefetch_threads()
  iterator.close()
  assert not prefetch_threads()
  iterator = batching.train_batches(
      split, batch_size=4, seed=0, preprocessing=Preprocessing(max_shift=1),
      prefetch=2)
  next(iterator)
  del iterator  # dropped without close()
  assert not prefetch_threads()


def test_prefetching_forwards_errors(monkeypatch):
  split = labelled_split(30)
  train_batch = batching.train_batch

  def failing_from_step_3(split, step, **kwargs):
    if step >= 3:
      raise RuntimeError(f'step {step} failed')
    return train_batch(split, step, **kwargs)

  monkeypatch.setattr(batching, 'train_batch', failing_from_step_3)
  iterator = batching.train_batches(split, batch_size=4, seed=0, prefetch=2)
  # Steps 0-2 arrive intact, in order; the error of step 3 comes after them.
  assert_same_batches([next(iterator) for _ in range(3)],
                      [train_batch(split, step, batch_size=4, seed=0)
                       for step in range(3)])
  with pytest.raises(RuntimeError, match='step 3 failed'):
    next(iterator)
  assert not prefetch_threads()


def test_shifts_differ_between_the_steps_of_one_epoch():
  # Identical images, so each batch shows only its shifts.
  images = np.zeros((1, 9, 9, 1), np.uint8)
  images[0, 4, 4, 0] = 255
  split = Split(images=images.repeat(32, 0),
                labels=np.zeros(32, np.int32))
  batches = [batching.train_batch(
      split, step, batch_size=8, seed=0,
      preprocessing=Preprocessing(max_shift=2))['image']
             for step in range(4)]  # the 4 steps of epoch 0
  for i in range(4):
    for j in range(i):
      assert not np.array_equal(batches[i], batches[j]), (i, j)


@pytest.fixture(scope='module')
def digits():
  return sources.load(conftest.dataset_config(
      source='embedded', name='mnist_5k', holdout_per_class=100))


def test_random_flip_mirrors_about_half_the_batch(digits):
  kwargs = dict(batch_size=200, seed=4)
  plain = batching.train_batch(digits.train, 9, **kwargs,
                               preprocessing=Preprocessing(max_shift=2))
  flipping = Preprocessing(max_shift=2, random_flip=True)
  flipped = batching.train_batch(digits.train, 9, **kwargs,
                                 preprocessing=flipping)
  np.testing.assert_array_equal(plain['label'], flipped['label'])
  same = np.all(plain['image'] == flipped['image'], axis=(1, 2, 3))
  mirrored = np.all(plain['image'][:, :, ::-1] == flipped['image'],
                    axis=(1, 2, 3))
  assert np.all(same | mirrored)
  assert 70 < np.sum(mirrored & ~same) < 130
  again = batching.train_batch(digits.train, 9, **kwargs,
                               preprocessing=flipping)
  np.testing.assert_array_equal(again['image'], flipped['image'])


def test_random_flip_must_be_a_bool():
  values = conftest.load_config('mnist').to_dict()
  values['dataset']['random_flip'] = 'yes'  # e.g. a hand-written config
  config = ml_collections.ConfigDict(values)
  with pytest.raises(errors.ConfigError, match='random_flip=False'):
    validation.check_config(config)


def test_preprocessing_from_config_reads_each_field_once_checked():
  config = conftest.dataset_config(max_shift=1, crop_size=3, standardize=True,
                                   brightness_delta=0.25, random_flip=True)
  preprocessing = Preprocessing.from_config(config)
  assert preprocessing == Preprocessing(
      max_shift=1, random_flip=True, crop_size=3, brightness_delta=0.25,
      standardize=True)
  assert preprocessing.output_shape((5, 6, 2)) == (3, 3, 2)
  for field, value in (('max_shift', -1), ('crop_size', 1.5),
                       ('contrast_delta', 1.0), ('standardize', 1)):
    with pytest.raises(errors.ConfigError) as excinfo:
      Preprocessing.from_config(conftest.dataset_config(**{field: value}))
    assert_one_line_data_error(excinfo, f'--config.dataset.{field}=')
  with pytest.raises(DataError, match='max_shift'):
    Preprocessing(max_shift=-1)


def test_preprocessing_follows_a_composed_dataset(digits):
  canvas = sources.load(conftest.dataset_config(
      source='embedded', name='mnist_5k', holdout_per_class=1,
      canvas_size=32, max_shift=0))
  preprocessing = Preprocessing.from_config(
      conftest.dataset_config(max_shift=0), canvas)
  assert preprocessing.max_shift == 2 and not preprocessing.pairs
  with pytest.raises(errors.ConfigError) as excinfo:
    Preprocessing.from_config(conftest.dataset_config(crop_size=29), digits)
  assert_one_line_data_error(excinfo, '--config.dataset.crop_size to at '
                             'most 28')


def test_eval_batches_ignore_the_training_shift():
  split = labelled_split(6)
  # A shift as large as the images would be refused in training.
  shifted = Preprocessing(max_shift=4, random_flip=True)
  batch = next(batching.eval_batches(split, 6, preprocessing=shifted))
  np.testing.assert_array_equal(batch['image'], next(
      batching.eval_batches(split, 6))['image'])


# random_flip mirrors training images left to right: column x becomes column
# W - 1 - x, rows stay in place (never upside down), and a MultiMNIST image's
# two digits (its reconstruction targets) are mirrored with it.
# Not square, so a flip along the wrong axis cannot keep the shape by chance
# of symmetry; random pixels, so no image equals any flip of itself.
FLIP_HEIGHT, FLIP_WIDTH = 6, 9


def _flip_split(num=40, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(1, 256, (num, FLIP_HEIGHT, FLIP_WIDTH, 1)).astype(np.uint8)
  return data.Split(images, (np.arange(num) % 10).astype(np.int32))


def _mirrored(image):
  """The image mirrored left to right, by its definition."""
  out = np.zeros_like(image)
  for y in range(image.shape[-3]):
    for x in range(image.shape[-2]):
      out[..., y, x, :] = image[..., y, FLIP_WIDTH - 1 - x, :]
  return out


@pytest.mark.parametrize('max_shift', [0, 2])
def test_random_flip_mirrors_left_to_right(max_shift):
  plain = data.train_batch(
      _flip_split(), 5, batch_size=32, seed=3,
      preprocessing=data.Preprocessing(max_shift=max_shift))
  flipped = data.train_batch(
      _flip_split(), 5, batch_size=32, seed=3,
      preprocessing=data.Preprocessing(max_shift=max_shift, random_flip=True))
  np.testing.assert_array_equal(flipped['label'], plain['label'])
  mirrored = 0
  for got, image in zip(flipped['image'], plain['image']):
    if np.array_equal(got, image):
      continue
    np.testing.assert_array_equal(got, _mirrored(image))
    mirrored += 1
  assert 0 < mirrored < 32


def test_random_flip_mirrors_both_digits_with_their_overlay():
  # MultiMNIST: the overlay and both digits it is made of are mirrored
  # together, so each reconstruction target still matches its image.
  split = _flip_split(seed=1)
  plain = data.train_batch(
      split, 4, batch_size=32, seed=2,
      preprocessing=data.Preprocessing(max_shift=1, pairs=True))
  flipped = data.train_batch(
      split, 4, batch_size=32, seed=2,
      preprocessing=data.Preprocessing(max_shift=1, pairs=True,
                                       random_flip=True))
  np.testing.assert_array_equal(flipped['label'], plain['label'])
  mirrored = 0
  for b in range(32):
    if np.array_equal(flipped['image'][b], plain['image'][b]):
      np.testing.assert_array_equal(flipped['digits'][b], plain['digits'][b])
      continue
    mirrored += 1
    np.testing.assert_array_equal(flipped['image'][b],
                                  _mirrored(plain['image'][b]))
    for t in range(2):
      np.testing.assert_array_equal(flipped['digits'][b, t],
                                    _mirrored(plain['digits'][b, t]))
  assert 0 < mirrored < 32
