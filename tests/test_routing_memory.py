"""routing_memory='chunked' equals plain dynamic routing, in less memory."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capsjax import layers
from capsjax import models
from capsjax import routing
from conftest import small_config


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def operands(num_in=37, num_out=5, dim=4, dim_in=3, batch=6, seed=0):
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.normal(size=(num_in, num_out, dim, dim_in)))
  u = jnp.asarray(rng.normal(size=(batch, num_in, dim_in)))
  return w, u


def plain(w, u, num_iters, return_couplings=False):
  """u_hat in full, then `routing.dynamic_routing` per example."""
  route = functools.partial(routing.dynamic_routing, num_iters=num_iters,
                            return_couplings=return_couplings)
  return jax.vmap(route)(jnp.swapaxes(layers.predictions(w, u), 1, 2))


# 8 does not divide 37 (a padded last chunk), 37 is one chunk, 64 > num_in.
@pytest.mark.parametrize('chunk_size, num_iters', [
    (1, 3), (8, 1), (8, 3), (37, 3), (64, 2)])
def test_chunked_equals_plain_values_and_gradients(chunk_size, num_iters):
  w, u = operands()
  chunked = functools.partial(routing.dynamic_routing_chunked,
                              num_iters=num_iters, chunk_size=chunk_size)
  want = plain(w, u, num_iters)
  assert want.dtype == jnp.float64
  np.testing.assert_allclose(chunked(w, u), want, rtol=1e-12, atol=1e-14)

  # A loss that weighs every output component differently.
  weights = jnp.asarray(np.random.default_rng(1).normal(size=want.shape))
  def loss(fn):
    return lambda w, u: jnp.sum(jnp.sin(fn(w, u)) * weights)
  grads = jax.grad(loss(chunked), argnums=(0, 1))(w, u)
  want_grads = jax.grad(loss(functools.partial(plain, num_iters=num_iters)),
                        argnums=(0, 1))(w, u)
  for got, expected in zip(grads, want_grads):
    assert np.abs(expected).max() > 1e-3  # The gradient is not trivially 0.
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)


def test_chunked_couplings_equal_plain():
  w, u = operands()
  v, c = routing.dynamic_routing_chunked(w, u, 3, chunk_size=8,
                                         return_couplings=True)
  v_ref, c_ref = plain(w, u, 3, return_couplings=True)
  assert c.shape == c_ref.shape == (6, 3, 37, 5)
  np.testing.assert_allclose(v, v_ref, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(c, c_ref, rtol=1e-12, atol=1e-14)


def test_capsules_layer_memory_modes_agree():
  _, u = operands()
  full = layers.Capsules(5, 4, routing_iters=3)
  variables = full.init(jax.random.key(0), u)
  chunked = layers.Capsules(5, 4, routing_iters=3, routing_memory='chunked',
                            routing_chunk=10)
  np.testing.assert_allclose(chunked.apply(variables, u),
                             full.apply(variables, u), rtol=1e-12, atol=1e-14)
  with pytest.raises(ValueError, match='routing_memory'):
    layers.Capsules(5, 4, 3, routing_memory='low').apply(variables, u)


@pytest.mark.slow  # trains or compiles a whole model
def test_capsnet_training_gradients_agree():
  """The whole network's loss gradient, both memory modes, float64."""
  config = small_config('mnist')
  images = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1),
                              jnp.float64)
  labels = jnp.asarray([0, 3, 9])
  grads = {}
  for memory in ('full', 'chunked'):
    config.model.routing_memory = memory
    config.model.routing_chunk = 7  # Does not divide 2 * 6 * 6 = 72.
    model = models.create_model(config.model, (28, 28, 1), 10)
    params = jax.jit(model.init)(jax.random.key(1), images)['params']
    params = jax.tree.map(lambda p: p.astype(jnp.float64), params)

    def loss(params, model=model):
      out = model.apply({'params': params}, images, labels)
      return jnp.sum(out.lengths ** 2) + jnp.sum(out.reconstructions)
    grads[memory] = jax.jit(jax.grad(loss))(params)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-10,
                                 atol=1e-13), grads['chunked'], grads['full'])


def compiled_temp_bytes(fn, *args):
  return jax.jit(fn).lower(*args).compile().memory_analysis(
      ).temp_size_in_bytes


def test_chunked_training_scratch_is_much_smaller():
  """XLA's own count of the scratch memory of value-and-gradient."""
  with jax.enable_x64(False):
    w, u = operands(num_in=1024, num_out=20, dim=16, dim_in=8, batch=128)
    w, u = w.astype(jnp.float32), u.astype(jnp.float32)
    def grad_of(fn):
      return jax.grad(lambda w, u: jnp.sum(fn(w, u) ** 2), argnums=(0, 1))
    full = compiled_temp_bytes(grad_of(lambda w, u: plain(w, u, 3)), w, u)
    chunked = compiled_temp_bytes(grad_of(functools.partial(
        routing.dynamic_routing_chunked, num_iters=3, chunk_size=64)), w, u)
  u_hat_bytes = 1024 * 128 * 20 * 16 * 4  # 168 MB.
  # The full path's backward holds u_hat's gradient whole (its forward
  # fuses u_hat into the routing's passes instead of storing it).
  assert full >= u_hat_bytes
  assert chunked < full / 2
