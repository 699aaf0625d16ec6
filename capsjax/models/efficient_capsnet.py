"""Efficient-CapsNet, Mazzia, Salvetti & Chiaberge (2021):
model 'efficient_capsnet'.

`FIELDS` declares the `config.model` fields it is built from (the attributes
of `EfficientCapsNet` of the same names) and their checks; `check_fields`
holds its rules across fields.
"""
import functools
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from capsjax import checks
from capsjax import conv
from capsjax import errors
from capsjax import layers
from capsjax import ops
from capsjax import routing
from capsjax.models import capsnet


class EfficientCapsNet(nn.Module):
  """Efficient-CapsNet (Mazzia et al. 2021, Sec. 3; the authors' MNIST graph).

  Four ReLU convolutions, each followed by batch norm -> depthwise PrimaryCaps
  (one VALID depthwise convolution whose channels are grouped into capsules,
  Efficient-CapsNet's squash) -> fully connected capsules with self-attention
  routing -> lengths as class scores; the CapsNet decoder reconstructs from
  the masked capsules. The defaults are the MNIST network of 161,824
  trainable parameters without the decoder: 28x28 -> 24 -> 22 -> 20 -> 9x9
  (stride 2) -> 128 channels -> 1x1 depthwise 9x9 -> 16 primary capsules of
  8D -> 10 capsules of 16D.

  Attributes:
    num_classes: K, number of class capsules.
    input_shape: `(H, W, C)` of the images.
    routing: a name in `routing.ROUTINGS` ('self_attention' in the paper).
    routing_iters: passed to the routing (self-attention has none).
    conv_channels, conv_kernels, conv_strides: the ReLU convolutions (VALID).
    primary_kernel: the depthwise PrimaryCaps kernel side (stride 1, VALID).
    primary_dim: primary capsule dimension; divides conv_channels[-1].
    digit_dim: D, class capsule dimension.
    decoder_hidden: widths of the decoder's ReLU layers.
    batch_norm_momentum, batch_norm_epsilon: Keras's defaults (0.99, 1e-3),
      which the authors use.
  """
  num_classes: int = 10
  input_shape: Sequence[int] = (28, 28, 1)
  routing: str = 'self_attention'
  routing_iters: int = 1
  conv_channels: Sequence[int] = (32, 64, 64, 128)
  conv_kernels: Sequence[int] = (5, 3, 3, 3)
  conv_strides: Sequence[int] = (1, 1, 1, 2)
  primary_kernel: int = 9
  primary_dim: int = 8
  digit_dim: int = 16
  decoder_hidden: Sequence[int] = (512, 1024)
  batch_norm_momentum: float = 0.99
  batch_norm_epsilon: float = 1e-3

  def capsule_grid(self) -> tuple[int, int]:
    """The (H', W') grid of the primary capsules routed to the class layer.

    Raises:
      errors.InputShapeError: `input_shape` is too small (see efficient_grid).
    """
    return efficient_grid(self.input_shape, self.conv_kernels,
                          self.conv_strides, self.primary_kernel)

  def check_input_shape(self) -> None:
    """Raises errors.InputShapeError if `input_shape` does not fit."""
    self.capsule_grid()

  @nn.compact
  def __call__(self, images: jax.Array, labels: Optional[jax.Array] = None, *,
               train: bool = False, reconstruct: bool = True,
               return_couplings: bool = False) -> capsnet.CapsNetOutput:
    """Classifies and reconstructs `images: [B, H, W, C]` in [0, 1].

    Args:
      images: `[B, H, W, C]`.
      labels: `[B]` int; the decoder sees this class's capsule (training),
        or the longest one if None.
      train: batch norm normalises with the batch's statistics and updates
        the running averages (apply with `mutable=['batch_stats']`); False
        uses the running averages.
      reconstruct: run the decoder.
      return_couplings: also return the routing coefficients.

    Returns:
      A `capsnet.CapsNetOutput`.
    """
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.input_shape):
      raise errors.InputShapeError(
          f'images have shape {tuple(images.shape)} but the model was built '
          f'for [B, {", ".join(map(str, self.input_shape))}]; build '
          f'EfficientCapsNet with input_shape={tuple(images.shape[1:])} or '
          f'resize the images.')
    he_normal = nn.initializers.he_normal()
    h = images
    for k, (channels, kernel, stride) in enumerate(zip(
        self.conv_channels, self.conv_kernels, self.conv_strides)):
      h = nn.relu(nn.Conv(channels, (kernel, kernel), (stride, stride),
                          padding='VALID', kernel_init=he_normal,
                          name=f'conv{k + 1}')(h))
      # After the ReLU, as in the authors' graph.
      h = nn.BatchNorm(use_running_average=not train,
                       momentum=self.batch_norm_momentum,
                       epsilon=self.batch_norm_epsilon, name=f'bn{k + 1}')(h)
    channels = h.shape[-1]
    h = nn.Conv(channels, (self.primary_kernel,) * 2, padding='VALID',
                feature_group_count=channels, name='primary_caps')(h)
    # Channel t * dim + d of every position is component d of capsule t.
    primary = ops.efficient_squash(
        h.reshape(h.shape[0], -1, self.primary_dim))
    # Keras's he_normal of the authors' W [K, num_in, dim_in, D]: fan-in
    # K * num_in * dim_in, which these axes of ours reproduce.
    digits = layers.Capsules(
        self.num_classes, self.digit_dim, self.routing_iters, self.routing,
        kernel_init=nn.initializers.he_normal(in_axis=-1, out_axis=-2),
        name='digit_caps')(primary, return_couplings=return_couplings)
    couplings = None
    if return_couplings:
      digits, couplings = digits
    lengths = ops.safe_norm(digits)
    reconstructions = None
    if reconstruct or self.is_initializing():
      select = jnp.argmax(lengths, axis=-1) if labels is None else labels
      reconstructions = layers.Decoder(
          tuple(self.input_shape), tuple(self.decoder_hidden),
          name='decoder')(digits, select)
    return capsnet.CapsNetOutput(digits, lengths, reconstructions, couplings)


def efficient_grid(input_shape: Sequence[int], kernels: Sequence[int],
                   strides: Sequence[int], primary_kernel: int
                   ) -> tuple[int, int]:
  """EfficientCapsNet's PrimaryCaps grid (H', W') for `input_shape`.

  Raises:
    errors.InputShapeError: with the arithmetic, if a size drops to 0.
  """
  grid = []
  for axis, size in zip('HW', input_shape[:2]):
    sizes = [size]
    for kernel, stride in (*zip(kernels, strides), (primary_kernel, 1)):
      sizes.append(conv.conv_output_size(sizes[-1], kernel, stride))
    if min(sizes) <= 0:
      raise errors.InputShapeError(
          f'input {axis}={size} is too small for EfficientCapsNet\'s VALID '
          f'convolutions (sizes {" -> ".join(map(str, sizes))}); use larger '
          f'images or smaller --config.model.conv_kernels / primary_kernel.')
    grid.append(sizes[-1])
  return tuple(grid)


# config.model field -> its check, `check(value, 'model.FIELD') -> value`.
FIELDS = {
    'routing': functools.partial(checks.choice, allowed=routing.ROUTINGS),
    'routing_iters': checks.int_at_least,
    'conv_channels': functools.partial(checks.int_tuple,
                                       example='(32, 64, 64, 128)'),
    'conv_kernels': functools.partial(checks.int_tuple, example='(5, 3, 3, 3)'),
    'conv_strides': functools.partial(checks.int_tuple, example='(1, 1, 1, 2)'),
    'primary_kernel': checks.int_at_least,
    'primary_dim': checks.int_at_least,
    'digit_dim': checks.int_at_least,
    'decoder_hidden': functools.partial(checks.int_tuple,
                                        example='(512, 1024)'),
}


def check_fields(fields: dict) -> None:
  """The rules across `FIELDS` (checked values).

  Raises:
    errors.ConfigError: conv_kernels or conv_strides of another length than
      conv_channels, or a primary_dim that does not divide the last channels.
  """
  channels = fields['conv_channels']
  for name in ('conv_kernels', 'conv_strides'):
    checks.int_tuple(fields[name], f'model.{name}', length=len(channels),
                     example=', '.join(['3'] * len(channels)).join('()'))
  if channels[-1] % fields['primary_dim']:
    raise errors.ConfigError(
        f'config.model.primary_dim {fields["primary_dim"]} must divide the '
        f'last of conv_channels ({channels[-1]}), whose channels it groups '
        f'into capsules; set --config.model.primary_dim=8.')
