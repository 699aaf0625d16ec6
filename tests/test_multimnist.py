"""MultiMNIST and the canvas (capsjax.data.multimnist): pairing, overlay
geometry, placement, the top-2 metric, two-digit CapsNet."""
import importlib.util
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import dataset_config
from conftest import ink_box
from conftest import load_config
from conftest import small_config
from capsjax import errors
from capsjax import losses
from capsjax import models
from capsjax import train
from capsjax import validation
from capsjax.data import augment
from capsjax.data import batching
from capsjax.data import multimnist
from capsjax.data import sources

EMBEDDED = {'dataset.source': 'embedded', 'dataset.name': 'mnist_5k'}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def digits():
  config = dataset_config(
      source='embedded', name='mnist_5k', holdout_per_class=100)
  return sources.load(config)


def _find_shift(padded_digit, shifted, max_shift):
  """The (dy, dx) within max_shift that turns padded_digit into shifted."""
  found = []
  for dy, dx in itertools.product(range(-max_shift, max_shift + 1), repeat=2):
    moved = augment.shift(padded_digit[None], np.array([[dy, dx]]))[0]
    if np.array_equal(moved, shifted):
      found.append((dy, dx))
  return found


def test_partners_are_of_another_class_and_cover_every_other_example():
  labels = np.array([0, 0, 1, 2, 2, 2], np.int32)
  rng = np.random.default_rng(0)
  bases = np.repeat(np.arange(6), 600)
  chosen = multimnist.partners(labels, bases, rng)
  assert np.all(labels[chosen] != labels[bases])
  for base in range(6):
    picked = chosen[bases == base]
    others = np.flatnonzero(labels != labels[base])
    assert set(picked.tolist()) == set(others.tolist())
    counts = np.bincount(picked, minlength=6)[others]
    # Uniform over the others: 600 draws, each within 40% of its share.
    assert counts.min() > 0.6 * 600 / len(others)


def test_overlay_geometry(digits):
  shift = 4
  # Four digits of each class (the sample is stored class by class).
  pick = np.concatenate([np.flatnonzero(digits.train.labels == k)[:4]
                         for k in range(10)])
  padded = augment.pad(digits.train.images[pick], shift)
  source_labels = digits.train.labels[pick]
  assert padded.shape[1:] == (36, 36, 1)
  merged, labels, pair = multimnist.overlay_pairs(
      padded, source_labels, np.arange(40), np.random.default_rng(3), shift)
  assert merged.shape == (40, 36, 36, 1) and pair.shape == (40, 2, 36, 36, 1)
  assert np.all(labels[:, 0] != labels[:, 1])
  np.testing.assert_array_equal(labels[:, 0], source_labels)
  # The overlay is the clipped sum of its two digits.
  total = pair[:, 0].astype(int) + pair[:, 1].astype(int)
  np.testing.assert_array_equal(merged, np.minimum(total, 255))
  assert total.max() > 255  # the test does exercise the clip
  for i in range(0, 40, 5):
    # The first digit is the base, shifted by at most 4 pixels, no ink lost.
    assert _find_shift(padded[i], pair[i, 0], shift)
    assert pair[i, 0].sum() == padded[i].sum()
    # The second is a digit of its label, also shifted by at most 4.
    same_class = np.flatnonzero(source_labels == labels[i, 1])
    assert any(_find_shift(padded[j], pair[i, 1], shift) for j in same_class)


def _multimnist(digits, shift=4, size=60):
  config = dataset_config(
      multimnist=True, multimnist_shift=shift, multimnist_test_size=size,
      canvas_size=0)
  return multimnist.compose(digits, config)


def test_train_batches_are_a_pure_function_of_seed_and_step(digits):
  data = _multimnist(digits)
  assert data.pairs and data.train_shift == 4
  kwargs = dict(batch_size=16, seed=5,
                preprocessing=batching.Preprocessing(max_shift=4, pairs=True))
  a = batching.train_batch(data.train, 7, **kwargs)
  b = batching.train_batch(data.train, 7, **kwargs)
  c = batching.train_batch(data.train, 8, **kwargs)
  for key in ('image', 'label', 'digits'):
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a['image'], c['image'])
  assert a['label'].shape == (16, 2) and a['digits'].shape == (16, 2, 36, 36, 1)
  assert a['image'].dtype == np.float32 and a['image'].max() <= 1
  # Two processes' rows concatenate to the single-process batch.
  halves = [batching.train_batch(data.train, 7, process_index=p,
                                 process_count=2, **kwargs)
            for p in range(2)]
  for key in ('image', 'label', 'digits'):
    np.testing.assert_array_equal(
        np.concatenate([h[key] for h in halves]), a[key])


def test_labels_distinct_over_many_batches(digits):
  data = _multimnist(digits)
  for step in range(20):
    batch = batching.train_batch(
        data.train, step, batch_size=64, seed=0,
        preprocessing=batching.Preprocessing(max_shift=4, pairs=True))
    assert np.all(batch['label'][:, 0] != batch['label'][:, 1])


def test_test_set_is_fixed_and_sized(digits):
  first, second = _multimnist(digits, size=60), _multimnist(digits, size=60)
  np.testing.assert_array_equal(first.test.images, second.test.images)
  np.testing.assert_array_equal(first.test.labels, second.test.labels)
  assert first.test.num_examples == 60
  # Bases in a seeded order, not the split's (the sample is sorted by class).
  assert len(set(first.test.labels[:, 0].tolist())) == 10
  assert np.all(first.test.labels[:, 0] != first.test.labels[:, 1])
  batches = list(batching.eval_batches(first.test, 32))
  assert [b['mask'].sum() for b in batches] == [32, 28]
  assert batches[1]['digits'].shape == (32, 2, 36, 36, 1)
  np.testing.assert_array_equal(batches[1]['label'][:28],
                                first.test.labels[32:])


# ------------------------------------------------------------------ canvas --


def test_canvas_places_each_test_digit_whole_within_six_pixels(digits):
  data = multimnist.compose(digits, dataset_config(
      multimnist=False, canvas_size=40))
  assert data.image_shape == (40, 40, 1) and data.train_shift == 6
  assert data.name == 'canvas40:embedded:mnist_5k'
  offsets = []
  for i in range(0, data.test.num_examples, 50):
    placed = data.test.images[i]
    found = [(dy, dx) for dy in range(-6, 7) for dx in range(-6, 7)
             if np.array_equal(placed, augment.shift(
                 augment.pad(digits.test.images[i:i + 1], 6),
                 np.array([[dy, dx]]))[0])]
    assert found, i
    offsets.append(found[0])
  assert len(set(offsets)) > 5  # placed at random, not all centred
  np.testing.assert_array_equal(data.test.labels, digits.test.labels)


def test_canvas_training_placement_is_pure_and_covers_the_canvas(digits):
  data = multimnist.compose(digits, dataset_config(
      multimnist=False, canvas_size=40))
  kwargs = dict(
      batch_size=64, seed=1,
      preprocessing=batching.Preprocessing(max_shift=data.train_shift))
  a = batching.train_batch(data.train, 3, **kwargs)
  np.testing.assert_array_equal(
      a['image'], batching.train_batch(data.train, 3, **kwargs)['image'])
  corners = np.array([ink_box(im) for im in a['image']])
  # Ink is never cut at the border: as much ink as the padded digit.
  assert a['image'].shape == (64, 40, 40, 1)
  assert corners[:, 0].min() <= 3 and corners[:, 1].max() >= 36


def test_bad_canvas_sizes(digits):
  with pytest.raises(errors.DataError, match='canvas_size'):
    multimnist.compose(digits, dataset_config(
        multimnist=False, canvas_size=39))
  config = load_config('mnist', **{'dataset.canvas_size': 40})
  with pytest.raises(errors.ConfigError, match='--config.dataset.max_shift=0'):
    validation.check_config(config)
  config = load_config('multimnist', **{'dataset.canvas_size': 40})
  with pytest.raises(errors.ConfigError, match='canvas_size=0'):
    validation.check_config(config)
  config = load_config('mnist', **{'model.num_targets': 2})
  with pytest.raises(errors.ConfigError, match='num_targets=1'):
    validation.check_config(config)


def test_top2_accuracy_against_a_hand_count():
  scores = jnp.array([
      [0.1, 0.9, 0.8, 0.0],   # top-2 {1, 2}, labels (2, 1): correct
      [0.7, 0.9, 0.1, 0.0],   # top-2 {0, 1}, labels (1, 3): wrong
      [0.2, 0.1, 0.3, 0.4],   # top-2 {2, 3}, labels (3, 2): correct
      [0.9, 0.1, 0.2, 0.3],   # top-2 {0, 3}, labels (0, 2): wrong
  ])
  labels = jnp.array([[2, 1], [1, 3], [3, 2], [0, 2]])
  np.testing.assert_array_equal(train.correct(scores, labels),
                                [True, False, True, False])
  # One label per image stays argmax.
  np.testing.assert_array_equal(
      train.correct(scores, jnp.array([1, 0, 3, 2])),
      [True, False, True, False])


def test_pair_reconstruction_loss_matches_digits_to_their_capsules():
  recon = jnp.stack([jnp.zeros((2, 2, 2, 1)), jnp.ones((2, 2, 2, 1))], 1)
  digits = jnp.stack([jnp.ones((2, 2, 2, 1)), jnp.zeros((2, 2, 2, 1))], 1)
  labels = jnp.array([[3, 5], [3, 5]])
  # Example 0 decoded in label order: both reconstructions are wrong (4 + 4);
  # example 1 decoded crosswise: each matches its digit exactly.
  decoded = jnp.array([[3, 5], [5, 3]])
  np.testing.assert_allclose(
      losses.pair_reconstruction_loss(recon, digits, decoded, labels), [8, 0])


@pytest.mark.slow  # trains or compiles a whole model
def test_capsnet_reconstructs_each_digit():
  config = small_config('multimnist')
  model = models.create_model(config.model, (36, 36, 1), 10)
  # Random images: on blank ones every capsule is zero and every
  # reconstruction the same.
  images = jax.random.uniform(jax.random.key(1), (3, 36, 36, 1))
  # Jitted: applied eagerly, each op would compile on its own.
  params = jax.jit(model.init)(jax.random.key(0), images)['params']
  apply = jax.jit(lambda x, y=None: model.apply({'params': params}, x, y))
  labels = jnp.array([[1, 2], [3, 4], [5, 6]])
  out = apply(images, labels)
  assert out.reconstructions.shape == (3, 2, 36, 36, 1)
  np.testing.assert_array_equal(out.decoded, labels)
  out = apply(images)
  top2 = np.argsort(-np.asarray(out.lengths), -1)[:, :2]
  np.testing.assert_array_equal(out.decoded, top2)
  # Each reconstruction comes from its own capsule: swapping labels swaps them.
  swapped = apply(images, labels[:, ::-1])
  np.testing.assert_allclose(
      swapped.reconstructions,
      apply(images, labels).reconstructions[:, ::-1], rtol=1e-6)


@pytest.mark.slow  # trains or compiles a whole model
def test_capsnet_end_to_end(tmp_path):
  config = small_config('multimnist', **EMBEDDED,
                        **{'dataset.multimnist_test_size': 40})
  _, summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['test_examples'] == 40
  assert 0 <= summary['test_accuracy'] <= 1
  assert summary['test_error_pct'] == pytest.approx(
      100 * (1 - summary['test_accuracy']))
  assert summary['dataset'] == 'multimnist:embedded:mnist_5k'
  assert summary['test_loss'] > 0
  # The paper's Figure 5 from the workdir.
  spec = importlib.util.spec_from_file_location(
      'visualize', os.path.join(ROOT, 'experiments', 'visualize.py'))
  visualize = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(visualize)
  paths = visualize.visualize(str(tmp_path), str(tmp_path / 'figures'))
  assert list(paths) == ['multimnist_reconstructions']
  assert os.path.getsize(paths['multimnist_reconstructions']) > 1000


def test_baseline_end_to_end(tmp_path):
  config = small_config('multimnist', **EMBEDDED, **{
      'dataset.multimnist_test_size': 40, 'model.name': 'baseline_cnn',
      'model.cnn_channels': (4, 4), 'model.cnn_hidden': (8,)})
  _, summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['test_examples'] == 40
  assert 0 <= summary['test_accuracy'] <= 1
  # conv 1->4, 4->4 (5x5), pooled twice 36 -> 9, fc 324->8, logits 8->10.
  assert summary['num_params'] == (25 * 4 + 4) + (25 * 16 + 4) + (
      9 * 9 * 4 * 8 + 8) + (8 * 10 + 10)
