"""CapsNet (Sabour, Frosst & Hinton, 2017, Section 4), assembled from layers."""
from typing import NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from capsjax import layers
from capsjax import ops


class InputShapeError(ValueError):
  """The images do not fit the model's convolutions or its input_shape."""


class CapsNetOutput(NamedTuple):
  """What `CapsNet` returns.

  capsules:        `[B, K, D]` DigitCaps vectors v_j.
  lengths:         `[B, K]` their lengths ||v_j||, the class scores.
  reconstructions: `[B, H, W, C]` decoder output, or None if not asked for.
  couplings:       `[B, r, num_primary, K]` coupling coefficients of every
                   routing iteration, or None if not asked for.
  """
  capsules: jax.Array
  lengths: jax.Array
  reconstructions: Optional[jax.Array]
  couplings: Optional[jax.Array]


def primary_grid(input_shape: Sequence[int], conv1_kernel: int,
                 primary_kernel: int, primary_stride: int) -> tuple[int, int]:
  """The PrimaryCaps grid (H', W') for `input_shape` (H, W, C).

  Raises:
    InputShapeError: with the arithmetic, if the grid would be empty.
  """
  if len(input_shape) != 3:
    raise InputShapeError(
        f'input_shape must be (H, W, C), got {tuple(input_shape)}; give images '
        f'as [B, H, W, C].')
  grid = []
  for axis, size in zip('HW', input_shape[:2]):
    conv1 = layers.conv_output_size(size, conv1_kernel, 1)
    primary = layers.conv_output_size(conv1, primary_kernel, primary_stride)
    if conv1 <= 0 or primary <= 0:
      minimum = conv1_kernel + primary_kernel - 1
      raise InputShapeError(
          f'input {axis}={size} is too small for the convolutions: Conv1 '
          f'{conv1_kernel}x{conv1_kernel} VALID gives {size}-{conv1_kernel}+1='
          f'{conv1}, PrimaryCaps {primary_kernel}x{primary_kernel} stride '
          f'{primary_stride} VALID gives ({conv1}-{primary_kernel})//'
          f'{primary_stride}+1={primary} <= 0; use images of at least '
          f'{minimum}x{minimum} or smaller kernels.')
    grid.append(primary)
  return tuple(grid)


class CapsNet(nn.Module):
  """The paper's three-layer CapsNet with its reconstruction decoder.

  ReLU Conv1 -> PrimaryCaps (squashed) -> DigitCaps (dynamic routing) ->
  lengths as class scores; the decoder reconstructs the image from the DigitCaps
  masked to one class. The defaults are the paper's MNIST network (28x28x1:
  Conv1 256@20x20, 32x6x6 = 1152 8D primary capsules, 10 16D digit capsules).

  Attributes:
    num_classes: K, number of digit capsules.
    input_shape: `(H, W, C)` of the images.
    routing_iters: routing iterations r between PrimaryCaps and DigitCaps.
    conv1_channels, conv1_kernel: the ReLU Conv1 (stride 1, VALID).
    primary_types, primary_dim: capsule types and their dimension.
    primary_kernel, primary_stride: PrimaryCaps convolution (VALID).
    digit_dim: D, DigitCaps dimension.
    decoder_hidden: widths of the decoder's ReLU layers.
    conv_impl: PrimaryCaps convolution, 'auto' | 'slices' | 'xla'.
    compute_dtype: PrimaryCaps matmul inputs, 'float32' | 'bfloat16' (see
      `layers.PrimaryCaps`); everything else, routing included, is float32.
  """
  num_classes: int = 10
  input_shape: Sequence[int] = (28, 28, 1)
  routing_iters: int = 3
  conv1_channels: int = 256
  conv1_kernel: int = 9
  primary_types: int = 32
  primary_dim: int = 8
  primary_kernel: int = 9
  primary_stride: int = 2
  digit_dim: int = 16
  decoder_hidden: Sequence[int] = (512, 1024)
  conv_impl: str = 'auto'
  compute_dtype: str = 'float32'

  def _check_images(self, images):
    primary_grid(self.input_shape, self.conv1_kernel, self.primary_kernel,
                 self.primary_stride)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.input_shape):
      raise InputShapeError(
          f'images have shape {tuple(images.shape)} but the model was built '
          f'for [B, {", ".join(map(str, self.input_shape))}]; build CapsNet '
          f'with input_shape={tuple(images.shape[1:])} or resize the images.')

  @nn.compact
  def __call__(self, images: jax.Array, labels: Optional[jax.Array] = None, *,
               reconstruct: bool = True,
               return_couplings: bool = False) -> CapsNetOutput:
    """Classifies and reconstructs `images: [B, H, W, C]` in [0, 1].

    Args:
      images: `[B, H, W, C]`.
      labels: `[B]` int. If given, the decoder sees the capsule of the true
        label (training); if None, the longest capsule (test time).
      reconstruct: run the decoder.
      return_couplings: also return the routing coupling coefficients.

    Returns:
      A `CapsNetOutput`.
    """
    self._check_images(images)
    h = nn.relu(nn.Conv(self.conv1_channels,
                        (self.conv1_kernel, self.conv1_kernel),
                        padding='VALID', name='conv1')(images))
    primary = layers.PrimaryCaps(
        self.primary_types, self.primary_dim, self.primary_kernel,
        self.primary_stride, self.conv_impl, self.compute_dtype,
        name='primary_caps')(h)
    digits = layers.Capsules(self.num_classes, self.digit_dim,
                             self.routing_iters, name='digit_caps')(
                                 primary, return_couplings=return_couplings)
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
    return CapsNetOutput(digits, lengths, reconstructions, couplings)
