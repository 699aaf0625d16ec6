"""Flax linen layers of a CapsNet, wrapping the pure functions of capsjax.

  Conv          VALID stride-1 convolution (Conv1), nn.Conv's parameters
  PrimaryCaps   strided VALID convolution -> capsules, squashed (Section 4)
  Capsules      u_hat = W_ij u_i, then routing-by-agreement (Eq. 2, Proc. 1)
  Decoder       masked capsules -> 512 -> 1024 -> image (Section 4.1)
  MatrixPrimaryCaps, ConvCaps, ClassCaps   matrix capsules with EM routing
                (Hinton, Sabour & Frosst 2018, Section 3)

Shapes use B for the batch, NHWC images and `[B, num_caps, dim]` capsules.
"""
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from capsjax import checks
from capsjax import conv
from capsjax import errors
from capsjax import ops
from capsjax import routing


class Conv(nn.Module):
  """A stride-1 convolution plus bias, with `nn.Conv`'s parameters.

  The same parameters (`kernel: [k, k, C, features]`, lecun-normal; `bias`,
  zeros) and values as `nn.Conv(features, (k, k), padding=padding)`, so
  checkpoints and initialisations are unchanged. On CPU ('auto' -> 'slices')
  an input of at most `conv.PATCH_CONV_MAX_CHANNELS` channels (an image) is
  convolved by `conv.patch_conv`, one matmul whose kernel gradient XLA:CPU
  runs far faster than its own convolution's; a feature map by
  `conv.sliced_conv`, whose matmuls also take bfloat16 inputs.

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    conv_impl: 'auto' | 'slices' | 'xla'; see `conv.resolve_conv_impl`.
    padding: 'VALID' or 'SAME' (zeros, `(k - 1) // 2` before, as XLA pads).
    compute_dtype: 'float32' | 'bfloat16' | 'auto', the dtype of the matmul
      inputs of a feature map's convolution (`conv.resolve_compute_dtype`;
      products are accumulated in float32). An image's (`patch_conv`) stays
      float32: it is a few FLOPs.
  """
  features: int
  kernel_size: int
  conv_impl: str = 'auto'
  padding: str = 'VALID'
  compute_dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`x: [B, H, W, C]` -> `[B, H', W', features]`: `H' = H - k + 1` for
    'VALID', `H` for 'SAME'."""
    k = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    if self.padding not in ('VALID', 'SAME'):
      raise ValueError(f"Conv padding must be 'VALID' or 'SAME', got "
                       f'{self.padding!r}.')
    if self.padding == 'SAME':
      pad = ((k - 1) // 2, k // 2)
      x = jnp.pad(x, ((0, 0), pad, pad, (0, 0)))
    compute_dtype = conv.resolve_compute_dtype(self.compute_dtype)
    if conv.resolve_conv_impl(self.conv_impl) != 'slices':
      y = conv.xla_conv(x, kernel, 1, compute_dtype)
    elif x.shape[-1] <= conv.PATCH_CONV_MAX_CHANNELS:
      y = conv.patch_conv(x, kernel)
    else:
      y = conv.sliced_conv(x, kernel, 1, compute_dtype)
    return y + bias


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
      convolution is most of the model's FLOPs; bfloat16 matmuls are native,
      and faster, on CPUs with AVX512-BF16/AMX and on GPUs/TPUs.
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


# Capsules.routing_memory, config.model.routing_memory.
ROUTING_MEMORY = ('full', 'chunked')


def check_routing_memory(routing_memory: str, routing_name: str) -> None:
  """Checks `Capsules.routing_memory` against its routing.

  Raises:
    errors.ConfigError: routing_memory is not in ROUTING_MEMORY, or is
      'chunked' (`routing.dynamic_routing_chunked`) with a routing other than
      'dynamic'.
  """
  checks.choice(routing_memory, 'model.routing_memory', ROUTING_MEMORY)
  if routing_memory == 'chunked' and routing_name != 'dynamic':
    raise errors.ConfigError(
        f"config.model.routing_memory='chunked' needs routing='dynamic', got "
        f"{routing_name!r}; set --config.model.routing_memory=full.")


class Capsules(nn.Module):
  """A fully connected capsule layer with routing-by-agreement (DigitCaps).

  Every (input i, output j) pair has its own transformation matrix W_ij
  (`[dim, dim_in]`), u_hat_ij = W_ij u_i (Eq. 2); the routing function
  (`dynamic_routing` by default) then runs per example under `jax.vmap`. As in
  the paper there is no bias. A routing with learned arguments of its own
  (`routing.PARAMS`: self-attention's log prior, inverted dot-product's layer
  norm) gets them as parameters of this layer, under their argument names;
  'dynamic' has none, so its parameters are `{'kernel'}` alone.

  Attributes:
    num_capsules: output capsules (classes for DigitCaps).
    dim: output capsule dimension.
    routing_iters: routing iterations r (>= 1).
    routing: a name in `routing.ROUTINGS`.
    routing_memory: how u_hat and the routing are held in memory
      (ROUTING_MEMORY):
      'full' routes u_hat `[B, num_capsules, num_in, dim]` for the whole
      batch (fastest; XLA fuses u_hat into the routing's passes, but
      training holds its gradient whole); 'chunked' never builds either
      whole (`routing.dynamic_routing_chunked`, dynamic routing only), so
      that part of the memory stops growing with num_in.
    routing_chunk: input capsules per chunk for routing_memory='chunked'.
    kernel_init: initialiser of W, `[num_in, num_capsules, dim, dim_in]`.
  """
  num_capsules: int
  dim: int
  routing_iters: int
  routing: str = 'dynamic'
  routing_memory: str = 'full'
  routing_chunk: int = 8
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
    extra = {
        name: self.param(name, init, shape)
        for name, (shape, init) in routing.routing_params(
            self.routing, num_in, self.num_capsules, self.dim).items()}
    check_routing_memory(self.routing_memory, self.routing)
    if self.routing_memory == 'chunked':
      return routing.dynamic_routing_chunked(
          w, u, self.routing_iters, chunk_size=self.routing_chunk,
          return_couplings=return_couplings)
    route = functools.partial(routing.get_routing(self.routing),
                              num_iters=self.routing_iters,
                              return_couplings=return_couplings, **extra)
    return jax.vmap(route)(jnp.swapaxes(predictions(w, u), 1, 2))


@jax.custom_vjp
def predictions(w: jax.Array, u: jax.Array) -> jax.Array:
  """u_hat_ij = W_ij u_i for a batch, laid out output-major: `[B, J, I, D]`.

  `w: [I, J, D, K]`, `u: [B, I, K]`. Numerically
  `einsum('ijdk,bik->bjid', w, u)`. Route it per example with
  `jax.vmap(route)(jnp.swapaxes(u_hat, 1, 2))`: the routings of
  `capsjax.routing` contract u_hat output-major, so under jit the swap and
  their own transpose cancel and no copy of u_hat is made.

  The forward pass is K multiply-adds of `[D]`-vectors per (b, j, i), written
  as elementwise products so that XLA:CPU fuses them into one pass that
  writes u_hat once, in this layout (a matmul batched over i would write it
  input-major, and a transpose would copy it). The VJP is written out: both
  gradients are matmuls batched over the input capsules, on the cotangent
  transposed to input-major once, with the small operand transposed instead
  of the big one: `dW_i = (u_i^T @ du_hat_i)^T` (`[K, B] @ [B, JD]`); left to
  autodiff, XLA:CPU reduced the elementwise products slowly. Supports
  reverse-mode differentiation only.
  """
  return _predictions(w, u)


def _predictions(w, u):
  w_t = w.transpose(1, 0, 3, 2)  # [J, I, K, D]
  u_hat = 0
  for k in range(w.shape[-1]):
    u_hat = u_hat + u[:, None, :, k, None] * w_t[None, :, :, k, :]
  return u_hat


def _predictions_fwd(w, u):
  return _predictions(w, u), (w, u)


def _predictions_bwd(residuals, du_hat):
  w, u = residuals
  num_in, num_out, dim, dim_in = w.shape
  du_hat = du_hat.transpose(2, 0, 1, 3).reshape(
      num_in, u.shape[0], num_out * dim)  # [I, B, JD]
  w_t = w.reshape(num_in, num_out * dim, dim_in)  # [I, JD, K]
  du = lax.dot_general(du_hat, w_t, (((2,), (1,)), ((0,), (0,))))  # [I, B, K]
  u_kb = u.transpose(1, 2, 0)  # [I, K, B]
  dw = lax.dot_general(u_kb, du_hat, (((2,), (1,)), ((0,), (0,))))  # [I,K,JD]
  # The barrier keeps XLA from folding the transpose below into the matmul,
  # which would bring back the slow form.
  dw = lax.optimization_barrier(dw).transpose(0, 2, 1).reshape(w.shape)
  return dw.astype(w.dtype), du.transpose(1, 0, 2).astype(u.dtype)


predictions.defvjp(_predictions_fwd, _predictions_bwd)


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


# ------------------------------------------------- matrix capsules (EM) --
# Hinton, Sabour & Frosst (2018). Capsules are a 4x4 pose matrix and an
# activation: poses `[B, H, W, T, 4, 4]`, activations `[B, H, W, T]`.


class MatrixPrimaryCaps(nn.Module):
  """1x1 convolution -> `num_types` matrix capsules per position (Sec. 3).

  Poses are a linear map of the input channels, activations its logistic.
  Returns `(poses [B, H, W, T, 4, 4], activations [B, H, W, T])`.
  """
  num_types: int = 32

  @nn.compact
  def __call__(self, x: jax.Array):
    poses = nn.Dense(self.num_types * 16, name='pose')(x)
    activations = nn.sigmoid(nn.Dense(self.num_types, name='activation')(x))
    return poses.reshape(*x.shape[:-1], self.num_types, 4, 4), activations


def _em_route(votes, activations, beta_u, beta_a, num_iters,
              inverse_temperature, return_couplings):
  """`routing.em_routing` over the leading axes of `[..., n_in, n_out, 16]`."""
  lead = votes.shape[:-3]
  fn = functools.partial(
      routing.em_routing, num_iters=num_iters,
      inverse_temperatures=routing.em_inverse_temperatures(
          num_iters, inverse_temperature),
      return_couplings=return_couplings)
  out = jax.vmap(lambda v, a: fn(v, a, beta_u, beta_a))(
      votes.reshape(-1, *votes.shape[-3:]),
      activations.reshape(-1, activations.shape[-1]))
  return tuple(x.reshape(*lead, *x.shape[1:]) for x in out)


def _patches(x: jax.Array, kernel: int, stride: int) -> jax.Array:
  """`[B, H, W, ...]` -> `[B, H', W', kernel * kernel, ...]` VALID patches."""
  height = (x.shape[1] - kernel) // stride + 1
  width = (x.shape[2] - kernel) // stride + 1
  return jnp.stack(
      [x[:, ky:ky + stride * (height - 1) + 1:stride,
         kx:kx + stride * (width - 1) + 1:stride]
       for ky in range(kernel) for kx in range(kernel)], axis=3)


class ConvCaps(nn.Module):
  """A convolutional capsule layer with EM routing (ConvCaps1/2, Sec. 3).

  Each child capsule i in a `kernel x kernel` window votes `V_ij = M_i W_ij`
  for each of the `num_types` parent types j at that position, with one 4x4
  W per (kernel position, child type, parent type), and `routing.em_routing`
  routes every window on its own. Simplification shared with the common
  public reimplementations: a child in overlapping windows is routed
  separately in each (the paper normalises its assignments over all the
  parents it votes for).

  Returns `(poses, activations)`, and with `return_couplings` also the
  assignments `[B, H', W', r, kernel * kernel * T_in, num_types]`.
  """
  num_types: int = 32
  kernel_size: int = 3
  stride: int = 1
  routing_iters: int = 3
  inverse_temperature: float = 0.01

  @nn.compact
  def __call__(self, poses, activations, return_couplings: bool = False):
    k, t_in = self.kernel_size, poses.shape[3]
    poses = _patches(poses, k, self.stride)
    poses = poses.reshape(*poses.shape[:3], k * k * t_in, 4, 4)
    activations = _patches(activations, k, self.stride)
    activations = activations.reshape(*activations.shape[:3], k * k * t_in)
    w = self.param('kernel', nn.initializers.normal(0.5),
                   (k * k * t_in, self.num_types, 4, 4))
    beta_u = self.param('beta_u', nn.initializers.zeros, (self.num_types,))
    beta_a = self.param('beta_a', nn.initializers.zeros, (self.num_types,))
    votes = jnp.einsum('bhwixy,ijyz->bhwijxz', poses, w)
    votes = votes.reshape(*votes.shape[:5], 16)
    out = _em_route(votes, activations, beta_u, beta_a, self.routing_iters,
                    self.inverse_temperature, return_couplings)
    out_poses = out[0].reshape(*out[0].shape[:-1], 4, 4)
    return (out_poses,) + tuple(out[1:])


class ClassCaps(nn.Module):
  """Class capsules: shared W per capsule type, coordinate addition (Sec. 3).

  Every position's type-t capsule uses the same W_tj, and the scaled
  coordinates ((row + 0.5) / H, (col + 0.5) / W) of the position are added
  to the first two elements of the right-hand column of its vote matrix
  (pose entries [0, 3] and [1, 3]). Returns `(poses [B, K, 4, 4],
  activations [B, K])`, and with `return_couplings` also the assignments
  `[B, r, H * W * T, K]`.
  """
  num_classes: int = 5
  routing_iters: int = 3
  inverse_temperature: float = 0.01

  @nn.compact
  def __call__(self, poses, activations, return_couplings: bool = False):
    batch, height, width, t_in = poses.shape[:4]
    w = self.param('kernel', nn.initializers.normal(0.5),
                   (t_in, self.num_classes, 4, 4))
    beta_u = self.param('beta_u', nn.initializers.zeros, (self.num_classes,))
    beta_a = self.param('beta_a', nn.initializers.zeros, (self.num_classes,))
    votes = jnp.einsum('bhwtxy,tjyz->bhwtjxz', poses, w)
    rows = (jnp.arange(height, dtype=votes.dtype) + 0.5) / height
    cols = (jnp.arange(width, dtype=votes.dtype) + 0.5) / width
    votes = votes.at[..., 0, 3].add(rows[None, :, None, None, None])
    votes = votes.at[..., 1, 3].add(cols[None, None, :, None, None])
    votes = votes.reshape(batch, height * width * t_in, self.num_classes, 16)
    out = _em_route(votes, activations.reshape(batch, -1), beta_u, beta_a,
                    self.routing_iters, self.inverse_temperature,
                    return_couplings)
    out_poses = out[0].reshape(batch, self.num_classes, 4, 4)
    return (out_poses,) + tuple(out[1:])
