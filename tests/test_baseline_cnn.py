"""The paper's baseline CNN: shapes, parameter counts, dropout, its losses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from conftest import small_config
from capsjax import errors
from capsjax import losses
from capsjax import models
from capsjax import train

TINY = {'model.cnn_channels': (4, 4), 'model.cnn_hidden': (8,)}


def _param_count(config, shape):
  model = models.create_model(config.model, shape, 10)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, *shape)))
  return sum(x.size for x in jax.tree.leaves(shapes))


def test_paper_parameter_count():
  # The paper: 35.4M. 5x5 convs 1->256->256->128 (SAME), fc 28*28*128->328
  # ->192->10.
  count = _param_count(load_config('baseline_mnist'), (28, 28, 1))
  assert count == (26 * 256 + (25 * 256 + 1) * 256 + (25 * 256 + 1) * 128
                   + (28 * 28 * 128 + 1) * 328 + 329 * 192 + 193 * 10)
  assert round(count / 1e6, 1) == 35.4


def test_multimnist_baseline_parameter_count():
  config = load_config('multimnist', **{'model.name': 'baseline_cnn'})
  count = _param_count(config, (36, 36, 1))
  # 5x5 convs 1->512->256, each pooled (36 -> 18 -> 9), fc 9*9*256->1024->10.
  assert count == (26 * 512 + (25 * 512 + 1) * 256 + (81 * 256 + 1) * 1024
                   + 1025 * 10)


def test_forward_shapes_and_dropout():
  config = small_config('baseline_mnist', **TINY)
  model = models.create_model(config.model, (28, 28, 1), 10)
  images = jax.random.uniform(jax.random.key(1), (5, 28, 28, 1))
  params = model.init(jax.random.key(0), images)['params']
  out = model.apply({'params': params}, images)
  assert out.scores.shape == (5, 10) and out.reconstructions is None
  # Deterministic without train; dropout (rate 0.5) changes it with train.
  np.testing.assert_array_equal(out.scores,
                                model.apply({'params': params}, images).scores)
  dropped = [model.apply({'params': params}, images, train=True,
                         rngs={'dropout': jax.random.key(k)}).scores
             for k in (0, 1)]
  assert not np.allclose(dropped[0], dropped[1])
  assert not np.allclose(dropped[0], out.scores)
  with pytest.raises(errors.InputShapeError):
    model.apply({'params': params}, jnp.zeros((1, 30, 30, 1)))


def test_cross_entropy_objective_against_hand_values():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
  out = losses.cross_entropy_objective(
      models.BaselineOutput(logits), {'label': jnp.array([0, 1])}, None)
  expected = [-np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1))),
              -np.log(np.exp(0.5) / (2 * np.exp(0.5) + np.exp(3)))]
  np.testing.assert_allclose(out['loss'], expected, rtol=1e-6)
  # Two labels: one sigmoid per class, both labels targets of 1.
  out = losses.cross_entropy_objective(
      models.BaselineOutput(logits), {'label': jnp.array([[0, 2], [1, 2]])},
      None)
  sig = 1 / (1 + np.exp(-np.asarray(logits)))
  targets = np.array([[1, 0, 1], [0, 1, 1]])
  hand = -(targets * np.log(sig) + (1 - targets) * np.log(1 - sig)).sum(-1)
  np.testing.assert_allclose(out['loss'], hand, rtol=1e-5)


@pytest.mark.slow  # trains or compiles a whole model
def test_mnist_end_to_end(tmp_path):
  config = small_config('baseline_mnist', **TINY, **{
      'dataset.source': 'embedded', 'dataset.name': 'mnist_5k'})
  _, summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary['test_examples'] == 1000
  assert 0 <= summary['test_accuracy'] <= 1
  assert summary['num_params'] == (26 * 4 + 101 * 4 + (28 * 28 * 4 + 1) * 8
                                   + 9 * 10)
  assert (tmp_path / 'summary.json').exists()
