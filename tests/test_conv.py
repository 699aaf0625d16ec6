"""Tests for capsjax.conv: the sliced PrimaryCaps convolution and its VJP, and
the one-matmul Conv1 (patch_conv)."""
import functools

import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest

from capsjax import conv

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
    np.testing.assert_allclose(conv.sliced_conv(x, w, stride),
                               conv.xla_conv(x, w, stride), rtol=1e-12,
                               atol=1e-10)
    # A non-linear loss gives a cotangent that differs at every output.
    def grads(conv):
      loss = lambda x, w: jnp.sum(jnp.sin(conv(x, w, stride)))
      return jax.grad(loss, argnums=(0, 1))(x, w)

    (dx, dw), (dx_ref, dw_ref) = grads(conv.sliced_conv), grads(
        conv.xla_conv)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('shape,kernel_size', [
    ((2, 12, 11, 1), 5),   # Conv1's kind: one channel, non-square.
    ((2, 7, 6, 3), 6),     # RGB, a 1-wide output column.
])
def test_patch_conv_equals_xla_conv_forward_and_gradient(shape, kernel_size):
  with jax.enable_x64(True):
    x, w = _inputs(shape, kernel_size, dtype=jnp.float64)
    np.testing.assert_allclose(conv.patch_conv(x, w), conv.xla_conv(x, w, 1),
                               rtol=1e-12, atol=1e-10)
    def grads(conv_fn):
      loss = lambda x, w: jnp.sum(jnp.sin(conv_fn(x, w)))
      return jax.grad(loss, argnums=(0, 1))(x, w)

    for got, want in zip(grads(conv.patch_conv),
                         grads(lambda x, w: conv.xla_conv(x, w, 1))):
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_sliced_conv_custom_vjp_matches_numerical_gradient():
  with jax.enable_x64(True):
    x, w = _inputs((2, 11, 10, 3), 4, out_channels=2, dtype=jnp.float64)
    jtu.check_grads(functools.partial(conv.sliced_conv, stride=2), (x, w),
                    order=1, modes=['rev'])


def numpy_conv_vjp(x, w, stride, dy):
  """float64 reference of a VALID strided convolution (NHWC/HWIO) by im2col:
  `(y, dx, dw)` for the cotangent `dy`."""
  x, w, dy = (np.asarray(a, np.float64) for a in (x, w, dy))
  b, h, width, _ = x.shape
  kh, kw, _, o = w.shape
  oh, ow = (h - kh) // stride + 1, (width - kw) // stride + 1
  rows = (np.arange(oh) * stride)[:, None, None, None] + np.arange(kh)[:, None]
  cols = (np.arange(ow) * stride)[None, :, None, None] + np.arange(kw)
  patches = x[:, rows, cols]  # [b, oh, ow, kh, kw, c]
  flat = patches.reshape(b * oh * ow, -1)
  g = dy.reshape(-1, o)
  y = (flat @ w.reshape(-1, o)).reshape(b, oh, ow, o)
  dw = (flat.T @ g).reshape(w.shape)
  dx = np.zeros_like(x)
  np.add.at(dx, (slice(None), rows, cols),
            (g @ w.reshape(-1, o).T).reshape(patches.shape))
  return y, dx, dw


def test_numpy_reference_equals_xla_conv():
  with jax.enable_x64(True):
    x, w = _inputs((2, 9, 10, 3), 4, dtype=jnp.float64)
    y, pullback = jax.vjp(functools.partial(conv.xla_conv, stride=2), x, w)
    dy = jax.random.normal(jax.random.key(5), y.shape, jnp.float64)
    for got, want in zip(numpy_conv_vjp(x, w, 2, dy), (y, *pullback(dy))):
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_sliced_conv_paper_primarycaps_size():
  # The real PrimaryCaps in float32: 256 channels in, 32 x 8 out, on a 20x20
  # Conv1 map, against the float64 reference (XLA's own strided-convolution
  # gradient takes ~20 s here on CPU).
  x, w = _inputs((2, 20, 20, 256), 9, out_channels=256)
  x = jax.nn.relu(x)
  w = w * 0.01
  cotangent = jax.random.normal(jax.random.key(3), (2, 6, 6, 256))
  y, pullback = jax.vjp(functools.partial(conv.sliced_conv, stride=2), x, w)
  for got, want in zip((y, *pullback(cotangent)),
                       numpy_conv_vjp(x, w, 2, cotangent)):
    scale = float(np.max(np.abs(want)))
    np.testing.assert_allclose(got, want, atol=2e-5 * scale, rtol=0)


@pytest.mark.parametrize('shape,kernel_size,stride', CONV_CASES[:3])
def test_sliced_conv_bfloat16_inputs_float32_accumulation(shape, kernel_size,
                                                          stride):
  x, w = _inputs(shape, kernel_size)
  cotangent = jax.random.normal(jax.random.key(4), conv.xla_conv(
      x, w, stride).shape)

  def vjp(conv, compute_dtype, x, w, cotangent):
    y, pullback = jax.vjp(
        lambda x, w: conv(x, w, stride, compute_dtype), x, w)
    return (y,) + pullback(cotangent)

  got = vjp(conv.sliced_conv, jnp.bfloat16, x, w, cotangent)
  assert all(g.dtype == jnp.float32 for g in got)
  # Without differentiation (evaluation) the primal runs: the same values.
  np.testing.assert_array_equal(
      conv.sliced_conv(x, w, stride, jnp.bfloat16), got[0])
  # The matmuls see bfloat16-rounded x, W and dy, and sum in float32: only the
  # summation order differs from exact sums of the rounded values.
  with jax.enable_x64(True):
    rounded = lambda a: np.asarray(a.astype(jnp.bfloat16), np.float64)
    want = [np.asarray(a) for a in vjp(conv.xla_conv, None, rounded(x),
                                       rounded(w), rounded(cotangent))]
  for g, ref in zip(got, want):
    np.testing.assert_allclose(g, ref, rtol=0,
                               atol=1e-5 * np.max(np.abs(ref)))
  # Against float32: within bfloat16's 8-bit mantissa, and not float32 exactly.
  for g, ref in zip(got, vjp(conv.sliced_conv, None, x, w, cotangent)):
    scale = float(jnp.max(jnp.abs(ref)))
    np.testing.assert_allclose(g, ref, rtol=0, atol=2e-2 * scale)
    assert float(jnp.max(jnp.abs(g - ref))) > 1e-6 * scale


def test_resolve_compute_dtype():
  assert conv.resolve_compute_dtype('float32') is None
  assert conv.resolve_compute_dtype('bfloat16') == jnp.bfloat16
  with pytest.raises(ValueError, match='compute_dtype must be one of'):
    conv.resolve_compute_dtype('float16')


def test_resolve_conv_impl():
  assert conv.resolve_conv_impl('xla') == 'xla'
  assert conv.resolve_conv_impl('slices') == 'slices'
  want = 'slices' if jax.default_backend() == 'cpu' else 'xla'
  assert conv.resolve_conv_impl('auto') == want
  with pytest.raises(ValueError, match='conv_impl must be one of'):
    conv.resolve_conv_impl('fft')


@pytest.mark.parametrize('backend, want', [('cpu', 'slices'), ('gpu', 'xla'),
                                           ('tpu', 'xla')])
def test_auto_conv_impl_by_backend(monkeypatch, backend, want):
  # XLA:CPU's strided-conv gradient is the sliced form's only reason to be.
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  assert conv.resolve_conv_impl('auto') == want
  assert conv.resolve_conv_impl('slices') == 'slices'


def test_conv_output_size():
  assert conv.conv_output_size(28, 9, 1) == 20
  assert conv.conv_output_size(20, 9, 2) == 6
  assert conv.conv_output_size(8, 9, 2) <= 0
