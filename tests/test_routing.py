"""Tests for capsjax.routing against a loop transcription of Procedure 1."""
import functools
import math

import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest

from capsjax import ops
from capsjax.routing import dynamic_routing

NUM_IN, NUM_OUT, DIM = 12, 5, 4


def loop_routing(u_hat, num_iters):
  """Procedure 1 written with explicit loops in float64 Python numbers."""
  num_in, num_out, dim = u_hat.shape
  b = [[0.0] * num_out for _ in range(num_in)]
  couplings = []
  for r in range(num_iters):
    c = []
    for i in range(num_in):
      m = max(b[i])
      e = [math.exp(b[i][j] - m) for j in range(num_out)]
      c.append([e[j] / sum(e) for j in range(num_out)])
    couplings.append(c)
    v = []
    for j in range(num_out):
      s = [sum(c[i][j] * float(u_hat[i, j, d]) for i in range(num_in))
           for d in range(dim)]
      n2 = sum(x * x for x in s)
      v.append([n2 / (1 + n2) * x / math.sqrt(n2 + ops.DEFAULT_EPS) for x in s])
    if r < num_iters - 1:
      for i in range(num_in):
        for j in range(num_out):
          b[i][j] += sum(float(u_hat[i, j, d]) * v[j][d] for d in range(dim))
  return np.array(v), np.array(couplings)


def random_u_hat(seed, shape=(NUM_IN, NUM_OUT, DIM)):
  return jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize('num_iters', [1, 2, 3, 5])
def test_matches_loop_reference(num_iters):
  u_hat = random_u_hat(0)
  v, c = dynamic_routing(u_hat, num_iters, return_couplings=True)
  v_ref, c_ref = loop_routing(np.asarray(u_hat), num_iters)
  assert v.shape == (NUM_OUT, DIM)
  assert c.shape == (num_iters, NUM_IN, NUM_OUT)
  np.testing.assert_allclose(v, v_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=1e-6)


def test_without_couplings_returns_v_only():
  u_hat = random_u_hat(1)
  v = dynamic_routing(u_hat, 3)
  v2, _ = dynamic_routing(u_hat, 3, return_couplings=True)
  np.testing.assert_array_equal(v, v2)


def test_softmax_is_over_parent_capsules():
  u_hat = random_u_hat(2)
  _, c = dynamic_routing(u_hat, 4, return_couplings=True)
  # Each input capsule distributes a unit of coupling over the parents ...
  np.testing.assert_allclose(c.sum(axis=2), 1.0, rtol=1e-6)
  # ... and not over the children: after the first update, columns do not.
  assert not np.allclose(c[1:].sum(axis=1), 1.0, atol=1e-3)


def test_logits_start_at_zero_so_first_couplings_are_uniform():
  _, c = dynamic_routing(random_u_hat(3), 3, return_couplings=True)
  np.testing.assert_allclose(c[0], 1.0 / NUM_OUT, rtol=1e-6)


def test_coupling_grows_towards_agreeing_parent():
  # Every input predicts the same vector for parent 0 and noise elsewhere:
  # routing by agreement must raise every input's coupling to parent 0.
  rng = np.random.default_rng(4)
  u_hat = 0.1 * rng.normal(size=(NUM_IN, NUM_OUT, DIM))
  u_hat[:, 0, :] = [1.0, 0.5, -0.5, 0.25]
  _, c = dynamic_routing(jnp.asarray(u_hat, jnp.float32), 3,
                         return_couplings=True)
  assert np.all(np.diff(c[:, :, 0], axis=0) > 0)
  assert np.all(c[-1, :, 0] > 1.0 / NUM_OUT)


def test_output_is_squashed_weighted_sum_of_last_couplings():
  u_hat = random_u_hat(5)
  v, c = dynamic_routing(u_hat, 3, return_couplings=True)
  expected = ops.squash(jnp.einsum('ij,ijd->jd', c[-1], u_hat))
  np.testing.assert_allclose(v, expected, rtol=1e-6, atol=1e-7)


def test_vmap_keeps_examples_independent():
  batch = random_u_hat(6, (4, NUM_IN, NUM_OUT, DIM))
  route = jax.vmap(functools.partial(dynamic_routing, num_iters=3))
  v = np.asarray(route(batch))
  for k in range(4):
    np.testing.assert_allclose(v[k], dynamic_routing(batch[k], 3),
                               rtol=1e-5, atol=1e-6)
  changed = batch.at[2].multiply(-3.0)
  v_changed = np.asarray(route(changed))
  assert not np.allclose(v_changed[2], v[2])
  for k in (0, 1, 3):
    np.testing.assert_array_equal(v_changed[k], v[k])


def test_vmap_batches_get_their_own_zero_logits():
  # If logits leaked across the batch, an example's couplings would depend on
  # its neighbours; with per-example zeros the first couplings are uniform.
  batch = random_u_hat(7, (3, NUM_IN, NUM_OUT, DIM))
  route = jax.vmap(functools.partial(dynamic_routing, num_iters=2,
                                     return_couplings=True))
  _, c = route(batch)
  np.testing.assert_allclose(c[:, 0], 1.0 / NUM_OUT, rtol=1e-6)
  for k in range(3):
    _, c_k = dynamic_routing(batch[k], 2, return_couplings=True)
    np.testing.assert_allclose(c[k], c_k, rtol=1e-5, atol=1e-7)


def test_jit_vmap_grad_compose():
  batch = random_u_hat(8, (3, NUM_IN, NUM_OUT, DIM))

  def loss(u_hat, num_iters):
    v = jax.vmap(dynamic_routing, in_axes=(0, None))(u_hat, num_iters)
    return jnp.sum(ops.safe_norm(v) ** 2)

  eager = jax.grad(loss)(batch, 3)
  jitted = jax.jit(jax.grad(loss), static_argnums=1)(batch, 3)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
  per_example = jax.jit(jax.vmap(jax.grad(
      lambda u: jnp.sum(ops.safe_norm(dynamic_routing(u, 3)) ** 2))))(batch)
  np.testing.assert_allclose(per_example, eager, rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(eager)) and np.any(eager != 0)


def test_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    u_hat = jax.random.normal(jax.random.key(9), (6, 3, 4), dtype=jnp.float64)
    jtu.check_grads(lambda u: dynamic_routing(u, 3), (u_hat,), order=1,
                    modes=['rev'])


def test_finite_gradient_at_zero_predictions():
  g = jax.grad(lambda u: ops.safe_norm(dynamic_routing(u, 3)).sum())(
      jnp.zeros((NUM_IN, NUM_OUT, DIM)))
  assert np.all(np.isfinite(g))


def test_stop_gradient_agreement_treats_couplings_as_constants():
  u_hat = random_u_hat(10)

  def objective(v):
    return jnp.sum(ops.safe_norm(v) ** 2)

  g_full = jax.grad(lambda u: objective(dynamic_routing(u, 3)))(u_hat)
  g_stop = jax.grad(lambda u: objective(
      dynamic_routing(u, 3, stop_gradient_agreement=True)))(u_hat)
  _, c = dynamic_routing(u_hat, 3, return_couplings=True)
  c_const = c[-1]
  g_const = jax.grad(lambda u: objective(
      ops.squash(jnp.einsum('ij,ijd->jd', c_const, u))))(u_hat)
  np.testing.assert_allclose(g_stop, g_const, rtol=1e-5, atol=1e-6)
  assert not np.allclose(g_full, g_stop, rtol=1e-3, atol=1e-5)
  # The forward values do not change.
  np.testing.assert_array_equal(
      dynamic_routing(u_hat, 3),
      dynamic_routing(u_hat, 3, stop_gradient_agreement=True))


def test_one_iteration_is_insensitive_to_stop_gradient():
  u_hat = random_u_hat(11)
  f = lambda u, sg: jnp.sum(dynamic_routing(u, 1, stop_gradient_agreement=sg))
  np.testing.assert_allclose(jax.grad(f)(u_hat, False), jax.grad(f)(u_hat, True))


@pytest.mark.parametrize('bad', [0, -1, 1.5, 3.0, '3', None, True])
def test_bad_num_iters_raises(bad):
  with pytest.raises(ValueError, match=r'num_iters must be a Python int >= 1'):
    dynamic_routing(random_u_hat(12), bad)


def test_traced_num_iters_raises_with_hint():
  with pytest.raises(ValueError, match='static'):
    jax.jit(dynamic_routing)(random_u_hat(13), 3)


def test_numpy_integer_num_iters_accepted():
  u_hat = random_u_hat(14)
  np.testing.assert_array_equal(dynamic_routing(u_hat, np.int64(2)),
                                dynamic_routing(u_hat, 2))


@pytest.mark.parametrize('shape', [(NUM_IN, NUM_OUT), (2, NUM_IN, NUM_OUT, DIM)])
def test_wrong_rank_raises(shape):
  with pytest.raises(ValueError, match=r'u_hat must have shape \[num_in, num_out, dim_out\]'):
    dynamic_routing(jnp.zeros(shape), 3)
