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
import numpy as np
from jax import lax

from capsjax import conv
from capsjax import ops
from capsjax import routing

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
    conv_impl: 'auto' | 'slices' | 'xla'; see `conv.resolve_conv_impl`.
    compute_dtype: 'float32' or 'bfloat16': the dtype of the convolution's
      matmul inputs (products are accumulated in float32 either way). This
      convolution is ~95% of the model's FLOPs; bfloat16 roughly doubles its
      matmul speed on CPUs with AVX512-BF16/AMX and on GPUs/TPUs.
  """
  num_types: int = 32
  dim: int = 8
  kernel_size: int = 9
  stride: int = 2
  conv_impl: str = 'auto'
  compute_dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x: [B, H, W, C]` -> capsules `[B, H' * W' * num_types, dim]`."""
    channels = self.num_types * self.dim
    kernel = self.param(
        'kernel', nn.initializers.lecun_normal(),
        (self.kernel_size, self.kernel_size, x.shape[-1], channels))
    bias = self.param('bias', nn.initializers.zeros, (channels,))
    compute_dtype = conv.resolve_compute_dtype(self.compute_dtype)
    if conv.resolve_conv_impl(self.conv_impl) == 'slices':
      y = conv.sliced_conv(x, kernel, self.stride, compute_dtype)
    else:
      y = conv.xla_conv(x, kernel, self.stride, compute_dtype)
    y = y + bias
    # Channel t * dim + d is component d of the type-t capsule.
    return ops.squash(y.reshape(x.shape[0], -1, self.dim))


# Capsules.memory, config.model.routing_memory.
ROUTING_MEMORY = ('full', 'chunked')


class Capsules(nn.Module):
  """A fully connected capsule layer with routing-by-agreement (DigitCaps).

  Every (input i, output j) pair has its own transformation matrix W_ij
  (`[dim, dim_in]`), u_hat_ij = W_ij u_i (Eq. 2); the routing function
  (`dynamic_routing` by default) then runs per example under `jax.vmap`. As in
  the paper there is no bias.

  Attributes:
    num_capsules: output capsules (classes for DigitCaps).
    dim: output capsule dimension.
    routing_iters: routing iterations r (>= 1).
    routing: a name in `routing.ROUTINGS`.
    memory: how u_hat and the routing are held in memory (ROUTING_MEMORY):
      'full' builds u_hat `[num_in, B, num_capsules, dim]` whole, and
      training keeps it and its gradient (fastest); 'chunked' never builds
      it whole (`routing.dynamic_routing_chunked`, dynamic routing only), so
      that part of the memory stops growing with num_in. (Rematerialising the
      full routing with `jax.checkpoint` alone saves nothing: the peak is in
      the backward pass, where the recomputed u_hat and its gradient are live
      together; 5275 MiB of scratch either way for CIFAR-100 at batch 128.)
    chunk_size: input capsules per chunk for memory='chunked'.
    kernel_init: initialiser of W, `[num_in, num_capsules, dim, dim_in]`.
  """
  num_capsules: int
  dim: int
  routing_iters: int
  routing: str = 'dynamic'
  memory: str = 'full'
  chunk_size: int = 128
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
    if self.memory not in ROUTING_MEMORY:
      raise ValueError(
          f'memory must be one of {ROUTING_MEMORY}, got {self.memory!r}; use '
          f'--config.model.routing_memory=full.')
    if self.memory == 'chunked':
      if self.routing != 'dynamic':
        raise ValueError(
            f"memory='chunked' exists for routing='dynamic' only, got "
            f"{self.routing!r}; use --config.model.routing_memory=full.")
      return routing.dynamic_routing_chunked(
          w, u, self.routing_iters, chunk_size=self.chunk_size,
          return_couplings=return_couplings)
    route = functools.partial(routing.get_routing(self.routing),
                              num_iters=self.routing_iters,
                              return_couplings=return_couplings)
    return jax.vmap(route, in_axes=1)(predictions(w, u))


def predictions(w: jax.Array, u: jax.Array) -> jax.Array:
  """u_hat_ij = W_ij u_i for a batch, laid out input-major: `[I, B, J, D]`.

  `w: [I, J, D, K]`, `u: [B, I, K]`. Numerically
  `einsum('ijdk,bik->ibjd', w, u)`, written as a dot_general batched over the
  input capsules i whose operands and result all have i leading, so neither
  the product nor its two gradients need the `[B, I, J, D]` tensor (94 MB at
  batch 128) transposed; routing then maps over axis 1. In the batch-major
  layout XLA:CPU spent ~40% of the DigitCaps gradient copying it.
  """
  num_in, num_out, dim, dim_in = w.shape
  w_t = w.reshape(num_in, num_out * dim, dim_in).transpose(0, 2, 1)  # [I,K,JD]
  u_t = u.transpose(1, 0, 2)  # [I, B, K]
  u_hat = lax.dot_general(u_t, w_t, (((2,), (1,)), ((0,), (0,))))
  return u_hat.reshape(num_in, u.shape[0], num_out, dim)


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
