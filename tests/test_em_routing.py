"""Tests of routing.em_routing (Procedure 1 of Hinton, Sabour & Frosst 2018)."""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capsjax import routing


def reference_em(votes, acts, beta_u, beta_a, lambdas, eps=routing.EM_EPS):
  """Procedure 1 as plain float64 Python loops over i, j, h."""
  num_in, num_out, dim = votes.shape
  r = [[1.0 / num_out] * num_out for _ in range(num_in)]
  history = []
  for t, lam in enumerate(lambdas):
    history.append([row[:] for row in r])
    mu = [[0.0] * dim for _ in range(num_out)]
    var = [[0.0] * dim for _ in range(num_out)]
    a = [0.0] * num_out
    for j in range(num_out):
      rs = [r[i][j] * acts[i] for i in range(num_in)]
      mass = sum(rs)
      cost = 0.0
      for h in range(dim):
        mu[j][h] = sum(rs[i] * votes[i][j][h] for i in range(num_in)) / (
            mass + eps)
        var[j][h] = sum(rs[i] * (votes[i][j][h] - mu[j][h]) ** 2
                        for i in range(num_in)) / (mass + eps) + eps
        cost += (beta_u[j] + math.log(math.sqrt(var[j][h]))) * mass
      a[j] = 1.0 / (1.0 + math.exp(-lam * (beta_a[j] - cost)))
    if t == len(lambdas) - 1:
      break
    for i in range(num_in):
      ap = []
      for j in range(num_out):
        p = 1.0
        for h in range(dim):
          p *= math.exp(-(votes[i][j][h] - mu[j][h]) ** 2 / (2 * var[j][h])
                        ) / math.sqrt(2 * math.pi * var[j][h])
        ap.append(a[j] * p)
      total = sum(ap)
      r[i] = [x / total for x in ap]
  return np.array(mu), np.array(a), np.array(history)


def _inputs(seed=0, num_in=7, num_out=3, dim=4):
  rng = np.random.default_rng(seed)
  votes = rng.normal(size=(num_in, num_out, dim))
  acts = rng.uniform(0.1, 1.0, size=num_in)
  beta_u = rng.normal(size=num_out) * 0.1
  beta_a = rng.normal(size=num_out)
  return votes, acts, beta_u, beta_a


@pytest.mark.parametrize('num_iters', [1, 2, 3])
def test_matches_python_loop_reference(num_iters):
  votes, acts, beta_u, beta_a = _inputs()
  lambdas = (0.5, 1.0, 1.5)[:num_iters]
  mu, a, r = routing.em_routing(
      jnp.asarray(votes, jnp.float32), jnp.asarray(acts, jnp.float32),
      jnp.asarray(beta_u, jnp.float32), jnp.asarray(beta_a, jnp.float32),
      num_iters, inverse_temperatures=lambdas, return_couplings=True)
  ref_mu, ref_a, ref_r = reference_em(votes, acts, beta_u, beta_a, lambdas)
  np.testing.assert_allclose(mu, ref_mu, atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(a, ref_a, atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(r, ref_r, atol=2e-5, rtol=1e-4)
  assert r.shape == (num_iters, 7, 3)


def test_default_schedule_and_scalar_betas():
  votes, acts, _, _ = _inputs(seed=1)
  lambdas = routing.em_inverse_temperatures(3)
  np.testing.assert_allclose(lambdas, [0.01 * (1 - 0.95 ** t)
                                       for t in (1, 2, 3)])
  mu, a = routing.em_routing(votes.astype(np.float32), acts.astype(np.float32),
                             0.2, -0.3, 3)
  ref_mu, ref_a, _ = reference_em(votes, acts, [0.2] * 3, [-0.3] * 3,
                                  lambdas)
  np.testing.assert_allclose(mu, ref_mu, atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(a, ref_a, atol=1e-6, rtol=1e-5)


def test_vmap_examples_are_independent():
  batch = [_inputs(seed=s) for s in range(3)]
  votes = jnp.asarray(np.stack([b[0] for b in batch]), jnp.float32)
  acts = jnp.asarray(np.stack([b[1] for b in batch]), jnp.float32)
  beta_u, beta_a = jnp.float32(0.1), jnp.float32(0.5)
  fn = jax.jit(jax.vmap(
      lambda v, a: routing.em_routing(v, a, beta_u, beta_a, 3,
                                      inverse_temperatures=(1., 2., 3.))))
  mu, a = fn(votes, acts)
  # Changing example 1 must leave examples 0 and 2 untouched.
  mu2, a2 = fn(votes.at[1].multiply(3.0), acts.at[1].set(0.5))
  for b in (0, 2):
    one_mu, one_a = routing.em_routing(votes[b], acts[b], beta_u, beta_a, 3,
                                       inverse_temperatures=(1., 2., 3.))
    np.testing.assert_allclose(mu[b], one_mu, atol=1e-5)
    np.testing.assert_allclose(a[b], one_a, atol=1e-6)
    np.testing.assert_array_equal(mu[b], mu2[b])
    np.testing.assert_array_equal(a[b], a2[b])
  assert not np.allclose(mu[1], mu2[1])


def _loss(votes, acts, beta_u, beta_a):
  mu, a, r = routing.em_routing(votes, acts, beta_u, beta_a, 3,
                                inverse_temperatures=(1., 2., 3.),
                                return_couplings=True)
  return jnp.sum(mu ** 2) + jnp.sum(a) + jnp.sum(r ** 2)


@pytest.mark.parametrize('case', ['identical_votes', 'zero_activations',
                                  'one_input', 'identical_and_zero'])
def test_finite_values_and_gradients_at_degenerate_inputs(case):
  votes, acts, beta_u, beta_a = (jnp.asarray(x, jnp.float32)
                                 for x in _inputs(seed=2))
  if case in ('identical_votes', 'identical_and_zero'):
    votes = jnp.broadcast_to(votes[:1], votes.shape)
  if case in ('zero_activations', 'identical_and_zero'):
    acts = jnp.zeros_like(acts)
  if case == 'one_input':
    votes, acts = votes[:1], acts[:1]
  mu, a, r = routing.em_routing(votes, acts, beta_u, beta_a, 3,
                                return_couplings=True)
  for x in (mu, a, r):
    assert np.all(np.isfinite(x)), case
  grads = jax.grad(_loss, argnums=(0, 1, 2, 3))(votes, acts, beta_u, beta_a)
  for g in grads:
    assert np.all(np.isfinite(g)), case
  if case == 'identical_votes':
    # Every output's mean is the shared vote.
    np.testing.assert_allclose(mu, votes[0], atol=1e-5)


def test_zero_activation_inputs_do_not_vote():
  votes, acts, beta_u, beta_a = (jnp.asarray(x, jnp.float32)
                                 for x in _inputs(seed=3))
  acts = acts.at[0].set(0.0)
  mu, a = routing.em_routing(votes, acts, beta_u, beta_a, 3)
  mu2, a2 = routing.em_routing(votes.at[0].set(100.0), acts, beta_u, beta_a,
                               3)
  np.testing.assert_allclose(mu, mu2, atol=1e-5)
  np.testing.assert_allclose(a, a2, atol=1e-6)


def test_bad_arguments():
  votes, acts, _, _ = _inputs()
  with pytest.raises(ValueError, match='inverse_temperatures'):
    routing.em_routing(votes, acts, 0., 0., 3, inverse_temperatures=(1., 2.))
  with pytest.raises(ValueError, match='activations'):
    routing.em_routing(votes, acts[:3], 0., 0., 3)
  with pytest.raises(ValueError, match='num_iters'):
    routing.em_routing(votes, acts, 0., 0., 0)


def test_matches_yl1993_pytorch_reimplementation_fixture():
  # Numbers recorded from yl-1993/Matrix-Capsules-EM-PyTorch; how is in the
  # fixture's 'how'. With all input activations 1 and their constant lambda
  # their routing is Procedure 1 as here (with other activations it is not:
  # it renormalises R a_i over outputs, cancelling a_i).
  path = os.path.join(os.path.dirname(__file__), 'fixtures',
                      'em_routing_yl1993.json')
  with open(path) as f:
    fixture = json.load(f)
  rng = np.random.default_rng(fixture['seed'])
  votes = rng.normal(size=(1, fixture['num_in'], fixture['num_out'], 16)
                     ).astype(np.float32)[0]
  beta_u = (0.1 * rng.normal(size=fixture['num_out'])).astype(np.float32)
  beta_a = rng.normal(size=fixture['num_out']).astype(np.float32)
  mu, a = routing.em_routing(
      votes, np.ones(fixture['num_in'], np.float32), beta_u, beta_a,
      fixture['iters'],
      inverse_temperatures=(fixture['inverse_temperature'],) * 3,
      eps=fixture['eps'])
  np.testing.assert_allclose(mu, fixture['poses'], atol=2e-6)
  np.testing.assert_allclose(a, fixture['activations'], atol=2e-7)
