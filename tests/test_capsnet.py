"""Tests for capsjax.models.capsnet (small widths, the paper's geometry)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capsjax import errors
from capsjax import layers
from capsjax.models import capsnet

SMALL = dict(conv1_channels=8, primary_types=2, primary_dim=4, digit_dim=6,
             decoder_hidden=(16, 32))


def _model(**kwargs):
  return capsnet.CapsNet(**{**SMALL, **kwargs})


def _init(model, batch=2):
  images = jax.random.uniform(jax.random.key(0), (batch, *model.input_shape))
  # Jitted: initialized eagerly, each op would compile on its own.
  return images, jax.jit(model.init)(jax.random.key(1), images)


def _apply(model, params, images, **kwargs):
  return jax.jit(functools.partial(model.apply, **kwargs))(params, images)


@pytest.mark.parametrize('input_shape,grid', [((28, 28, 1), 6),
                                              ((32, 32, 3), 8),
                                              ((36, 36, 1), 10)])
@pytest.mark.slow  # trains or compiles a whole model
def test_output_shapes(input_shape, grid):
  model = _model(input_shape=input_shape, num_classes=7, routing_iters=2)
  images, params = _init(model)
  out = _apply(model, params, images, return_couplings=True)
  num_primary = grid * grid * 2
  assert params['params']['digit_caps']['kernel'].shape == (num_primary, 7, 6,
                                                            4)
  assert out.capsules.shape == (2, 7, 6)
  assert out.lengths.shape == (2, 7)
  assert out.reconstructions.shape == (2, *input_shape)
  assert out.couplings.shape == (2, 2, num_primary, 7)
  np.testing.assert_allclose(out.couplings.sum(-1), 1.0, rtol=1e-5)
  assert float(out.lengths.max()) < 1.0
  assert _apply(model, params, images).couplings is None
  assert _apply(model, params, images,
                reconstruct=False).reconstructions is None


def test_paper_model_parameter_count():
  model = capsnet.CapsNet()
  params = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 28, 28, 1)))
  sizes = {k: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v))
           for k, v in params['params'].items()}
  # Conv1 9*9*256 + 256, PrimaryCaps 9*9*256*256 + 256, DigitCaps 1152*10*16*8,
  # decoder 160*512+512 + 512*1024+1024 + 1024*784+784.
  assert sizes == {'conv1': 20992, 'primary_caps': 5308672,
                   'digit_caps': 1474560, 'decoder': 1411344}


@pytest.mark.slow  # trains or compiles a whole model
def test_reconstruction_masked_by_label_or_by_prediction():
  model = _model()
  images, params = _init(model, batch=4)
  out = model.apply(params, images)
  predicted = jnp.argmax(out.lengths, -1)
  decoder = layers.Decoder((28, 28, 1), SMALL['decoder_hidden'])
  decode = lambda select: decoder.apply(
      {'params': params['params']['decoder']}, out.capsules, select)
  # No labels (test time): the decoder sees the longest capsule.
  np.testing.assert_allclose(out.reconstructions, decode(predicted), rtol=1e-6)
  # Labels (training): it sees the true label's capsule, whatever is predicted.
  labels = (predicted + 1) % 10
  by_label = model.apply(params, images, labels).reconstructions
  np.testing.assert_allclose(by_label, decode(labels), rtol=1e-6)
  assert not np.allclose(by_label, out.reconstructions)
  # The classification itself does not depend on the labels.
  np.testing.assert_array_equal(model.apply(params, images, labels).lengths,
                                out.lengths)


def test_input_too_small_shows_the_arithmetic():
  model = _model(input_shape=(16, 28, 1))
  with pytest.raises(errors.InputShapeError) as e:
    model.init(jax.random.key(0), jnp.zeros((1, 16, 28, 1)))
  message = str(e.value)
  assert '\n' not in message
  assert '16-9+1=8' in message and '(8-9)//2+1=0' in message
  assert 'at least 17x17' in message
  # The message names the config fields that fix it.
  assert '--config.model.conv1_kernel' in message
  assert '--config.model.primary_kernel' in message


def test_images_of_the_wrong_shape():
  model = _model()
  images, params = _init(model)
  with pytest.raises(errors.InputShapeError, match=r'\(2, 32, 32, 1\).*'
                     r'\[B, 28, 28, 1\].*input_shape=\(32, 32, 1\)'):
    model.apply(params, jnp.zeros((2, 32, 32, 1)))
  with pytest.raises(errors.InputShapeError, match='images have shape'):
    model.apply(params, jnp.zeros((28, 28, 1)))


def test_jit_and_grad():
  model = _model()
  images, params = _init(model)
  labels = jnp.array([3, 5])

  @jax.jit
  def loss(params):
    out = model.apply(params, images, labels)
    return jnp.sum(out.lengths) + jnp.sum(out.reconstructions)

  grads = jax.grad(loss)(params)
  norms = jax.tree.map(lambda g: float(jnp.linalg.norm(g)), grads)
  assert all(np.isfinite(n) and n > 0 for n in jax.tree.leaves(norms)), norms


def test_scores_are_the_capsule_lengths():
  lengths = jnp.arange(6.0).reshape(2, 3)
  out = capsnet.CapsNetOutput(jnp.zeros((2, 3, 4)), lengths, None, None)
  assert out.scores is lengths


def test_scores_are_the_logits_of_a_linear_readout():
  lengths, logits = jnp.arange(6.0).reshape(2, 3), -jnp.arange(6.0).reshape(2, 3)
  out = capsnet.CapsNetOutput(jnp.zeros((2, 3, 4)), lengths, None, None,
                              logits=logits)
  assert out.scores is logits


@pytest.mark.slow  # compiles a whole model
def test_linear_readout_is_one_shared_layer_and_picks_the_capsule_decoded():
  # Tsai et al. (2020): one Linear(D, 1) for every class capsule.
  model = _model(readout='linear', routing='inverted_dot_product',
                 routing_iters=2)
  images, params = _init(model, batch=4)
  readout = params['params']['readout']
  assert readout['kernel'].shape == (SMALL['digit_dim'], 1)
  # A bias far from zero, so the logits are not just the kernel's projection.
  readout['bias'] = jnp.array([0.5])
  readout['kernel'] = jax.random.normal(jax.random.key(2),
                                        readout['kernel'].shape)
  out = _apply(model, params, images)
  want = np.einsum('bkd,d->bk', out.capsules, readout['kernel'][:, 0]) + 0.5
  np.testing.assert_allclose(out.logits, want, rtol=1e-5, atol=1e-6)
  assert out.scores is out.logits
  # At test time the decoder sees the highest-scoring class's capsule.
  decoder = layers.Decoder((28, 28, 1), SMALL['decoder_hidden'])
  decoded = decoder.apply({'params': params['params']['decoder']},
                          out.capsules, jnp.argmax(out.logits, -1))
  np.testing.assert_allclose(out.reconstructions, decoded, rtol=1e-5,
                             atol=1e-6)


def test_capsule_grid_is_the_primary_grid():
  assert _model(input_shape=(32, 32, 3)).capsule_grid() == (8, 8)
  assert capsnet.primary_grid((36, 28, 1), 9, 9, 2) == (10, 6)


def test_chunked_memory_needs_dynamic_routing_once():
  fields = {'routing_memory': 'chunked', 'routing': 'self_attention'}
  with pytest.raises(errors.ConfigError, match="needs routing='dynamic'"):
    capsnet.check_fields(fields)
  capsnet.check_fields({**fields, 'routing': 'dynamic'})
  # The layer applies the same rule to library callers.
  u = jnp.zeros((2, 6, 4))
  layer = layers.Capsules(3, 4, 2, routing='self_attention',
                          routing_memory='chunked')
  with pytest.raises(errors.ConfigError, match="needs routing='dynamic'"):
    layer.init(jax.random.key(0), u)
