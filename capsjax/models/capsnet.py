"""CapsNet, Sabour, Frosst & Hinton (2017), Section 4: model 'capsnet'.

`FIELDS` declares the `config.model` fields it is built from (the attributes
of `CapsNet` of the same names) and their checks; `check_fields` holds its
rules across fields. `capsjax.models.create_model` builds it from them.
"""
import functools
from typing import NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from capsjax import checks
from capsjax import conv
from capsjax import errors
from capsjax import layers
from capsjax import ops
from capsjax import routing


class CapsNetOutput(NamedTuple):
  """What `CapsNet` returns.

  capsules:        `[B, K, D]` DigitCaps vectors v_j.
  lengths:         `[B, K]` their lengths ||v_j||, the class scores unless
                   the model has a linear readout.
  reconstructions: `[B, H, W, C]` decoder output, or None if not asked for.
  couplings:       `[B, r, num_primary, K]` coupling coefficients of every
                   routing iteration, or None if not asked for.
  decoded:         with `num_targets` 2, the `[B, 2]` classes whose capsules
                   the two reconstructions `[B, 2, H, W, C]` came from;
                   otherwise None.
  logits:          with `readout` 'linear', the `[B, K]` class logits, which
                   are then the class scores; otherwise None.
  """
  capsules: jax.Array
  lengths: jax.Array
  reconstructions: Optional[jax.Array]
  couplings: Optional[jax.Array]
  decoded: Optional[jax.Array] = None
  logits: Optional[jax.Array] = None

  @property
  def scores(self) -> jax.Array:
    """`[B, K]` class scores, the name every model's output shares: the
    logits of a linear readout, else the capsule lengths."""
    return self.lengths if self.logits is None else self.logits


def primary_grid(input_shape: Sequence[int], conv1_kernel: int,
                 primary_kernel: int, primary_stride: int) -> tuple[int, int]:
  """The PrimaryCaps grid (H', W') for `input_shape` (H, W, C).

  Raises:
    errors.InputShapeError: with the arithmetic, if the grid would be empty.
  """
  checks.image_shape(input_shape)
  grid = []
  for axis, size in zip('HW', input_shape[:2]):
    conv1 = conv.conv_output_size(size, conv1_kernel, 1)
    primary = conv.conv_output_size(conv1, primary_kernel, primary_stride)
    if conv1 <= 0 or primary <= 0:
      minimum = conv1_kernel + primary_kernel - 1
      raise errors.InputShapeError(
          f'input {axis}={size} is too small for the convolutions: Conv1 '
          f'{conv1_kernel}x{conv1_kernel} VALID gives {size}-{conv1_kernel}+1='
          f'{conv1}, PrimaryCaps {primary_kernel}x{primary_kernel} stride '
          f'{primary_stride} VALID gives ({conv1}-{primary_kernel})//'
          f'{primary_stride}+1={primary} <= 0; use images of at least '
          f'{minimum}x{minimum} or smaller kernels (--config.model.'
          f'conv1_kernel, --config.model.primary_kernel).')
    grid.append(primary)
  return tuple(grid)


class CapsNet(nn.Module):
  """The paper's three-layer CapsNet with its reconstruction decoder.

  ReLU Conv1 -> PrimaryCaps (squashed) -> DigitCaps (dynamic routing) ->
  lengths as class scores (or a linear readout, `readout`); the decoder
  reconstructs the image from the DigitCaps masked to one class. The defaults are the paper's MNIST network (28x28x1:
  Conv1 256@20x20, 32x6x6 = 1152 8D primary capsules, 10 16D digit capsules).

  Attributes:
    num_classes: K, number of digit capsules.
    input_shape: `(H, W, C)` of the images.
    routing_iters: routing iterations r between PrimaryCaps and DigitCaps.
    routing: the routing algorithm, a name in `routing.ROUTINGS`.
    conv1_channels, conv1_kernel: the ReLU Conv1 (stride 1, VALID).
    primary_types, primary_dim: capsule types and their dimension.
    primary_kernel, primary_stride: PrimaryCaps convolution (VALID).
    digit_dim: D, DigitCaps dimension.
    decoder_hidden: widths of the decoder's ReLU layers.
    conv_impl: Conv1 and PrimaryCaps convolutions, 'auto' | 'slices' |
      'xla' ('auto': the matmul forms of `layers.Conv` and
      `layers.PrimaryCaps` on CPU, XLA's convolution on GPU/TPU).
    compute_dtype: PrimaryCaps matmul inputs, 'float32' | 'bfloat16' |
      'auto' (see `layers.PrimaryCaps`, `conv.resolve_compute_dtype`);
      everything else, routing included, is float32.
    routing_memory: 'full' | 'chunked', see `layers.Capsules`.
    routing_chunk: input capsules per chunk for routing_memory='chunked'.
    num_targets: digits per image: 1, or 2 for MultiMNIST, where each digit
      is reconstructed from its own masked capsule (Section 6).
    readout: how class scores are read from the DigitCaps: 'length' (the
      paper: ||v_j||, trained with the margin loss) or 'linear' (Tsai et al.
      2020: one linear layer `[D] -> 1` shared by the class capsules gives
      each class a logit, trained with cross-entropy). Inverted dot-product
      routing ends in a layer norm that gives every capsule the same length
      before its shared scale and offset, so it needs 'linear'.
  """
  num_classes: int = 10
  input_shape: Sequence[int] = (28, 28, 1)
  routing_iters: int = 3
  routing: str = 'dynamic'
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
  routing_memory: str = 'full'
  routing_chunk: int = 8
  num_targets: int = 1
  readout: str = 'length'

  def capsule_grid(self) -> tuple[int, int]:
    """The (H', W') grid of the primary capsules routed to DigitCaps.

    Raises:
      errors.InputShapeError: `input_shape` is too small (see primary_grid).
    """
    return primary_grid(self.input_shape, self.conv1_kernel,
                        self.primary_kernel, self.primary_stride)

  def check_input_shape(self) -> None:
    """Raises errors.InputShapeError if `input_shape` does not fit."""
    self.capsule_grid()

  def _check_images(self, images):
    self.check_input_shape()
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.input_shape):
      raise errors.InputShapeError(
          f'images have shape {tuple(images.shape)} but the model was built '
          f'for [B, {", ".join(map(str, self.input_shape))}]; build CapsNet '
          f'with input_shape={tuple(images.shape[1:])} or resize the images.')

  @nn.compact
  def __call__(self, images: jax.Array, labels: Optional[jax.Array] = None, *,
               train: bool = False, reconstruct: bool = True,
               return_couplings: bool = False) -> CapsNetOutput:
    """Classifies and reconstructs `images: [B, H, W, C]` in [0, 1].

    Args:
      images: `[B, H, W, C]`.
      labels: `[B]` int (`[B, 2]` with `num_targets` 2). If given, the
        decoder sees the capsule of the true label (training); if None, the
        highest-scoring capsule (the two highest with `num_targets` 2; test
        time).
      train: part of every model's interface (`MODELS`); CapsNet has no
        dropout or batch statistics, so it changes nothing here.
      reconstruct: run the decoder.
      return_couplings: also return the routing coupling coefficients.

    Returns:
      A `CapsNetOutput`.
    """
    self._check_images(images)
    h = nn.relu(layers.Conv(self.conv1_channels, self.conv1_kernel,
                            self.conv_impl, name='conv1')(images))
    primary = layers.PrimaryCaps(
        self.primary_types, self.primary_dim, self.primary_kernel,
        self.primary_stride, self.conv_impl, self.compute_dtype,
        name='primary_caps')(h)
    digits = layers.Capsules(self.num_classes, self.digit_dim,
                             self.routing_iters, self.routing,
                             routing_memory=self.routing_memory,
                             routing_chunk=self.routing_chunk,
                             name='digit_caps')(
                                 primary, return_couplings=return_couplings)
    couplings = None
    if return_couplings:
      digits, couplings = digits
    lengths = ops.safe_norm(digits)
    logits = None
    if self.readout == 'linear':
      logits = nn.Dense(1, name='readout')(digits)[..., 0]
    scores = lengths if logits is None else logits

    reconstructions = decoded = None
    if reconstruct or self.is_initializing():
      decoder = layers.Decoder(tuple(self.input_shape),
                               tuple(self.decoder_hidden), name='decoder')
      if self.num_targets == 1:
        select = jnp.argmax(scores, axis=-1) if labels is None else labels
        reconstructions = decoder(digits, select.reshape(-1))
      else:
        decoded = (jax.lax.top_k(scores, self.num_targets)[1]
                   if labels is None or labels.ndim == 1 else labels)
        # One decoder, called once per digit: the weights are shared.
        reconstructions = jnp.stack(
            [decoder(digits, decoded[:, t]) for t in range(self.num_targets)],
            axis=1)
    return CapsNetOutput(digits, lengths, reconstructions, couplings, decoded,
                         logits)


_INT = checks.int_at_least
READOUTS = ('length', 'linear')

# config.model field -> its check, `check(value, 'model.FIELD') -> value`.
FIELDS = {
    'routing_iters': _INT,
    'routing': functools.partial(checks.choice, allowed=routing.ROUTINGS),
    'conv1_channels': _INT,
    'conv1_kernel': _INT,
    'primary_types': _INT,
    'primary_dim': _INT,
    'primary_kernel': _INT,
    'primary_stride': _INT,
    'digit_dim': _INT,
    'decoder_hidden': functools.partial(checks.int_tuple,
                                        example='(512, 1024)'),
    'conv_impl': functools.partial(checks.choice, allowed=conv.CONV_IMPLS),
    'compute_dtype': functools.partial(checks.choice,
                                       allowed=conv.COMPUTE_DTYPES),
    'routing_memory': functools.partial(checks.choice,
                                        allowed=layers.ROUTING_MEMORY),
    'routing_chunk': _INT,
    'num_targets': functools.partial(checks.choice, allowed=(1, 2),
                                     why=' (digits per image)'),
    'readout': functools.partial(checks.choice, allowed=READOUTS),
}


def check_fields(fields: dict) -> None:
  """The rules across `FIELDS` (checked values).

  Raises:
    errors.ConfigError: routing_memory='chunked' without dynamic routing.
  """
  layers.check_routing_memory(fields['routing_memory'], fields['routing'])
