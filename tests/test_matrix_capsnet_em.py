"""Matrix capsules with EM routing: spread loss, model, smallNORB pipeline."""
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from capsjax import errors
from capsjax import layers
from capsjax import losses
from capsjax import models
from capsjax import train
from capsjax import validation
from capsjax.data import batching
from capsjax.data.batching import Preprocessing
from capsjax.data import sources
from capsjax.data.dataset import Dataset
from capsjax.data.dataset import Split
from conftest import load_config
from conftest import load_script


# The paper's A=B=C=D=32 network on 32x32x1 images with 5 classes, counted
# by hand: conv1 5*5*1*32+32 = 832; primary 1x1 (32*512+512) + (32*32+32)
# = 17,952; each ConvCaps 3*3*32 * 32 * 16 + 2*32 = 147,520; class caps
# 32*5*16 + 2*5 = 2,570. Total 316,394 (the paper: "310K").
PAPER_PARAMS = 832 + 17_952 + 2 * 147_520 + 2_570

TINY_EM = {
    'model.conv1_channels': 4, 'model.primary_types': 2,
    'model.convcaps1_types': 2, 'model.convcaps2_types': 2,
    'model.routing_iters': 2,
    'batch_size': 8, 'eval_batch_size': 8, 'num_train_steps': 3,
    'log_every_steps': 1, 'eval_every_steps': 3,
    'checkpoint_every_steps': 3, 'loss.spread_margin_steps': 2,
}


def _param_count(model, shape):
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jnp.zeros((1, *shape), jnp.float32))
  return sum(x.size for x in jax.tree.leaves(variables))


# ------------------------------------------------------------ spread loss --


def test_spread_loss_hand_values():
  a = jnp.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.25]])
  labels = jnp.array([0, 1])
  # Example 0 (t=0): max(0, 0.5 - 0.4)^2 + max(0, 0.5 - 0.8)^2 = 0.01.
  # Example 1 (t=1): max(0, 0.5 - 0.1)^2 + max(0, 0.5 - 0.05)^2
  #                  = 0.16 + 0.2025.
  np.testing.assert_allclose(losses.spread_loss(a, labels, 0.5),
                             [0.01, 0.3625], rtol=1e-6)
  # The target class itself never contributes (it would add m^2).
  np.testing.assert_allclose(losses.spread_loss(a[:1], labels[:1], 0.2), [0.0])


def test_spread_margin_schedule():
  m = [float(losses.spread_margin(s, start=0.2, end=0.9, ramp_steps=100))
       for s in (0, 25, 50, 100, 1000)]
  np.testing.assert_allclose(m, [0.2, 0.375, 0.55, 0.9, 0.9], rtol=1e-6)


def test_spread_objective_uses_the_step():
  cfg = types.SimpleNamespace(spread_margin_start=0.2, spread_margin_end=0.9,
                              spread_margin_steps=10)
  out = types.SimpleNamespace(scores=jnp.array([[0.5, 0.4]]))
  batch = {'label': jnp.array([0])}
  early = losses.spread_objective(out, batch, cfg, 0)
  late = losses.spread_objective(out, batch, cfg, 10)
  np.testing.assert_allclose(early['loss'], [0.1 ** 2], rtol=1e-5)
  np.testing.assert_allclose(late['loss'], [0.8 ** 2], rtol=1e-5)
  np.testing.assert_allclose(late['margin'], [0.9])
  assert models.spec(load_config('smallnorb_em').model).objective is (
      losses.spread_objective)


# ------------------------------------------------------------------ model --


def test_paper_parameter_count_and_shapes():
  config = load_config('smallnorb_em')
  model = models.create_model(config.model, (32, 32, 1), 5)
  assert _param_count(model, (32, 32, 1)) == PAPER_PARAMS == 316_394
  assert [tuple(g) for g in models.matrix_grids((32, 32, 1), 5, 2, 3)] == [
      (14, 14), (6, 6), (4, 4)]
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jnp.zeros((1, 32, 32, 1)))
  out = jax.eval_shape(
      lambda v, x: model.apply(v, x, return_couplings=True), variables,
      jnp.zeros((3, 32, 32, 1)))
  assert out.scores.shape == (3, 5)
  assert out.poses.shape == (3, 5, 4, 4)
  assert out.reconstructions is None
  assert out.couplings.shape == (3, 3, 4 * 4 * 32, 5)


@pytest.mark.slow  # trains or compiles a whole model
def test_tiny_forward_is_finite_and_per_example():
  config = load_config('smallnorb_em', **TINY_EM)
  model = models.create_model(config.model, (20, 20, 1), 5)
  images = jax.random.normal(jax.random.key(1), (3, 20, 20, 1))
  variables = jax.jit(model.init)(jax.random.key(0), images[:1])
  apply = jax.jit(model.apply, static_argnames='return_couplings')
  out = apply(variables, images, return_couplings=True)
  assert out.scores.shape == (3, 5)
  assert np.all(np.isfinite(out.scores)) and np.all(out.scores > 0)
  assert np.all((out.scores >= 0) & (out.scores <= 1))
  np.testing.assert_allclose(out.couplings.sum(-1), 1.0, atol=1e-5)
  # Changing example 0 leaves the others' scores unchanged.
  other = apply(variables, images.at[0].multiply(-2.0), return_couplings=True)
  np.testing.assert_array_equal(other.scores[1:], out.scores[1:])
  assert not np.allclose(other.scores[0], out.scores[0])
  # Gradients of the objective are finite, even for an all-zero image.
  batch = {'label': jnp.array([0, 1, 2]),
           'image': images.at[0].set(0.0)}

  def loss(params):
    outputs = model.apply({'params': params}, batch['image'])
    return jnp.mean(losses.spread_objective(outputs, batch, config.loss,
                                            0)['loss'])
  grads = jax.jit(jax.grad(loss))(variables['params'])
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_too_small_images_are_refused():
  with pytest.raises(errors.InputShapeError, match='too small'):
    models.create_model(load_config('smallnorb_em').model, (12, 12, 1), 5)


# ------------------------------------------------------- data and pipeline --


def _split(n=6, size=10, seed=0):
  rng = np.random.default_rng(seed)
  return Split(
      images=rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8),
      labels=np.arange(n, dtype=np.int32) % 3)


def test_train_crops_jitter_and_standardise_are_pure_and_in_range():
  split = _split()
  kw = dict(batch_size=4, seed=3, preprocessing=Preprocessing(
      crop_size=6, brightness_delta=0.1, contrast_delta=0.5, standardize=True))
  a = batching.train_batch(split, 5, **kw)
  b = batching.train_batch(split, 5, **kw)
  c = batching.train_batch(split, 6, **kw)
  np.testing.assert_array_equal(a['image'], b['image'])
  assert not np.array_equal(a['image'], c['image'])
  assert a['image'].shape == (4, 6, 6, 1) and a['image'].dtype == np.float32
  np.testing.assert_allclose(a['image'].mean(axis=(1, 2, 3)), 0, atol=1e-5)
  np.testing.assert_allclose(a['image'].std(axis=(1, 2, 3)), 1, atol=1e-4)
  # Without jitter and standardisation each image is some 6x6 window of
  # its source image.
  plain = batching.train_batch(split, 5, batch_size=4, seed=3,
                               preprocessing=Preprocessing(crop_size=6))
  unshifted = batching.train_batch(split, 5, batch_size=4, seed=3)
  offsets = set()
  for crop, full in zip(plain['image'], unshifted['image']):
    found = [(y, x) for y in range(5) for x in range(5)
             if np.array_equal(full[y:y + 6, x:x + 6], crop)]
    assert found
    offsets.add(found[0])
  assert len(offsets) > 1  # random, not always the same window
  # ... and drawn anew at every step: one image, eight steps, several crops.
  single = _split(n=1)
  crops = {batching.train_batch(single, s, batch_size=1, seed=3,
                                preprocessing=Preprocessing(crop_size=6))[
                                    'image'].tobytes()
           for s in range(8)}
  assert len(crops) > 1


def test_two_processes_concatenate_to_one_with_preprocessing():
  split = _split(n=8)
  kw = dict(batch_size=4, seed=1, preprocessing=Preprocessing(
      max_shift=1, crop_size=8, brightness_delta=0.2, contrast_delta=0.3,
      standardize=True))
  whole = batching.train_batch(split, 2, **kw)
  parts = [batching.train_batch(split, 2, process_index=p,
                                process_count=2, **kw) for p in (0, 1)]
  np.testing.assert_array_equal(
      np.concatenate([p['image'] for p in parts]), whole['image'])


def test_eval_center_crop_and_standardise():
  split = _split(n=3)
  batch = next(batching.eval_batches(
      split, 4, preprocessing=Preprocessing(crop_size=6, standardize=False)))
  assert batch['image'].shape == (4, 6, 6, 1)
  np.testing.assert_array_equal(batch['image'][:3],
                                split.images[:, 2:8, 2:8] / np.float32(255))
  std = next(batching.eval_batches(
      split, 4, preprocessing=Preprocessing(crop_size=6, standardize=True)))
  np.testing.assert_allclose(std['image'][:3].mean(axis=(1, 2, 3)), 0,
                             atol=1e-5)
  with pytest.raises(errors.DataError, match='crop_size'):
    next(batching.eval_batches(split, 4,
                               preprocessing=Preprocessing(crop_size=11)))


def test_smallnorb_mock_data_features_and_preprocessing():
  # tfds's smallnorb: 96x96x1 'image' and 'image2' (stereo), label
  # 'label_category' (5 classes), no 'label'. Mock data follows the spec.
  features = tfds.builder('smallnorb').info.features
  assert tuple(features['image'].shape) == (96, 96, 1)
  assert tuple(features['image2'].shape) == (96, 96, 1)
  assert features['label_category'].num_classes == 5
  assert 'label' not in features
  config = load_config('smallnorb_em')
  with tfds.testing.mock_data(num_examples=5):
    dataset = sources.load(config.dataset)
    config.dataset.read_size = 0
    raw = sources.load(config.dataset)
    config.dataset.label_feature = 'label'
    with pytest.raises(errors.DataError, match='label_feature'):
      sources.load(config.dataset)
  assert raw.image_shape == (96, 96, 1)
  assert dataset.image_shape == (48, 48, 1)  # resized when read
  assert dataset.num_classes == 5
  assert dataset.train.images.shape == (5, 48, 48, 1)


def test_crop_larger_than_images_is_a_config_error():
  config = load_config('smallnorb_em', **{'dataset.crop_size': 64})
  dataset = Dataset('x', _split(n=40, size=48), _split(n=4, size=48), 3)
  with pytest.raises(errors.ConfigError, match='crop_size'):
    validation.check_data(config, dataset)


# -------------------------------------------------------------- end to end --


@pytest.mark.slow  # trains or compiles a whole model
def test_smallnorb_em_config_trains_on_mock_data_and_draws_figures(tmp_path):
  config = load_config('smallnorb_em', **TINY_EM)
  with tfds.testing.mock_data(num_examples=16):
    state, summary = train.train_and_evaluate(config, str(tmp_path))
    paths = load_script('visualize').visualize(str(tmp_path),
                                               str(tmp_path / 'figures'))
  assert sorted(paths) == ['confusion_matrix', 'em_activations',
                           'em_assignments']
  for path in paths.values():
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert int(state.step) == 3
  assert summary['steps'] == 3
  assert np.isfinite(summary['test_loss'])
  assert 0.0 <= summary['test_accuracy'] <= 1.0
  assert summary['dataset'] == 'tfds:smallnorb'
  model = models.create_model(config.model, (32, 32, 1), 5)
  assert summary['num_params'] == _param_count(model, (32, 32, 1))
  with open(os.path.join(tmp_path, 'config.json')) as f:
    assert json.load(f)['model']['name'] == 'matrix_capsnet_em'


def test_class_caps_coordinate_addition():
  # With W = 0 the votes are the scaled coordinates alone, added to pose
  # entries [0, 3] (row) and [1, 3] (column); with equal activations every
  # position weighs the same, so the means are the mean coordinates.
  layer = layers.ClassCaps(num_classes=2, routing_iters=1)
  poses = jnp.ones((1, 3, 4, 2, 4, 4))
  acts = jnp.full((1, 3, 4, 2), 0.5)
  variables = layer.init(jax.random.key(0), poses, acts)
  variables = jax.tree.map(jnp.zeros_like, variables)
  out_poses, _ = layer.apply(variables, poses, acts)
  expected = np.zeros((1, 2, 4, 4), np.float32)
  expected[:, :, 0, 3] = np.mean((np.arange(3) + 0.5) / 3)
  expected[:, :, 1, 3] = np.mean((np.arange(4) + 0.5) / 4)
  np.testing.assert_allclose(out_poses, expected, atol=1e-6)
  # One position alone: its own coordinates (row 2 of 3, column 0 of 4).
  only = jnp.zeros((1, 3, 4, 2)).at[0, 2, 0].set(1.0)
  out_poses, _ = layer.apply(variables, poses, only)
  np.testing.assert_allclose(out_poses[0, :, 0, 3], 2.5 / 3, atol=1e-5)
  np.testing.assert_allclose(out_poses[0, :, 1, 3], 0.5 / 4, atol=1e-5)
