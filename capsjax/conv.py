"""The PrimaryCaps convolution: a VALID strided 2D convolution, fast on CPU.

  sliced_conv          one im2col matmul per kernel row, with its own VJP
  patch_conv           a stride-1 convolution of few channels as one matmul
  xla_conv             XLA's `lax.conv_general_dilated`, the reference
  resolve_conv_impl    'auto' -> 'slices' on CPU, 'xla' on GPU/TPU
  resolve_compute_dtype 'auto' -> bfloat16 where matmuls run it natively
  conv_output_size     output length of a VALID convolution

Why it exists: XLA:CPU lowers the input gradient of a strided convolution to a
very slow kernel (22.9 s against 0.5 s for PrimaryCaps at batch 128, forward
plus backward). Pure JAX; no Flax.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from capsjax import cpu_runtime

CONV_IMPLS = ('auto', 'slices', 'xla')
COMPUTE_DTYPES = ('float32', 'bfloat16', 'auto')


def conv_output_size(size: int, kernel: int, stride: int) -> int:
  """Output length of a VALID convolution along one axis (may be <= 0)."""
  return (size - kernel) // stride + 1


def _row_patches(x, ky, kw, out_h, out_w, stride):
  """im2col of kernel row `ky`: `[B * out_h * out_w, kw * C]`, tap kx major.

  Row `(b, i, j)` holds the `kw` input pixels that output `(i, j)` sees through
  kernel row `ky` (`ky` may be traced: it is the fori_loop index).
  """
  b, _, _, c = x.shape
  rows = lax.dynamic_slice_in_dim(x, ky, stride * (out_h - 1) + 1,
                                  axis=1)[:, ::stride]
  # One gather of every output column's kw taps. XLA:CPU copies it in one
  # pass; concatenating kw strided slices took two passes and twice the time.
  columns = np.arange(out_w)[:, None] * stride + np.arange(kw)
  patches = jnp.take(rows, columns, axis=2, mode='clip')  # [B, oh, ow, kw, C]
  return patches.reshape(b * out_h * out_w, kw * c)


def _matmul(a, b, accumulate_dtype):
  return lax.dot(a, b, preferred_element_type=accumulate_dtype)


def _sliced_conv_forward(x, kernel, stride, compute_dtype):
  b = x.shape[0]
  kh, kw, c, o = kernel.shape
  out_h = conv_output_size(x.shape[1], kh, stride)
  out_w = conv_output_size(x.shape[2], kw, stride)
  acc = jnp.result_type(x, kernel)
  xc = jnp.asarray(x, compute_dtype)
  w_rows = jnp.asarray(kernel, compute_dtype).reshape(kh, kw * c, o)

  def add_row(ky, y):
    patches = _row_patches(xc, ky, kw, out_h, out_w, stride)
    return y + _matmul(patches, w_rows[ky], acc)

  y = lax.fori_loop(0, kh, add_row, jnp.zeros((b * out_h * out_w, o), acc))
  return y.reshape(b, out_h, out_w, o)


def _col2im_row(taps, ws, stride):
  """Sums one kernel row's taps into its input row: `[B, oh, ws, stride, C]`.

  `taps: [B, oh, ow, kw, C]`; tap kx of output column j lands on input column
  `stride * j + kx`, stored as block column `j + kx // stride`, phase
  `kx % stride`. Written as padded slabs summed per phase, so that XLA fuses
  the whole row into one pass (nine in-place scatter-adds took five times as
  long).
  """
  _, _, ow, kw, _ = taps.shape
  phases = []
  for phase in range(stride):
    total = 0
    for kx in range(phase, kw, stride):
      shift = kx // stride
      total = total + jnp.pad(
          taps[:, :, :, kx, :],
          ((0, 0), (0, 0), (shift, ws - ow - shift), (0, 0)))
    phases.append(total)
  return jnp.stack(phases, axis=3)


def _sliced_conv_backward(x, kernel, dy, stride, compute_dtype):
  """`(dx, dW)` of the convolution, one kernel row at a time.

  dW[ky] is `P_ky^T @ dy`, computed as `(dy^T @ P_ky)^T` so that both matmul
  operands are row-major (a transposed left operand runs at half speed on
  CPU). dx is col2im: `dy @ W[ky]^T` scatter-added into a space-to-depth
  layout.
  """
  b, h, w, c = x.shape
  kh, kw, _, o = kernel.shape
  _, out_h, out_w, _ = dy.shape
  acc = jnp.result_type(dy, kernel)
  xc = jnp.asarray(x, compute_dtype)
  dy_c = jnp.asarray(dy, compute_dtype).reshape(-1, o)
  dy_t = dy_c.T
  w_rows_t = jnp.asarray(kernel, compute_dtype).reshape(
      kh, kw * c, o).transpose(0, 2, 1)
  # Space-to-depth layout [B, h/s, w/s, s, s, C]: input row s*i + ky lives at
  # block row i + ky // s, phase ky % s, so every tap adds a dense slab.
  hs, ws = -(-h // stride), -(-w // stride)

  def add_row(ky, carry):
    dx, dw_t = carry
    patches = _row_patches(xc, ky, kw, out_h, out_w, stride)
    dw_t = dw_t.at[ky].set(_matmul(dy_t, patches, acc))
    taps = _matmul(dy_c, w_rows_t[ky], acc).reshape(b, out_h, out_w, kw, c)
    band = _col2im_row(taps, ws, stride)
    start = (0, ky // stride, 0, ky % stride, 0, 0)
    old = lax.dynamic_slice(dx, start, (b, out_h, ws, 1, stride, c))
    dx = lax.dynamic_update_slice(dx, old + band[:, :, :, None], start)
    return dx, dw_t

  dx, dw_t = lax.fori_loop(
      0, kh, add_row, (jnp.zeros((b, hs, ws, stride, stride, c), acc),
                       jnp.zeros((kh, o, kw * c), acc)))
  dx = dx.transpose(0, 1, 3, 2, 4, 5).reshape(b, hs * stride, ws * stride, c)
  dw = dw_t.reshape(kh, o, kw, c).transpose(0, 2, 3, 1)
  return dx[:, :h, :w, :], dw


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def sliced_conv(x: jax.Array, kernel: jax.Array, stride: int,
                compute_dtype=None) -> jax.Array:
  """A VALID strided 2D convolution as one matmul per kernel row.

  Numerically `lax.conv_general_dilated(x, kernel, (stride, stride), 'VALID')`
  in NHWC/HWIO layout, written so that XLA's CPU backend runs it fast. XLA on
  CPU lowers the input gradient of a strided convolution to a very slow
  kernel (22.9 s against 0.5 s here for PrimaryCaps at batch 128, forward plus
  backward, on a 2-core EPYC). Here:

    forward  y      = sum_ky P_ky @ W[ky]      P_ky: im2col of kernel row ky,
                                               [B*H'*W', kw*C]
    input    dx     = col2im_ky(dy @ W[ky]^T)  scatter-adds into a
                                               space-to-depth layout, where
                                               each tap is a slab
    kernel   dW[ky] = (dy^T @ P_ky)^T          all in compute_dtype, so
                                               bfloat16 speeds up all three

  The kernel rows run in a `lax.fori_loop`, so only one row's patches are live
  at a time: unrolled, XLA keeps all of them (hundreds of MB at batch 128) and
  the CPU spends a third of a training step faulting in fresh pages.

  Args:
    x: `[B, H, W, C]`.
    kernel: `[kh, kw, C, O]`.
    stride: the same stride along H and W (static).
    compute_dtype: dtype of the matmul inputs, e.g. `jnp.bfloat16` (static);
      products are accumulated in the input dtype. None: the input dtype.

  Returns:
    `[B, (H - kh) // stride + 1, (W - kw) // stride + 1, O]`, dtype of x.
  """
  return _sliced_conv_forward(x, kernel, stride, compute_dtype or x.dtype)


def _sliced_conv_fwd(x, kernel, stride, compute_dtype):
  y = _sliced_conv_forward(x, kernel, stride, compute_dtype or x.dtype)
  return y, (x, kernel)


def _sliced_conv_bwd(stride, compute_dtype, residuals, dy):
  x, kernel = residuals
  dx, d_kernel = _sliced_conv_backward(x, kernel, dy, stride,
                                       compute_dtype or x.dtype)
  return dx.astype(x.dtype), d_kernel.astype(kernel.dtype)


sliced_conv.defvjp(_sliced_conv_fwd, _sliced_conv_bwd)


def xla_conv(x: jax.Array, kernel: jax.Array, stride: int,
             compute_dtype=None) -> jax.Array:
  """The reference: XLA's own VALID convolution, NHWC/HWIO.

  With `compute_dtype` the inputs are cast to it and the products accumulated
  in x's dtype, as in `sliced_conv`.
  """
  acc = jnp.result_type(x, kernel)
  dtype = compute_dtype or acc
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  return lax.conv_general_dilated(
      x, kernel, (stride, stride), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), preferred_element_type=acc)


# patch_conv's patches hold kh * kw copies of the input: fine for images
# (Conv1 on MNIST: 81 x 1 channel, 17 MB at batch 128), not for feature maps.
PATCH_CONV_MAX_CHANNELS = 4


def patch_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A VALID stride-1 2D convolution as one im2col matmul.

  Numerically `xla_conv(x, kernel, 1)` (NHWC/HWIO), for inputs with few
  channels such as images (`PATCH_CONV_MAX_CHANNELS`): the patches
  `[B * H' * W', kh * kw * C]` hold every input pixel kh * kw times. On
  XLA:CPU the kernel gradient of the paper's Conv1 (9x9, one input channel,
  256 outputs) runs as a slow 20x20-window convolution (docs/performance.md);
  here it is one matmul.
  """
  b, h, w, c = x.shape
  kh, kw, _, o = kernel.shape
  out_h, out_w = h - kh + 1, w - kw + 1
  patches = jnp.concatenate(
      [x[:, i:i + out_h, j:j + out_w, :] for i in range(kh) for j in range(kw)],
      axis=-1)  # [B, H', W', kh * kw * C], tap (i, j) major.
  y = lax.dot(patches.reshape(-1, kh * kw * c), kernel.reshape(-1, o),
              preferred_element_type=jnp.result_type(x, kernel))
  return y.reshape(b, out_h, out_w, o)


def resolve_conv_impl(impl: str) -> str:
  """'auto' -> 'slices' on CPU, 'xla' on GPU/TPU.

  The sliced formulation exists only because of XLA:CPU's slow strided-conv
  gradient. On GPU and TPU, cuDNN and the TPU convolution units run
  `lax.conv_general_dilated` (and its gradient) well, so 'auto' keeps it there.
  """
  if impl not in CONV_IMPLS:
    raise ValueError(
        f'conv_impl must be one of {CONV_IMPLS}, got {impl!r}; use '
        f"--config.model.conv_impl=auto.")
  if impl == 'auto':
    return 'slices' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def resolve_compute_dtype(name: str):
  """The matmul input dtype: None (no cast, float32) or `jnp.bfloat16`.

  'auto' picks bfloat16 where the hardware multiplies it natively: GPUs, TPUs
  and CPUs with AMX or AVX512-BF16 (`cpu_runtime.native_bf16_matmul`). Other
  CPUs would emulate it through float32, slower than float32 itself, so there
  'auto' is float32.
  """
  if name not in COMPUTE_DTYPES:
    raise ValueError(
        f'compute_dtype must be one of {COMPUTE_DTYPES}, got {name!r}; use '
        f'--config.model.compute_dtype=float32.')
  if name == 'auto':
    native = (jax.default_backend() != 'cpu' or
              cpu_runtime.native_bf16_matmul())
    name = 'bfloat16' if native else 'float32'
  return None if name == 'float32' else jnp.bfloat16
