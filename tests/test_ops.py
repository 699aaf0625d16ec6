"""Tests for capsjax.ops against plain loops and the paper's Eq. 1."""
import math

import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest

from capsjax import ops


def loop_norm(vec, eps):
  return math.sqrt(sum(float(x) ** 2 for x in vec) + eps)


def loop_squash_eq1(vec):
  """Eq. 1 exactly, no epsilon: |s|^2 / (1 + |s|^2) * s / |s|."""
  n2 = sum(float(x) ** 2 for x in vec)
  return [n2 / (1.0 + n2) * float(x) / math.sqrt(n2) for x in vec]


def test_safe_norm_matches_loop():
  s = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)
  got = np.asarray(ops.safe_norm(s))
  assert got.shape == (4, 5)
  for a in range(4):
    for b in range(5):
      assert got[a, b] == pytest.approx(loop_norm(s[a, b], ops.DEFAULT_EPS), rel=1e-6)


def test_safe_norm_axis_and_keepdims():
  s = np.random.default_rng(1).normal(size=(4, 5, 3)).astype(np.float32)
  got = np.asarray(ops.safe_norm(s, axis=1, keepdims=True))
  assert got.shape == (4, 1, 3)
  for a in range(4):
    for c in range(3):
      assert got[a, 0, c] == pytest.approx(loop_norm(s[a, :, c], ops.DEFAULT_EPS), rel=1e-6)


def test_squash_matches_eq1():
  # Norms >= ~0.3 so that the eps under the square root is far below tolerance.
  rng = np.random.default_rng(2)
  s = rng.normal(size=(6, 8)) * rng.uniform(0.3, 5.0, size=(6, 1))
  got = np.asarray(ops.squash(jnp.asarray(s, jnp.float32)))
  for a in range(6):
    np.testing.assert_allclose(got[a], loop_squash_eq1(s[a]), rtol=1e-5, atol=1e-7)


def test_squash_along_other_axis():
  s = np.random.default_rng(3).normal(size=(8, 6)).astype(np.float32)
  np.testing.assert_allclose(ops.squash(s, axis=0), ops.squash(s.T).T, rtol=1e-6)


@pytest.mark.parametrize('scale', [0.0, 1e-3, 0.1, 1.0, 10.0, 100.0])
def test_squash_length_in_unit_interval_and_direction_kept(scale):
  s = scale * jax.random.normal(jax.random.key(4), (64, 16))
  v = ops.squash(s)
  lengths = np.linalg.norm(np.asarray(v), axis=-1)
  assert np.all(lengths >= 0.0) and np.all(lengths < 1.0)
  if scale > 0:
    # v = k * s with k > 0: same direction.
    cosine = np.sum(np.asarray(v) * np.asarray(s), -1) / (
        lengths * np.linalg.norm(np.asarray(s), axis=-1))
    np.testing.assert_allclose(cosine, 1.0, rtol=1e-5)
  # Long vectors approach length 1, short ones length 0: |v| = n^2 / (1 + n^2).
  n = np.linalg.norm(np.asarray(s), axis=-1)
  np.testing.assert_allclose(lengths, n**2 / (1 + n**2), rtol=1e-4, atol=1e-6)


def test_finite_gradients_at_zero_vector():
  zero = jnp.zeros((3, 8))
  g_norm = jax.grad(lambda s: ops.safe_norm(s).sum())(zero)
  jac_squash = jax.jacobian(lambda s: ops.squash(s))(jnp.zeros(8))
  assert np.all(np.isfinite(g_norm)) and np.all(np.isfinite(jac_squash))
  np.testing.assert_array_equal(g_norm, 0.0)
  np.testing.assert_array_equal(jac_squash, 0.0)
  assert np.all(np.asarray(ops.squash(zero)) == 0.0)


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    s = jax.random.normal(jax.random.key(5), (3, 8), dtype=jnp.float64)
    jtu.check_grads(lambda x: ops.squash(x), (s,), order=2)
    jtu.check_grads(lambda x: ops.safe_norm(x), (s,), order=2)
