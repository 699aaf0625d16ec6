"""Efficient-CapsNet: parameter count, batch norm in training, short runs;
and the CapsNet with each vector routing, end to end on the embedded sample."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_script
from conftest import SMALL_RUN
from conftest import ROOT
from conftest import load_config
from conftest import small_config
from capsjax import errors
from capsjax import models
from capsjax import runs
from capsjax import train



visualize = load_script('visualize')


def check_couplings_figure(workdir, num_iters):
  """visualize.py draws the run's routing coefficients, one panel per pass."""
  run = runs.load(str(workdir))
  out = visualize.forward(run, run.dataset.test.images[:2],
                          return_couplings=True)
  assert out.couplings.shape[:2] == (2, num_iters)
  assert out.couplings.shape[3] == 10
  np.testing.assert_allclose(out.couplings.sum(-1), 1.0, rtol=1e-5)
  paths = visualize.visualize(str(workdir))
  assert os.path.getsize(paths['couplings']) > 0


# A shrunk Efficient-CapsNet: a few seconds a run.
SMALL_EFFICIENT = {
    'model.conv_channels': (4, 8, 8, 16),
    'model.primary_dim': 4,
    'model.digit_dim': 6,
    'model.decoder_hidden': (16, 32),
    **SMALL_RUN,
}


def count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_paper_parameter_count():
  config = load_config('efficient_capsnet')
  model = models.create_model(config.model, (28, 28, 1), 10)
  variables = jax.eval_shape(model.init, jax.random.key(0),
                             jnp.zeros((1, 28, 28, 1)))
  params = dict(variables['params'])
  decoder = params.pop('decoder')
  # The paper's and the authors' Keras summary's trainable parameters.
  assert count(params) == 161_824
  assert count(decoder) == 1_411_344  # 160 -> 512 -> 1024 -> 784
  # Keras's non-trainable moving means and variances: 2 x (32+64+64+128).
  assert count(variables['batch_stats']) == 576
  assert jax.tree.map(jnp.shape, params['digit_caps']) == {
      'kernel': (16, 10, 16, 8), 'log_prior': (16, 10)}
  assert params['primary_caps']['kernel'].shape == (9, 9, 1, 128)


def test_mnist_argument_is_the_paper_schedule():
  import runpy, os  # pylint: disable=g-import-not-at-top,multiple-imports
  get_config = runpy.run_path(
      os.path.join(ROOT, 'configs', 'efficient_capsnet.py'))['get_config']
  config = get_config('mnist')
  assert (config.dataset.source, config.dataset.name) == ('tfds', 'mnist')
  assert config.num_train_steps == 150 * 60_000 // 16
  assert config.lr_decay_steps == 60_000 // 16
  with pytest.raises(ValueError, match='unknown config argument'):
    get_config('nope')


def test_too_small_images_are_refused():
  config = load_config('efficient_capsnet')
  with pytest.raises(errors.InputShapeError, match='too small'):
    models.create_model(config.model, (16, 16, 1), 10)


@pytest.mark.slow  # trains or compiles a whole model
def test_batch_norm_trains_and_eval_uses_running_averages():
  config = load_config('efficient_capsnet', **SMALL_EFFICIENT)
  model = models.create_model(config.model, (28, 28, 1), 10)
  state = train.create_train_state(config, model, jax.random.key(0))
  assert isinstance(state, train.BatchStatsTrainState)
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.random((8, 28, 28, 1), np.float32)),
           'label': jnp.asarray(rng.integers(0, 10, 8), jnp.int32),
           'mask': jnp.ones(8)}
  before = state.batch_stats
  step = jax.jit(functools.partial(
      train.train_step, objective=models.spec(config.model).objective,
      loss_config=config.loss))
  new_state, metrics = step(state, batch, jax.random.key(1))
  assert np.isfinite(metrics['loss'])
  # Momentum 0.99: the running mean moved 1% of the way to the batch mean.
  mean0 = before['bn1']['mean']
  mean1 = new_state.batch_stats['bn1']['mean']
  assert not np.allclose(mean1, mean0)
  # Eval: each example's scores do not depend on the rest of its batch.
  apply = jax.jit(lambda v, x: model.apply(v, x, reconstruct=False).scores)
  variables = train.model_variables(new_state)
  np.testing.assert_allclose(apply(variables, batch['image'])[:1],
                             apply(variables, batch['image'][:1]),
                             rtol=1e-5, atol=1e-6)
  # eval_step too: its loss is that of the running-average model.
  sums = jax.jit(functools.partial(
      train.eval_step, objective=models.spec(config.model).objective,
      loss_config=config.loss))(new_state, batch)
  expected = jax.jit(lambda v: models.spec(config.model).objective(
      model.apply(v, batch['image']), batch, config.loss))(variables)
  np.testing.assert_allclose(sums['loss'], np.sum(expected['loss']),
                             rtol=1e-5)
  # Two micro-batches: the stats are the mean of the parts' updates.
  two = jax.jit(functools.partial(
      train.train_step, objective=models.spec(config.model).objective,
      loss_config=config.loss, num_microbatches=2))
  split_state, _ = two(state, batch, jax.random.key(1))
  assert split_state.batch_stats['bn1']['mean'].shape == mean1.shape
  assert not np.allclose(split_state.batch_stats['bn1']['mean'], mean0)


def test_capsnet_state_and_params_are_unchanged():
  config = small_config('quickstart')
  model = models.create_model(config.model, (28, 28, 1), 10)
  state = jax.eval_shape(functools.partial(train.create_train_state, config,
                                           model), jax.random.key(0))
  assert type(state) is not train.BatchStatsTrainState
  assert set(state.params['digit_caps']) == {'kernel'}
  assert train.model_variables(state).keys() == {'params'}


@pytest.mark.slow  # trains or compiles a whole model
def test_efficient_capsnet_end_to_end_and_reload(tmp_path):
  config = load_config('efficient_capsnet', **SMALL_EFFICIENT)
  state, summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['steps'] == 4
  assert np.isfinite(summary['test_loss'])
  assert 0.0 <= summary['test_accuracy'] <= 1.0
  assert summary['dataset'] == 'embedded:mnist_5k'
  run = runs.load(str(tmp_path))
  assert run.step == 4
  for a, b in zip(jax.tree.leaves(run.variables['batch_stats']),
                  jax.tree.leaves(state.batch_stats)):
    np.testing.assert_array_equal(a, b)
  scores = jax.jit(lambda v, x: run.model.apply(v, x, reconstruct=False))(
      run.variables, run.dataset.test.images[:2] / 255.0).scores
  assert scores.shape == (2, 10)
  check_couplings_figure(tmp_path, 1)


@pytest.mark.slow  # trains or compiles a whole model
@pytest.mark.parametrize('routing', ['self_attention', 'inverted_dot_product'])
def test_capsnet_with_vector_routing_end_to_end(tmp_path, routing):
  config = small_config('quickstart', **{'model.routing': routing,
                                         'model.conv_impl': 'xla'})
  _, summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['steps'] == 4
  assert np.isfinite(summary['test_loss'])
  run = runs.load(str(tmp_path))
  expected = {'self_attention': {'kernel', 'log_prior'},
              'inverted_dot_product': {'kernel', 'norm_scale',
                                       'norm_offset'}}[routing]
  assert set(run.params['digit_caps']) == expected
  check_couplings_figure(tmp_path, 1 if routing == 'self_attention' else 3)
