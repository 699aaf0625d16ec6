"""Tests for capsjax.layers: the fast PrimaryCaps convolution and the layers."""
import functools

import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest

from capsjax import layers
from capsjax import ops
from capsjax import routing

# (input shape, kernel size, stride): the paper's PrimaryCaps geometry shrunk in
# channels, odd sizes where the stride leaves rows unused, stride 1 and 3.
CONV_CASES = [
    ((2, 20, 20, 6), 9, 2),
    ((3, 17, 15, 5), 3, 2),
    ((2, 12, 13, 4), 5, 3),
    ((2, 9, 9, 3), 9, 2),
    ((2, 10, 11, 3), 4, 1),
]


def _inputs(shape, kernel_size, out_channels=7, dtype=jnp.float32):
  kx, kw = jax.random.split(jax.random.key(sum(shape) + kernel_size))
  x = jax.random.normal(kx, shape, dtype)
  w = jax.random.normal(kw, (kernel_size, kernel_size, shape[-1],
                             out_channels), dtype)
  return x, w


@pytest.mark.parametrize('shape,kernel_size,stride', CONV_CASES)
def test_sliced_conv_equals_xla_conv_forward_and_gradient(shape, kernel_size,
                                                          stride):
  with jax.enable_x64(True):
    x, w = _inputs(shape, kernel_size, dtype=jnp.float64)
    np.testing.assert_allclose(layers.sliced_conv(x, w, stride),
                               layers.xla_conv(x, w, stride), rtol=1e-12,
                               atol=1e-10)
    # A non-linear loss gives a cotangent that differs at every output.
    def grads(conv):
      loss = lambda x, w: jnp.sum(jnp.sin(conv(x, w, stride)))
      return jax.grad(loss, argnums=(0, 1))(x, w)

    (dx, dw), (dx_ref, dw_ref) = grads(layers.sliced_conv), grads(
        layers.xla_conv)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-10, atol=1e-10)


def test_sliced_conv_custom_vjp_matches_numerical_gradient():
  with jax.enable_x64(True):
    x, w = _inputs((2, 11, 10, 3), 4, out_channels=2, dtype=jnp.float64)
    jtu.check_grads(functools.partial(layers.sliced_conv, stride=2), (x, w),
                    order=1, modes=['rev'])


def test_sliced_conv_paper_primarycaps_size():
  # The real PrimaryCaps: 256 channels in, 32 x 8 out, on a 20x20 Conv1 map.
  x, w = _inputs((2, 20, 20, 256), 9, out_channels=256)
  x = jax.nn.relu(x)
  w = w * 0.01
  cotangent = jax.random.normal(jax.random.key(3), (2, 6, 6, 256))

  def vjp(conv):
    y, pullback = jax.vjp(functools.partial(conv, stride=2), x, w)
    return (y,) + pullback(cotangent)

  for got, want in zip(jax.jit(functools.partial(vjp, layers.sliced_conv))(),
                       jax.jit(functools.partial(vjp, layers.xla_conv))()):
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(got, want, atol=2e-5 * scale, rtol=0)


@pytest.mark.parametrize('shape,kernel_size,stride', CONV_CASES[:3])
def test_sliced_conv_bfloat16_inputs_float32_accumulation(shape, kernel_size,
                                                          stride):
  x, w = _inputs(shape, kernel_size)
  cotangent = jax.random.normal(jax.random.key(4), layers.xla_conv(
      x, w, stride).shape)

  def vjp(conv, compute_dtype, x, w, cotangent):
    y, pullback = jax.vjp(
        lambda x, w: conv(x, w, stride, compute_dtype), x, w)
    return (y,) + pullback(cotangent)

  got = vjp(layers.sliced_conv, jnp.bfloat16, x, w, cotangent)
  assert all(g.dtype == jnp.float32 for g in got)
  # Without differentiation (evaluation) the primal runs: the same values.
  np.testing.assert_array_equal(
      layers.sliced_conv(x, w, stride, jnp.bfloat16), got[0])
  # The matmuls see bfloat16-rounded x, W and dy, and sum in float32: only the
  # summation order differs from exact sums of the rounded values.
  with jax.enable_x64(True):
    rounded = lambda a: np.asarray(a.astype(jnp.bfloat16), np.float64)
    want = [np.asarray(a) for a in vjp(layers.xla_conv, None, rounded(x),
                                       rounded(w), rounded(cotangent))]
  for g, ref in zip(got, want):
    np.testing.assert_allclose(g, ref, rtol=0,
                               atol=1e-5 * np.max(np.abs(ref)))
  # Against float32: within bfloat16's 8-bit mantissa, and not float32 exactly.
  for g, ref in zip(got, vjp(layers.sliced_conv, None, x, w, cotangent)):
    scale = float(jnp.max(jnp.abs(ref)))
    np.testing.assert_allclose(g, ref, rtol=0, atol=2e-2 * scale)
    assert float(jnp.max(jnp.abs(g - ref))) > 1e-6 * scale


def test_resolve_compute_dtype():
  assert layers.resolve_compute_dtype('float32') is None
  assert layers.resolve_compute_dtype('bfloat16') == jnp.bfloat16
  with pytest.raises(ValueError, match='compute_dtype must be one of'):
    layers.resolve_compute_dtype('float16')


def test_resolve_conv_impl():
  assert layers.resolve_conv_impl('xla') == 'xla'
  assert layers.resolve_conv_impl('slices') == 'slices'
  want = 'slices' if jax.default_backend() == 'cpu' else 'xla'
  assert layers.resolve_conv_impl('auto') == want
  with pytest.raises(ValueError, match='conv_impl must be one of'):
    layers.resolve_conv_impl('fft')


def test_primary_caps_groups_channels_into_capsules():
  x = jax.random.normal(jax.random.key(0), (2, 14, 14, 5))
  module = layers.PrimaryCaps(num_types=3, dim=4, kernel_size=5, stride=2,
                              conv_impl='xla')
  params = module.init(jax.random.key(1), x)
  params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias too
  caps = module.apply(params, x)
  assert caps.shape == (2, 5 * 5 * 3, 4)  # (14 - 5) // 2 + 1 = 5
  p = params['params']
  y = layers.xla_conv(x, p['kernel'], 2) + p['bias']  # [2, 5, 5, 12]
  # Capsule (row 4, col 2, type 1) is channels 4:8 at that grid position.
  index = (4 * 5 + 2) * 3 + 1
  np.testing.assert_allclose(caps[:, index], ops.squash(y[:, 4, 2, 4:8]),
                             rtol=1e-5, atol=1e-6)
  assert float(jnp.max(ops.safe_norm(caps))) < 1.0


def test_primary_caps_impls_agree():
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (2, 20, 20, 8)))
  fast = layers.PrimaryCaps(num_types=4, dim=8, kernel_size=5,
                            conv_impl='slices')
  ref = layers.PrimaryCaps(num_types=4, dim=8, kernel_size=5, conv_impl='xla')
  params = fast.init(jax.random.key(1), x)
  loss = lambda module, p: jnp.sum(jnp.sin(module.apply(p, x)))
  np.testing.assert_allclose(fast.apply(params, x), ref.apply(params, x),
                             rtol=1e-5, atol=1e-6)
  g_fast = jax.grad(functools.partial(loss, fast))(params)
  g_ref = jax.grad(functools.partial(loss, ref))(params)
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_capsules_layer_matches_per_example_loop():
  num_in, dim_in, num_out, dim_out, batch = 6, 3, 4, 5, 3
  u = ops.squash(jax.random.normal(jax.random.key(0), (batch, num_in, dim_in)))
  module = layers.Capsules(num_out, dim_out, routing_iters=3)
  params = module.init(jax.random.key(1), u)
  w = params['params']['kernel']
  assert w.shape == (num_in, num_out, dim_out, dim_in)
  v, c = module.apply(params, u, return_couplings=True)
  assert v.shape == (batch, num_out, dim_out)
  assert c.shape == (batch, 3, num_in, num_out)
  for b in range(batch):
    u_hat = np.zeros((num_in, num_out, dim_out), np.float32)
    for i in range(num_in):
      for j in range(num_out):
        u_hat[i, j] = np.asarray(w[i, j]) @ np.asarray(u[b, i])  # W_ij u_i
    v_ref, c_ref = routing.dynamic_routing(u_hat, 3, return_couplings=True)
    np.testing.assert_allclose(v[b], v_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(c[b], c_ref, rtol=1e-4, atol=1e-6)


def test_predictions_equal_einsum_forward_and_gradient():
  with jax.enable_x64(True):
    kw, ku, kg = jax.random.split(jax.random.key(0), 3)
    w = jax.random.normal(kw, (7, 4, 5, 3), jnp.float64)
    u = jax.random.normal(ku, (6, 7, 3), jnp.float64)
    cotangent = jax.random.normal(kg, (7, 6, 4, 5), jnp.float64)
    reference = lambda w, u: jnp.einsum('ijdk,bik->ibjd', w, u)
    got, pull = jax.vjp(layers.predictions, w, u)
    want, pull_ref = jax.vjp(reference, w, u)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    for g, r in zip(pull(cotangent), pull_ref(cotangent)):
      np.testing.assert_allclose(g, r, rtol=1e-12)


def test_capsules_layer_gradient_matches_batch_major_reference():
  # The layer routes u_hat in [I, B, J, D]; the textbook formulation is a
  # batch-major einsum and a vmap over axis 0. Same values and gradients.
  with jax.enable_x64(True):
    u = ops.squash(jax.random.normal(jax.random.key(0), (3, 6, 4),
                                     jnp.float64))
    module = layers.Capsules(5, 2, routing_iters=3,
                             kernel_init=jax.nn.initializers.normal(0.5))
    w = module.init(jax.random.key(1), u)['params']['kernel']

    def reference(w, u):
      u_hat = jnp.einsum('ijdk,bik->bijd', w, u)
      return jax.vmap(functools.partial(routing.dynamic_routing,
                                        num_iters=3))(u_hat)

    layer = lambda w, u: module.apply({'params': {'kernel': w}}, u)
    loss = lambda f: lambda w, u: jnp.sum(jnp.sin(3.0 * f(w, u)))
    np.testing.assert_allclose(layer(w, u), reference(w, u), rtol=1e-12)
    grads = jax.grad(loss(layer), argnums=(0, 1))(w, u)
    grads_ref = jax.grad(loss(reference), argnums=(0, 1))(w, u)
    for g, r in zip(grads, grads_ref):
      assert float(jnp.max(jnp.abs(r))) > 1e-3
      np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)


def test_capsules_layer_routes_each_example_independently():
  u = ops.squash(jax.random.normal(jax.random.key(0), (2, 6, 3)))
  module = layers.Capsules(4, 5, routing_iters=3,
                           kernel_init=jax.nn.initializers.normal(1.0))
  params = module.init(jax.random.key(1), u)
  other = u.at[1].set(ops.squash(jax.random.normal(jax.random.key(2), (6, 3))))
  v, v_other = module.apply(params, u), module.apply(params, other)
  np.testing.assert_allclose(v[0], v_other[0], rtol=1e-6)
  assert not np.allclose(v[1], v_other[1])


def test_mask_capsules_keeps_only_the_selected_capsule():
  caps = jax.random.normal(jax.random.key(0), (3, 4, 2))
  masked = layers.mask_capsules(caps, jnp.array([0, 3, 1]))
  for b, keep in enumerate([0, 3, 1]):
    for j in range(4):
      want = caps[b, j] if j == keep else jnp.zeros(2)
      np.testing.assert_array_equal(masked[b, j], want)


def test_decoder_sees_only_the_selected_capsule():
  caps = jax.random.normal(jax.random.key(0), (2, 4, 3))
  decoder = layers.Decoder((5, 6, 2), hidden=(8, 16))
  params = decoder.init(jax.random.key(1), caps, jnp.array([0, 0]))
  select = jnp.array([2, 1])
  images = decoder.apply(params, caps, select)
  assert images.shape == (2, 5, 6, 2)
  assert float(images.min()) > 0.0 and float(images.max()) < 1.0
  # Changing a capsule that is not selected changes nothing.
  changed = caps.at[:, 3].add(5.0)
  np.testing.assert_array_equal(decoder.apply(params, changed, select), images)
  assert not np.allclose(decoder.apply(params, caps, jnp.array([3, 1]))[0],
                         images[0])
