"""Tests for capsjax.input_pipeline: batches, shifts, prefetching, errors."""
import threading

import numpy as np
import pytest

from conftest import assert_one_line_data_error
from capsjax import datasets
from capsjax import input_pipeline
from capsjax.errors import DataError



def labelled_split(num_examples, height=4, width=4):
  """A split whose label is the example's index and whose pixels encode it."""
  labels = np.arange(num_examples, dtype=np.int32)
  images = np.broadcast_to(labels[:, None, None, None] % 256,
                           (num_examples, height, width, 1)).astype(np.uint8)
  return datasets.Split(images=images, labels=labels)


# ---------------------------------------------------------------- batching --


def test_train_batch_is_a_pure_function_of_seed_and_step():
  split = labelled_split(50)
  kwargs = dict(batch_size=8, seed=3, max_shift=1)
  first = input_pipeline.train_batch(split, 7, **kwargs)
  again = input_pipeline.train_batch(split, 7, **kwargs)
  np.testing.assert_array_equal(first['image'], again['image'])
  np.testing.assert_array_equal(first['label'], again['label'])
  next_step = input_pipeline.train_batch(split, 8, **kwargs)
  assert not np.array_equal(first['label'], next_step['label'])
  other_seed = input_pipeline.train_batch(split, 7, **{**kwargs, 'seed': 4})
  assert not np.array_equal(first['label'], other_seed['label'])


@pytest.mark.parametrize('num_examples,batch_size', [(12, 4), (10, 3)])
def test_each_epoch_visits_examples_once(num_examples, batch_size):
  split = labelled_split(num_examples)
  steps_per_epoch = num_examples // batch_size
  epochs = []
  for epoch in range(3):
    batches = [
        input_pipeline.train_batch(split, epoch * steps_per_epoch + i,
                                   batch_size=batch_size, seed=0, max_shift=0)
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


def loop_shift(images, shifts):
  out = np.zeros_like(images)
  batch, height, width, _ = images.shape
  for b in range(batch):
    dy, dx = shifts[b]
    for y in range(height):
      for x in range(width):
        if 0 <= y - dy < height and 0 <= x - dx < width:
          out[b, y, x] = images[b, y - dy, x - dx]
  return out


def test_shift_images_matches_loop_reference():
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, (40, 5, 7, 2)).astype(np.uint8)
  shifts = rng.integers(-9, 10, (40, 2))  # includes shifts past the border
  shifts[:3] = [[0, 0], [5, 0], [0, -7]]
  out = input_pipeline.shift_images(images, shifts)
  assert out.dtype == np.uint8 and out.shape == images.shape
  np.testing.assert_array_equal(out, loop_shift(images, shifts))
  np.testing.assert_array_equal(out[0], images[0])
  assert not out[1].any() and not out[2].any()  # shifted fully out: all zero


def test_shift_images_fills_vacated_pixels_with_zero():
  images = np.ones((1, 3, 4, 1), np.uint8)
  out = input_pipeline.shift_images(images, np.array([[1, -2]]))
  np.testing.assert_array_equal(out[0, ..., 0], [[0, 0, 0, 0],
                                                 [1, 1, 0, 0],
                                                 [1, 1, 0, 0]])


def test_shifts_stay_within_max_shift_and_cover_the_range():
  size, centre, max_shift = 9, 4, 2
  images = np.zeros((1, size, size, 1), np.uint8)
  images[0, centre, centre, 0] = 255
  split = datasets.Split(images=images.repeat(64, 0),
                               labels=np.zeros(64, np.int32))
  offsets = set()
  for step in range(20):
    batch = input_pipeline.train_batch(split, step, batch_size=64, seed=0,
                                       max_shift=max_shift)
    for image in batch['image']:
      ys, xs = np.nonzero(image[..., 0])
      assert len(ys) == 1  # the pixel is moved, never lost at this size
      offsets.add((int(ys[0]) - centre, int(xs[0]) - centre))
  grid = range(-max_shift, max_shift + 1)
  assert offsets == {(dy, dx) for dy in grid for dx in grid}


def test_train_batch_without_shift_is_the_scaled_pixels():
  split = labelled_split(20)
  batch = input_pipeline.train_batch(split, 0, batch_size=5, seed=0,
                                     max_shift=0)
  np.testing.assert_array_equal(batch['image'],
                                split.images[batch['label']] / np.float32(255))


@pytest.mark.parametrize('kwargs,fragment', [
    (dict(batch_size=21), 'lower --config.batch_size'),
    (dict(batch_size=0), 'batch_size must be an int >= 1'),
    (dict(seed=-1), 'seed must be an int >= 0'),
    (dict(max_shift=4), 'below 4'),
])
def test_train_batch_errors(kwargs, fragment):
  split = labelled_split(20)
  arguments = {**dict(batch_size=4, seed=0, max_shift=0), **kwargs}
  with pytest.raises(DataError) as excinfo:
    input_pipeline.train_batch(split, 0, **arguments)
  assert_one_line_data_error(excinfo, fragment)
  with pytest.raises(DataError):  # raised at the call, not at the first next()
    input_pipeline.train_batches(split, **arguments)


@pytest.mark.parametrize('num_examples,batch_size', [(10, 4), (12, 4), (3, 5)])
def test_eval_batches_cover_every_example_once_with_mask(num_examples,
                                                         batch_size):
  split = labelled_split(num_examples)
  batches = list(input_pipeline.eval_batches(split, batch_size))
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
  kwargs = dict(batch_size=4, seed=5, max_shift=1)
  start = 11  # mid-epoch: 7 steps per epoch
  iterator = input_pipeline.train_batches(split, start_step=start,
                                          prefetch=prefetch, **kwargs)
  got = [next(iterator) for _ in range(9)]
  iterator.close()
  assert_same_batches(got, [input_pipeline.train_batch(split, start + i,
                                                       **kwargs)
                            for i in range(9)])


def prefetch_threads():
  return [t for t in threading.enumerate()
          if t.name.startswith('capsjax-train-batches')]


def test_prefetching_thread_stops_when_the_consumer_stops():
  split = labelled_split(30)
  assert not prefetch_threads()
  iterator = input_pipeline.train_batches(split, batch_size=4, seed=0,
                                          max_shift=1, prefetch=2)
  assert not prefetch_threads()  # nothing started before the first batch
  next(iterator)
  assert prefetch_threads()
  iterator.close()
  assert not prefetch_threads()
  iterator = input_pipeline.train_batches(split, batch_size=4, seed=0,
                                          max_shift=1, prefetch=2)
  next(iterator)
  del iterator  # dropped without close()
  assert not prefetch_threads()


def test_prefetching_forwards_errors(monkeypatch):
  split = labelled_split(30)
  train_batch = input_pipeline.train_batch

  def failing_from_step_3(split, step, **kwargs):
    if step >= 3:
      raise RuntimeError(f'step {step} failed')
    return train_batch(split, step, **kwargs)

  monkeypatch.setattr(input_pipeline, 'train_batch', failing_from_step_3)
  iterator = input_pipeline.train_batches(split, batch_size=4, seed=0,
                                          max_shift=0, prefetch=2)
  # Steps 0-2 arrive intact, in order; the error of step 3 comes after them.
  assert_same_batches([next(iterator) for _ in range(3)],
                      [train_batch(split, step, batch_size=4, seed=0,
                                   max_shift=0) for step in range(3)])
  with pytest.raises(RuntimeError, match='step 3 failed'):
    next(iterator)
  assert not prefetch_threads()


def test_shifts_differ_between_the_steps_of_one_epoch():
  # Identical images, so each batch shows only its shifts.
  images = np.zeros((1, 9, 9, 1), np.uint8)
  images[0, 4, 4, 0] = 255
  split = datasets.Split(images=images.repeat(32, 0),
                         labels=np.zeros(32, np.int32))
  batches = [input_pipeline.train_batch(split, step, batch_size=8, seed=0,
                                        max_shift=2)['image']
             for step in range(4)]  # the 4 steps of epoch 0
  for i in range(4):
    for j in range(i):
      assert not np.array_equal(batches[i], batches[j]), (i, j)
