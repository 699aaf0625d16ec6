"""Flax linen layers of a CapsNet, wrapping the pure functions of capsjax.

  PrimaryCaps   strided VALID convolution -> capsules, squashed (Section 4)
  Capsules      u_hat = W_ij u_i, then routing-by-agreement (Eq. 2, Proc. 1)
  Decoder       masked capsules -> 512 -> 1024 -> image (Section 4.1)

Shapes use B for the batch, NHWC images and `[B, num_caps, dim]` capsules.
"""
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from capsjax import ops
from capsjax import routing

CONV_IMPLS = ('auto', 'slices', 'xla')


def conv_output_size(size: int, kernel: int, stride: int) -> int:
  """Output length of a VALID convolution along one axis (may be <= 0)."""
  return (size - kernel) // stride + 1


def _tap(x, ky, kx, out_h, out_w, stride):
  """The input pixels that kernel tap (ky, kx) sees: `[B, out_h, out_w, C]`."""
  b, _, _, c = x.shape
  return lax.slice(
      x, (0, ky, kx, 0),
      (b, ky + stride * (out_h - 1) + 1, kx + stride * (out_w - 1) + 1, c),
      (1, stride, stride, 1))


def _sliced_conv_forward(x, kernel, stride):
  kh, kw = kernel.shape[:2]
  out_h = conv_output_size(x.shape[1], kh, stride)
  out_w = conv_output_size(x.shape[2], kw, stride)
  out = None
  for ky in range(kh):
    for kx in range(kw):
      term = _tap(x, ky, kx, out_h, out_w, stride) @ kernel[ky, kx]
      out = term if out is None else out + term
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def sliced_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """A VALID strided 2D convolution as one matmul per kernel tap.

  Numerically `lax.conv_general_dilated(x, kernel, (stride, stride), 'VALID')`
  in NHWC/HWIO layout, written so that XLA's CPU backend runs it fast. XLA on
  CPU lowers the input gradient of a strided convolution to a very slow
  kernel (22.9 s against 0.70 s here for PrimaryCaps at batch 128, forward plus
  backward, on a 2-core EPYC). Here every pass is a handful of large matmuls:

    forward  y      = sum_{ky,kx} x[:, ky::s, kx::s, :] @ W[ky, kx]
    kernel   dW[t]  = x[:, tap t]^T @ dy                  (one matmul per tap)
    input    dx     = col2im(dy @ W_all^T)                (one matmul, then
                      scatter-adds into a space-to-depth layout, where every
                      tap's contribution is a dense unstrided slab)

  Args:
    x: `[B, H, W, C]`.
    kernel: `[kh, kw, C, O]`.
    stride: the same stride along H and W (static).

  Returns:
    `[B, (H - kh) // stride + 1, (W - kw) // stride + 1, O]`.
  """
  return _sliced_conv_forward(x, kernel, stride)


def _sliced_conv_fwd(x, kernel, stride):
  return _sliced_conv_forward(x, kernel, stride), (x, kernel)


def _sliced_conv_bwd(stride, residuals, dy):
  x, kernel = residuals
  b, h, w, c = x.shape
  kh, kw, _, o = kernel.shape
  _, out_h, out_w, _ = dy.shape
  dy_flat = dy.reshape(-1, o)

  d_kernel = jnp.stack([
      _tap(x, ky, kx, out_h, out_w, stride).reshape(-1, c).T @ dy_flat
      for ky in range(kh) for kx in range(kw)
  ]).reshape(kernel.shape)

  # Every tap's input gradient in one matmul: [B, out_h, out_w, kh, kw, C].
  w_all = kernel.reshape(kh * kw * c, o).T
  taps = (dy_flat @ w_all).reshape(b, out_h, out_w, kh, kw, c)
  # Space-to-depth layout [B, h/s, w/s, s, s, C]: input row s*i + ky lives at
  # block row i + ky // s, phase ky % s, so each tap adds a contiguous slab.
  hs, ws = -(-h // stride), -(-w // stride)
  dx = jnp.zeros((b, hs, ws, stride, stride, c), x.dtype)
  for ky in range(kh):
    for kx in range(kw):
      dx = dx.at[:, ky // stride:ky // stride + out_h,
                 kx // stride:kx // stride + out_w,
                 ky % stride, kx % stride, :].add(taps[:, :, :, ky, kx, :])
  dx = dx.transpose(0, 1, 3, 2, 4, 5).reshape(b, hs * stride, ws * stride, c)
  return dx[:, :h, :w, :], d_kernel


sliced_conv.defvjp(_sliced_conv_fwd, _sliced_conv_bwd)


def xla_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """The reference: XLA's own VALID convolution, NHWC/HWIO."""
  return lax.conv_general_dilated(
      x, kernel, (stride, stride), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


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


class PrimaryCaps(nn.Module):
  """A VALID strided convolution whose channels are grouped into capsules.

  The paper's PrimaryCaps: 32 capsule types of 8D, 9x9 kernel, stride 2, on the
  256-channel Conv1 output; each output position holds one capsule per type.
  No ReLU: the capsule vectors are squashed instead (Eq. 1).

  Attributes:
    num_types: capsule types (conv channels / dim).
    dim: capsule dimension.
    kernel_size: square kernel side.
    stride: stride along both spatial axes.
    conv_impl: 'auto' | 'slices' | 'xla'; see `resolve_conv_impl`.
  """
  num_types: int = 32
  dim: int = 8
  kernel_size: int = 9
  stride: int = 2
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x: [B, H, W, C]` -> capsules `[B, H' * W' * num_types, dim]`."""
    channels = self.num_types * self.dim
    kernel = self.param(
        'kernel', nn.initializers.lecun_normal(),
        (self.kernel_size, self.kernel_size, x.shape[-1], channels))
    bias = self.param('bias', nn.initializers.zeros, (channels,))
    if resolve_conv_impl(self.conv_impl) == 'slices':
      y = sliced_conv(x, kernel, self.stride)
    else:
      y = xla_conv(x, kernel, self.stride)
    y = y + bias
    # Channel t * dim + d is component d of the type-t capsule.
    return ops.squash(y.reshape(x.shape[0], -1, self.dim))


class Capsules(nn.Module):
  """A fully connected capsule layer with routing-by-agreement (DigitCaps).

  Every (input i, output j) pair has its own transformation matrix W_ij
  (`[dim, dim_in]`), u_hat_ij = W_ij u_i (Eq. 2); `dynamic_routing` then runs
  per example under `jax.vmap`. As in the paper there is no bias.

  Attributes:
    num_capsules: output capsules (classes for DigitCaps).
    dim: output capsule dimension.
    routing_iters: routing iterations r (>= 1).
    kernel_init: initialiser of W, `[num_in, num_capsules, dim, dim_in]`.
  """
  num_capsules: int
  dim: int
  routing_iters: int
  kernel_init: nn.initializers.Initializer = nn.initializers.normal(0.01)

  @nn.compact
  def __call__(self, u: jax.Array, return_couplings: bool = False):
    """Routes `u: [B, num_in, dim_in]`.

    Returns:
      `v: [B, num_capsules, dim]`; with `return_couplings` also
      `c: [B, routing_iters, num_in, num_capsules]`.
    """
    _, num_in, dim_in = u.shape
    w = self.param('kernel', self.kernel_init,
                   (num_in, self.num_capsules, self.dim, dim_in))
    u_hat = jnp.einsum('ijdk,bik->bijd', w, u)
    route = functools.partial(routing.dynamic_routing,
                              num_iters=self.routing_iters,
                              return_couplings=return_couplings)
    return jax.vmap(route)(u_hat)


def mask_capsules(capsules: jax.Array, select: jax.Array) -> jax.Array:
  """Zeroes every capsule but `select`: `[B, K, D]`, `[B]` int -> `[B, K, D]`."""
  one_hot = jax.nn.one_hot(select, capsules.shape[1], dtype=capsules.dtype)
  return capsules * one_hot[..., None]


class Decoder(nn.Module):
  """Reconstructs the image from the masked capsules (Section 4.1, Fig. 2).

  Attributes:
    image_shape: `(H, W, C)` of the reconstruction.
    hidden: widths of the ReLU layers; the paper uses (512, 1024).
  """
  image_shape: Sequence[int]
  hidden: Sequence[int] = (512, 1024)

  @nn.compact
  def __call__(self, capsules: jax.Array, select: jax.Array) -> jax.Array:
    """`capsules: [B, K, D]`, `select: [B]` -> images `[B, H, W, C]` in (0, 1)."""
    h = mask_capsules(capsules, select).reshape(capsules.shape[0], -1)
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    h = nn.sigmoid(nn.Dense(int(np.prod(self.image_shape)))(h))
    return h.reshape(capsules.shape[0], *self.image_shape)
