"""Models assembled from layers, and the registry that builds them by name.

  CapsNet       Sabour, Frosst & Hinton (2017), Section 4: 'capsnet'
  BaselineCNN   the same paper's CNN baseline, Section 5: 'baseline_cnn'

`create_model(config.model, image_shape, num_classes)` looks
`config.model.name` up in `MODELS`; a new model is one entry there, and the
trainer does not change.
"""
import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from capsjax import conv
from capsjax import errors
from capsjax import layers
from capsjax import losses
from capsjax import ops
from capsjax import routing


class CapsNetOutput(NamedTuple):
  """What `CapsNet` returns.

  capsules:        `[B, K, D]` DigitCaps vectors v_j.
  lengths:         `[B, K]` their lengths ||v_j||, the class scores.
  reconstructions: `[B, H, W, C]` decoder output, or None if not asked for.
  couplings:       `[B, r, num_primary, K]` coupling coefficients of every
                   routing iteration, or None if not asked for.
  decoded:         with `num_targets` 2, the `[B, 2]` classes whose capsules
                   the two reconstructions `[B, 2, H, W, C]` came from;
                   otherwise None.
  """
  capsules: jax.Array
  lengths: jax.Array
  reconstructions: Optional[jax.Array]
  couplings: Optional[jax.Array]
  decoded: Optional[jax.Array] = None

  @property
  def scores(self) -> jax.Array:
    """`[B, K]` class scores, the name every model's output shares."""
    return self.lengths


def primary_grid(input_shape: Sequence[int], conv1_kernel: int,
                 primary_kernel: int, primary_stride: int) -> tuple[int, int]:
  """The PrimaryCaps grid (H', W') for `input_shape` (H, W, C).

  Raises:
    errors.InputShapeError: with the arithmetic, if the grid would be empty.
  """
  if len(input_shape) != 3:
    raise errors.InputShapeError(
        f'input_shape must be (H, W, C), got {tuple(input_shape)}; give images '
        f'as [B, H, W, C].')
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
    routing: the routing algorithm, a name in `routing.ROUTINGS`.
    conv1_channels, conv1_kernel: the ReLU Conv1 (stride 1, VALID).
    primary_types, primary_dim: capsule types and their dimension.
    primary_kernel, primary_stride: PrimaryCaps convolution (VALID).
    digit_dim: D, DigitCaps dimension.
    decoder_hidden: widths of the decoder's ReLU layers.
    conv_impl: PrimaryCaps convolution, 'auto' | 'slices' | 'xla'.
    compute_dtype: PrimaryCaps matmul inputs, 'float32' | 'bfloat16' (see
      `layers.PrimaryCaps`); everything else, routing included, is float32.
    num_targets: digits per image: 1, or 2 for MultiMNIST, where each digit
      is reconstructed from its own masked capsule (Section 6).
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
  num_targets: int = 1

  def _check_images(self, images):
    primary_grid(self.input_shape, self.conv1_kernel, self.primary_kernel,
                 self.primary_stride)
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
        longest capsule (the two longest with `num_targets` 2; test time).
      train: part of every model's interface (`MODELS`); CapsNet has no
        dropout or batch statistics, so it changes nothing here.
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
                             self.routing_iters, self.routing,
                             name='digit_caps')(
                                 primary, return_couplings=return_couplings)
    couplings = None
    if return_couplings:
      digits, couplings = digits
    lengths = ops.safe_norm(digits)

    reconstructions = decoded = None
    if reconstruct or self.is_initializing():
      decoder = layers.Decoder(tuple(self.input_shape),
                               tuple(self.decoder_hidden), name='decoder')
      if self.num_targets == 1:
        select = jnp.argmax(lengths, axis=-1) if labels is None else labels
        reconstructions = decoder(digits, select.reshape(-1))
      else:
        decoded = (jax.lax.top_k(lengths, self.num_targets)[1]
                   if labels is None or labels.ndim == 1 else labels)
        # One decoder, called once per digit: the weights are shared.
        reconstructions = jnp.stack(
            [decoder(digits, decoded[:, t]) for t in range(self.num_targets)],
            axis=1)
    return CapsNetOutput(digits, lengths, reconstructions, couplings, decoded)


class BaselineOutput(NamedTuple):
  """What `BaselineCNN` returns: `scores: [B, K]` logits, no reconstructions."""
  scores: jax.Array
  reconstructions: Optional[jax.Array] = None


class BaselineCNN(nn.Module):
  """The paper's CNN baseline (Section 5), trained with cross-entropy.

  ReLU convolutions (stride 1, optionally each followed by 2x2 max pooling),
  ReLU fully connected layers, dropout, and a linear layer of `num_classes`
  logits. The defaults are the paper's MNIST baseline: 5x5 convolutions of
  256, 256 and 128 channels (SAME padding, no pooling: that is what gives the
  paper's 35.4M parameters), then 328 and 192 units.

  Attributes:
    num_classes: K, number of logits.
    input_shape: `(H, W, C)` of the images.
    channels: output channels of each convolution.
    kernel: square kernel size.
    padding: 'SAME' or 'VALID'.
    pool: 2x2 stride-2 max pooling (SAME) after each convolution.
    hidden: widths of the fully connected ReLU layers.
    dropout: dropout rate before the logits, active when `train`.
  """
  num_classes: int = 10
  input_shape: Sequence[int] = (28, 28, 1)
  channels: Sequence[int] = (256, 256, 128)
  kernel: int = 5
  padding: str = 'SAME'
  pool: bool = False
  hidden: Sequence[int] = (328, 192)
  dropout: float = 0.5

  @nn.compact
  def __call__(self, images: jax.Array, labels: Optional[jax.Array] = None, *,
               train: bool = False, reconstruct: bool = True) -> BaselineOutput:
    """`images: [B, H, W, C]` -> `BaselineOutput` with `scores: [B, K]`.

    `labels` and `reconstruct` are part of every model's interface and
    unused here. Dropout draws from the 'dropout' rng when `train`.
    """
    del labels, reconstruct
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.input_shape):
      raise errors.InputShapeError(
          f'images have shape {tuple(images.shape)} but the model was built '
          f'for [B, {", ".join(map(str, self.input_shape))}]; build '
          f'BaselineCNN with input_shape={tuple(images.shape[1:])}.')
    h = images
    for i, width in enumerate(self.channels):
      h = nn.relu(nn.Conv(width, (self.kernel, self.kernel),
                          padding=self.padding, name=f'conv{i + 1}')(h))
      if self.pool:
        h = nn.max_pool(h, (2, 2), strides=(2, 2), padding='SAME')
    h = h.reshape(h.shape[0], -1)
    for i, width in enumerate(self.hidden):
      h = nn.relu(nn.Dense(width, name=f'fc{i + 1}')(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return BaselineOutput(nn.Dense(self.num_classes, name='logits')(h))


# ------------------------------------------------------------------ registry --


def _int_fields(model_config, names) -> None:
  for name in names:
    value = model_config[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise errors.ConfigError(
          f'config.model.{name} must be an int >= 1, got {value!r}; set '
          f'--config.model.{name}=N.')


def _choice(model_config, name: str, allowed: Sequence[str]) -> None:
  if model_config[name] not in allowed:
    raise errors.ConfigError(
        f'config.model.{name} must be one of {", ".join(allowed)}, got '
        f'{model_config[name]!r}; set --config.model.{name}={allowed[0]}.')


def _capsnet(model_config, image_shape, num_classes) -> CapsNet:
  _int_fields(model_config, (
      'routing_iters', 'conv1_channels', 'conv1_kernel', 'primary_types',
      'primary_dim', 'primary_kernel', 'primary_stride', 'digit_dim'))
  if model_config.num_targets not in (1, 2) or isinstance(
      model_config.num_targets, bool):
    raise errors.ConfigError(
        f'config.model.num_targets must be 1 or 2 (digits per image), got '
        f'{model_config.num_targets!r}; set --config.model.num_targets=1.')
  _choice(model_config, 'routing', tuple(routing.ROUTINGS))
  _choice(model_config, 'conv_impl', conv.CONV_IMPLS)
  _choice(model_config, 'compute_dtype', conv.COMPUTE_DTYPES)
  hidden = tuple(model_config.decoder_hidden)
  if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1
             for w in hidden):
    raise errors.ConfigError(
        f'config.model.decoder_hidden must be ints >= 1, got {hidden!r}; set '
        f"--config.model.decoder_hidden='(512, 1024)'.")
  model = CapsNet(
      num_classes=num_classes,
      input_shape=tuple(image_shape or (1, 1, 1)),
      routing_iters=model_config.routing_iters,
      routing=model_config.routing,
      conv1_channels=model_config.conv1_channels,
      conv1_kernel=model_config.conv1_kernel,
      primary_types=model_config.primary_types,
      primary_dim=model_config.primary_dim,
      primary_kernel=model_config.primary_kernel,
      primary_stride=model_config.primary_stride,
      digit_dim=model_config.digit_dim,
      decoder_hidden=hidden,
      conv_impl=model_config.conv_impl,
      compute_dtype=model_config.compute_dtype,
      num_targets=model_config.num_targets)
  if image_shape is not None:
    primary_grid(model.input_shape, model.conv1_kernel, model.primary_kernel,
                 model.primary_stride)
  return model


def _widths(model_config, name: str, example: str, allow_empty: bool):
  widths = model_config[name]
  if not (isinstance(widths, (tuple, list)) and (widths or allow_empty)
          and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1
                  for w in widths)):
    raise errors.ConfigError(
        f'config.model.{name} must be a tuple of ints >= 1, got {widths!r}; '
        f"set --config.model.{name}='{example}'.")
  return tuple(widths)


def _baseline_cnn(model_config, image_shape, num_classes) -> BaselineCNN:
  channels = _widths(model_config, 'cnn_channels', '(256, 256, 128)', False)
  hidden = _widths(model_config, 'cnn_hidden', '(328, 192)', True)
  _int_fields(model_config, ('cnn_kernel',))
  _choice(model_config, 'cnn_padding', ('SAME', 'VALID'))
  if not isinstance(model_config.cnn_pool, bool):
    raise errors.ConfigError(
        f'config.model.cnn_pool must be True or False, got '
        f'{model_config.cnn_pool!r}; set --config.model.cnn_pool=False.')
  rate = model_config.cnn_dropout
  if (isinstance(rate, bool) or not isinstance(rate, (int, float))
      or not 0 <= rate < 1):
    raise errors.ConfigError(
        f'config.model.cnn_dropout must be a rate in [0, 1), got {rate!r}; '
        f'set --config.model.cnn_dropout=0.5.')
  model = BaselineCNN(
      num_classes=num_classes, input_shape=tuple(image_shape or (1, 1, 1)),
      channels=channels, kernel=model_config.cnn_kernel,
      padding=model_config.cnn_padding, pool=model_config.cnn_pool,
      hidden=hidden, dropout=float(rate))
  if image_shape is not None and model.padding == 'VALID':
    size = min(image_shape[:2])
    for _ in channels:
      size = size - model.kernel + 1
      if model.pool:
        size = -(-size // 2)
    if size < 1:
      raise errors.InputShapeError(
          f'{image_shape[0]}x{image_shape[1]} images are too small for '
          f'{len(channels)} VALID {model.kernel}x{model.kernel} convolutions; '
          f"set --config.model.cnn_padding='SAME'.")
  return model


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One entry of `MODELS`.

  Attributes:
    build: `build(model_config, image_shape, num_classes) -> nn.Module`;
      checks the model's config fields (errors.ConfigError naming the field)
      and, when image_shape is given, that the images fit
      (errors.InputShapeError). The module has `input_shape` and
      `num_classes` attributes and is called as
      `model.apply(variables, images, labels=None, *, train=False,
      reconstruct=True, rngs=...)` and returns a NamedTuple with `scores:
      [B, K]` (higher is more likely) and `reconstructions` (or None).
    objective: `objective(outputs, batch, loss_config, step) -> {name: [B]}`
      with the total under 'loss' (see `losses`).
  """
  build: Callable[[Any, Optional[Sequence[int]], int], nn.Module]
  objective: Callable[..., dict]


# config.model.name -> its ModelSpec.
MODELS: dict[str, ModelSpec] = {
    'capsnet': ModelSpec(_capsnet, losses.margin_objective),
    'baseline_cnn': ModelSpec(_baseline_cnn, losses.cross_entropy_objective),
}


def spec(model_config) -> ModelSpec:
  """`MODELS[model_config.name]`, or a ConfigError naming the choices."""
  name = model_config.name
  if name not in MODELS:
    raise errors.ConfigError(
        f'unknown model {name!r}; set --config.model.name to one of '
        f'{", ".join(MODELS)}.')
  return MODELS[name]


def create_model(model_config, image_shape: Optional[Sequence[int]],
                 num_classes: int) -> nn.Module:
  """The model `model_config.name` names, built for `(H, W, C)` images.

  Args:
    model_config: `config.model` (read by attribute and item access).
    image_shape: `(H, W, C)`; None checks only the config fields (the model
      it returns is then not for use).
    num_classes: number of classes.

  Raises:
    errors.ConfigError: an unknown name or a bad field, named in the message.
    errors.InputShapeError: the images do not fit the model.
  """
  return spec(model_config).build(model_config, image_shape, num_classes)
