"""The vector routings after 2017: self-attention and inverted dot-product.

Each is checked against a plain-loop float64 transcription of its equations,
against numbers recorded from the authors' code (tests/fixtures/README.md
says how), per example under vmap, and for finite gradients at degenerate
inputs. The layer and registry checks are at the end.
"""
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capsjax import layers
from capsjax import ops
from capsjax import routing

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')
NUM_IN, NUM_OUT, DIM = 9, 4, 5


def random(seed, shape, scale=1.0):
  return scale * jax.random.normal(jax.random.key(seed), shape)


def softmax_row(row):
  m = max(row)
  e = [math.exp(x - m) for x in row]
  return [x / sum(e) for x in e]


def loop_self_attention(u_hat, b):
  """Mazzia et al. Eqs. 4-6 with explicit loops, in float64 Python numbers."""
  num_in, num_out, dim = u_hat.shape
  u = [[[float(u_hat[i, j, d]) for d in range(dim)] for j in range(num_out)]
       for i in range(num_in)]
  logits = [[0.0] * num_out for _ in range(num_in)]
  for j in range(num_out):
    for i in range(num_in):
      for k in range(num_in):  # The full agreement matrix A_j = U_j U_j^T.
        logits[i][j] += sum(u[i][j][d] * u[k][j][d] for d in range(dim))
      logits[i][j] /= math.sqrt(dim)
  c = [softmax_row(logits[i]) for i in range(num_in)]
  v = []
  for j in range(num_out):
    s = [sum((c[i][j] + float(b[i, j])) * u[i][j][d] for i in range(num_in))
         for d in range(dim)]
    n = math.sqrt(sum(x * x for x in s) + ops.DEFAULT_EPS)
    v.append([(1 - math.exp(-n)) * x / n for x in s])
  return np.array(v), np.array([c])


def loop_inverted(u_hat, num_iters, gamma, beta, eps=1e-5):
  """Tsai et al.'s Procedure 1 (vector poses) with explicit loops, float64."""
  num_in, num_out, dim = u_hat.shape
  u = [[[float(u_hat[i, j, d]) for d in range(dim)] for j in range(num_out)]
       for i in range(num_in)]
  c = [[1.0 / num_out] * num_out for _ in range(num_in)]
  couplings = []
  for t in range(num_iters):
    if t > 0:
      c = [softmax_row([sum(u[i][j][d] * v[j][d] for d in range(dim))
                        / math.sqrt(dim) for j in range(num_out)])
           for i in range(num_in)]
    couplings.append(c)
    v = []
    for j in range(num_out):
      s = [sum(c[i][j] * u[i][j][d] for i in range(num_in))
           for d in range(dim)]
      mean = sum(s) / dim
      var = sum((x - mean) ** 2 for x in s) / dim
      v.append([(x - mean) / math.sqrt(var + eps) * float(gamma[d])
                + float(beta[d]) for d, x in enumerate(s)])
  return np.array(v), np.array(couplings)


# ---------------------------------------------------------- self-attention --


def test_self_attention_matches_loop_reference():
  u_hat = random(0, (NUM_IN, NUM_OUT, DIM), 0.5)
  b = random(1, (NUM_IN, NUM_OUT), 0.1)
  v, c = routing.self_attention_routing(u_hat, log_prior=b,
                                        return_couplings=True)
  v_ref, c_ref = loop_self_attention(np.asarray(u_hat), np.asarray(b))
  assert v.shape == (NUM_OUT, DIM) and c.shape == (1, NUM_IN, NUM_OUT)
  np.testing.assert_allclose(v, v_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=1e-6)


def test_self_attention_ignores_num_iters():
  u_hat = random(2, (NUM_IN, NUM_OUT, DIM))
  b = jnp.zeros((NUM_IN, NUM_OUT))
  one = routing.self_attention_routing(u_hat, 1, log_prior=b)
  np.testing.assert_array_equal(
      one, routing.self_attention_routing(u_hat, 3, log_prior=b))
  with pytest.raises(ValueError, match='num_iters'):
    routing.self_attention_routing(u_hat, 0, log_prior=b)


def test_self_attention_matches_authors_tf_code():
  ref = np.load(os.path.join(FIXTURES, 'efficient_capsnet_fccaps.npz'))
  # Theirs: W [NOUT, NIN, DIN, D], b [NOUT, NIN, 1]; ours [NIN, NOUT, D].
  u_hat = jnp.einsum('bji,kjiz->bjkz', ref['x'], ref['W'])
  log_prior = ref['b'][..., 0].T
  v = jax.vmap(functools.partial(routing.self_attention_routing,
                                 log_prior=log_prior))(u_hat)
  np.testing.assert_allclose(v, ref['v'], rtol=1e-4, atol=2e-6)
  np.testing.assert_allclose(ops.efficient_squash(ref['s']), ref['squash'],
                             rtol=1e-5, atol=1e-7)


def test_efficient_squash_is_not_eq1_squash():
  # Guards the fixture comparison: the two squashes differ at these lengths.
  ref = np.load(os.path.join(FIXTURES, 'efficient_capsnet_fccaps.npz'))
  assert np.max(np.abs(ops.squash(ref['s']) - ref['squash'])) > 1e-2


# ------------------------------------------------------ inverted dot-product --


def norm_params(seed):
  return {'norm_scale': 1 + random(seed, (DIM,), 0.1),
          'norm_offset': random(seed + 1, (DIM,), 0.1)}


@pytest.mark.parametrize('num_iters', [1, 2, 3])
def test_inverted_matches_loop_reference(num_iters):
  u_hat = random(3, (NUM_IN, NUM_OUT, DIM))
  params = norm_params(4)
  v, c = routing.inverted_dot_product_routing(u_hat, num_iters,
                                              return_couplings=True, **params)
  v_ref, c_ref = loop_inverted(np.asarray(u_hat), num_iters,
                               np.asarray(params['norm_scale']),
                               np.asarray(params['norm_offset']))
  assert v.shape == (NUM_OUT, DIM)
  assert c.shape == (num_iters, NUM_IN, NUM_OUT)
  np.testing.assert_allclose(v, v_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('num_iters', [1, 2, 3])
def test_inverted_matches_authors_torch_code(num_iters):
  ref = np.load(os.path.join(FIXTURES, 'inverted_dot_product_capsulefc.npz'))
  # Theirs: W [NIN, DIN, NOUT, D]; ours u_hat [NIN, NOUT, D] per example.
  u_hat = np.einsum('bna,namd->bnmd', ref['x'], ref['W'])
  route = functools.partial(routing.inverted_dot_product_routing,
                            num_iters=num_iters, norm_scale=ref['gamma'],
                            norm_offset=ref['beta'])
  v = jax.vmap(route)(jnp.asarray(u_hat, jnp.float32))
  np.testing.assert_allclose(v, ref[f'v{num_iters}'], rtol=1e-4, atol=2e-5)


# ------------------------------------------------------- both of them --

ROUTES = {
    'self_attention': lambda u, n=1: routing.self_attention_routing(
        u, n, log_prior=random(7, u.shape[:2], 0.1)),
    'inverted_dot_product': lambda u, n=3: routing.inverted_dot_product_routing(
        u, n, **norm_params(8)),
}


@pytest.mark.parametrize('name', ROUTES)
def test_vmap_is_per_example(name):
  u_hats = random(9, (3, NUM_IN, NUM_OUT, DIM))
  batched = jax.vmap(ROUTES[name])(u_hats)
  for k in range(3):
    np.testing.assert_allclose(batched[k], ROUTES[name](u_hats[k]),
                               rtol=1e-6, atol=1e-6)
  # Changing one example leaves the others' outputs alone.
  changed = jax.vmap(ROUTES[name])(u_hats.at[1].multiply(-3.0))
  np.testing.assert_array_equal(changed[0], batched[0])
  np.testing.assert_array_equal(changed[2], batched[2])
  assert not np.allclose(changed[1], batched[1])


@pytest.mark.parametrize('name', ROUTES)
@pytest.mark.parametrize('degenerate', ['zeros', 'identical'])
def test_finite_gradients_at_degenerate_inputs(name, degenerate):
  if degenerate == 'zeros':
    u_hat = jnp.zeros((NUM_IN, NUM_OUT, DIM))
  else:  # Every input votes the same vector for every parent.
    u_hat = jnp.broadcast_to(jnp.arange(1.0, DIM + 1), (NUM_IN, NUM_OUT, DIM))
  grad = jax.grad(lambda u: jnp.sum(jnp.sin(ROUTES[name](u))))(u_hat)
  assert np.all(np.isfinite(grad))
  assert np.all(np.isfinite(ROUTES[name](u_hat)))


@pytest.mark.parametrize('name', ROUTES)
def test_jit_with_static_iterations(name):
  u_hat = random(10, (NUM_IN, NUM_OUT, DIM))
  fn = jax.jit(ROUTES[name], static_argnums=1)
  np.testing.assert_allclose(fn(u_hat, 2), ROUTES[name](u_hat, 2),
                             rtol=1e-6, atol=1e-6)


def test_inverted_couplings_start_uniform_and_sum_to_one():
  u_hat = random(11, (NUM_IN, NUM_OUT, DIM))
  _, c = routing.inverted_dot_product_routing(u_hat, 3, return_couplings=True,
                                              **norm_params(12))
  np.testing.assert_allclose(c[0], 1.0 / NUM_OUT)
  np.testing.assert_allclose(c.sum(-1), 1.0, rtol=1e-6)
  assert not np.allclose(c[1], c[0])


@pytest.mark.parametrize('name,kwargs', [
    ('self_attention', {'log_prior': jnp.zeros((NUM_IN + 1, NUM_OUT))}),
    ('inverted_dot_product', {'norm_scale': jnp.ones(DIM + 1),
                              'norm_offset': jnp.zeros(DIM)}),
])
def test_wrong_parameter_shapes_are_named(name, kwargs):
  with pytest.raises(ValueError, match='must have shape'):
    routing.get_routing(name)(jnp.zeros((NUM_IN, NUM_OUT, DIM)), 2, **kwargs)


# ----------------------------------------------------- registry and layer --


def test_registry_names():
  assert set(routing.ROUTINGS) >= {'dynamic', 'self_attention',
                                   'inverted_dot_product'}
  assert routing.routing_params('dynamic', 3, 2, 4) == {}
  with pytest.raises(ValueError, match='unknown routing'):
    routing.routing_params('nope', 3, 2, 4)


@pytest.mark.parametrize('name,expected', [
    ('dynamic', {'kernel': (6, 3, 4, 2)}),
    ('self_attention', {'kernel': (6, 3, 4, 2), 'log_prior': (6, 3)}),
    ('inverted_dot_product', {'kernel': (6, 3, 4, 2), 'norm_scale': (4,),
                              'norm_offset': (4,)}),
])
def test_capsules_layer_parameters_per_routing(name, expected):
  layer = layers.Capsules(num_capsules=3, dim=4, routing_iters=2,
                          routing=name)
  u = random(13, (2, 6, 2))
  params = layer.init(jax.random.key(0), u)['params']
  assert jax.tree.map(jnp.shape, params) == expected
  v, c = layer.apply({'params': params}, u, return_couplings=True)
  assert v.shape == (2, 3, 4)
  assert c.shape == (2, 1 if name == 'self_attention' else 2, 6, 3)
  # The layer routes with its own parameters: the same as calling the
  # function on u_hat with them.
  u_hat = jnp.einsum('ijdk,bik->bijd', params['kernel'], u)
  extra = {k: p for k, p in params.items() if k != 'kernel'}
  np.testing.assert_allclose(
      v, jax.vmap(lambda x: routing.get_routing(name)(x, 2, **extra))(u_hat),
      rtol=1e-5, atol=1e-6)
