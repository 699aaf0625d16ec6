"""Models assembled from layers, and the registry that builds them by name.

  CapsNet            Sabour, Frosst & Hinton (2017), Section 4: 'capsnet'
  BaselineCNN        the same paper's CNN baseline, Section 5: 'baseline_cnn'
  EfficientCapsNet   Mazzia, Salvetti & Chiaberge (2021): 'efficient_capsnet'
  MatrixCapsNetEM    Hinton, Sabour & Frosst (2018), Section 3:
                     'matrix_capsnet_em'

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
    h = nn.relu(layers.Conv(self.conv1_channels, self.conv1_kernel,
                            self.conv_impl, name='conv1')(images))
    primary = layers.PrimaryCaps(
        self.primary_types, self.primary_dim, self.primary_kernel,
        self.primary_stride, self.conv_impl, self.compute_dtype,
        name='primary_caps')(h)
    digits = layers.Capsules(self.num_classes, self.digit_dim,
                             self.routing_iters, self.routing,
                             self.routing_memory, self.routing_chunk,
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


class MatrixCapsOutput(NamedTuple):
  """What `MatrixCapsNetEM` returns.

  activations:     `[B, K]` class capsule activations, the class scores.
  poses:           `[B, K, 4, 4]` class capsule poses.
  reconstructions: always None (the model has no decoder).
  couplings:       `[B, r, H * W * D, K]` the class layer's EM assignments R
                   of every iteration, or None if not asked for.
  """
  activations: jax.Array
  poses: jax.Array
  reconstructions: Optional[jax.Array]
  couplings: Optional[jax.Array]

  @property
  def scores(self) -> jax.Array:
    """`[B, K]` class scores, the name every model's output shares."""
    return self.activations


def matrix_grids(input_shape: Sequence[int], conv1_kernel: int,
                 conv1_stride: int, caps_kernel: int) -> list[tuple[int, int]]:
  """The (H, W) grids of Conv1, ConvCaps1 (stride 2) and ConvCaps2 (stride 1).

  Raises:
    errors.InputShapeError: with the sizes, if a grid would be empty.
  """
  if len(input_shape) != 3:
    raise errors.InputShapeError(
        f'input_shape must be (H, W, C), got {tuple(input_shape)}; give images '
        f'as [B, H, W, C].')
  size = tuple(input_shape[:2])
  grids = []
  for kernel, stride in ((conv1_kernel, conv1_stride), (caps_kernel, 2),
                         (caps_kernel, 1)):
    size = tuple(conv.conv_output_size(s, kernel, stride) for s in size)
    grids.append(size)
    if min(size) <= 0:
      raise errors.InputShapeError(
          f'images of {input_shape[0]}x{input_shape[1]} are too small for '
          f'the matrix capsule network (grids {grids}); use larger images '
          f'(--config.dataset.crop_size) or smaller kernels.')
  return grids


class MatrixCapsNetEM(nn.Module):
  """Matrix capsules with EM routing: the paper's smallNORB network.

  ReLU Conv1 (5x5, stride 2, A channels) -> PrimaryCaps (1x1, B types of 4x4
  pose + activation) -> ConvCaps1 (K=3, stride 2, C types) -> ConvCaps2
  (K=3, stride 1, D types) -> class capsules (shared W per type, coordinate
  addition), EM routing (`routing.em_routing`) between capsule layers; the
  class capsules' activations are the scores. A=B=C=D=32 on 32x32x1 images
  with 5 classes is the paper's small model: 316,394 parameters (the paper
  says 310K). All convolutions are VALID (the paper's Figure 1: 32 -> 14
  -> 6 -> 4).

  Attributes:
    num_classes: class capsules.
    input_shape: `(H, W, C)` of the images.
    conv1_channels, conv1_kernel, conv1_stride: A and the ReLU Conv1.
    primary_types: B.
    convcaps1_types, convcaps2_types: C and D.
    caps_kernel: K of both ConvCaps layers.
    routing_iters: EM iterations in every capsule layer (3 in the paper).
    inverse_temperature: final lambda of `routing.em_inverse_temperatures`.
  """
  num_classes: int = 5
  input_shape: Sequence[int] = (32, 32, 1)
  conv1_channels: int = 32
  conv1_kernel: int = 5
  conv1_stride: int = 2
  primary_types: int = 32
  convcaps1_types: int = 32
  convcaps2_types: int = 32
  caps_kernel: int = 3
  routing_iters: int = 3
  inverse_temperature: float = 0.01

  @nn.compact
  def __call__(self, images: jax.Array, labels: Optional[jax.Array] = None, *,
               train: bool = False, reconstruct: bool = True,
               return_couplings: bool = False) -> MatrixCapsOutput:
    """Classifies `images: [B, H, W, C]`.

    `labels`, `train` and `reconstruct` are part of every model's interface
    (`MODELS`) and change nothing here: no decoder, dropout or batch
    statistics. With `return_couplings` the class layer's assignments are
    returned too.
    """
    del labels, train, reconstruct
    matrix_grids(self.input_shape, self.conv1_kernel, self.conv1_stride,
                 self.caps_kernel)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.input_shape):
      raise errors.InputShapeError(
          f'images have shape {tuple(images.shape)} but the model was built '
          f'for [B, {", ".join(map(str, self.input_shape))}]; build it with '
          f'input_shape={tuple(images.shape[1:])} or crop the images.')
    h = nn.relu(nn.Conv(self.conv1_channels,
                        (self.conv1_kernel, self.conv1_kernel),
                        strides=self.conv1_stride, padding='VALID',
                        name='conv1')(images))
    poses, acts = layers.MatrixPrimaryCaps(self.primary_types,
                                           name='primary_caps')(h)
    routing_args = dict(routing_iters=self.routing_iters,
                        inverse_temperature=self.inverse_temperature)
    poses, acts = layers.ConvCaps(self.convcaps1_types, self.caps_kernel, 2,
                                  name='conv_caps1', **routing_args)(
                                      poses, acts)
    poses, acts = layers.ConvCaps(self.convcaps2_types, self.caps_kernel, 1,
                                  name='conv_caps2', **routing_args)(
                                      poses, acts)
    out = layers.ClassCaps(self.num_classes, name='class_caps',
                           **routing_args)(poses, acts, return_couplings)
    couplings = out[2] if return_couplings else None
    return MatrixCapsOutput(out[1], out[0], None, couplings)


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

  @nn.compact
  def __call__(self, images: jax.Array, labels: Optional[jax.Array] = None, *,
               train: bool = False, reconstruct: bool = True,
               return_couplings: bool = False) -> CapsNetOutput:
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
      A `CapsNetOutput`.
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
    return CapsNetOutput(digits, lengths, reconstructions, couplings)


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
      'primary_dim', 'primary_kernel', 'primary_stride', 'digit_dim',
      'routing_chunk'))
  if model_config.num_targets not in (1, 2) or isinstance(
      model_config.num_targets, bool):
    raise errors.ConfigError(
        f'config.model.num_targets must be 1 or 2 (digits per image), got '
        f'{model_config.num_targets!r}; set --config.model.num_targets=1.')
  _choice(model_config, 'routing', tuple(routing.ROUTINGS))
  _choice(model_config, 'conv_impl', conv.CONV_IMPLS)
  _choice(model_config, 'compute_dtype', conv.COMPUTE_DTYPES)
  routing_memory = model_config.routing_memory
  if routing_memory not in layers.ROUTING_MEMORY:
    raise errors.ConfigError(
        f'config.model.routing_memory must be one of '
        f'{", ".join(layers.ROUTING_MEMORY)}, got {routing_memory!r}; set '
        f'--config.model.routing_memory=full.')
  if routing_memory == 'chunked' and model_config.routing != 'dynamic':
    raise errors.ConfigError(
        f"config.model.routing_memory='chunked' needs routing='dynamic', got "
        f"{model_config.routing!r}; set --config.model.routing_memory=full.")
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
      routing_memory=routing_memory,
      routing_chunk=model_config.routing_chunk,
      num_targets=model_config.num_targets)
  if image_shape is not None:
    primary_grid(model.input_shape, model.conv1_kernel, model.primary_kernel,
                 model.primary_stride)
  return model


def _matrix_capsnet_em(model_config, image_shape,
                       num_classes) -> MatrixCapsNetEM:
  _int_fields(model_config, (
      'routing_iters', 'conv1_channels', 'conv1_kernel', 'conv1_stride',
      'primary_types', 'convcaps1_types', 'convcaps2_types', 'caps_kernel'))
  _choice(model_config, 'routing', ('em',))
  lam = model_config.inverse_temperature
  if (not isinstance(lam, (int, float)) or isinstance(lam, bool)
      or not 0 < lam < float('inf')):
    raise errors.ConfigError(
        f'config.model.inverse_temperature must be a number > 0, got '
        f'{lam!r}; set --config.model.inverse_temperature=0.01.')
  model = MatrixCapsNetEM(
      num_classes=num_classes,
      input_shape=tuple(image_shape or (32, 32, 1)),
      conv1_channels=model_config.conv1_channels,
      conv1_kernel=model_config.conv1_kernel,
      conv1_stride=model_config.conv1_stride,
      primary_types=model_config.primary_types,
      convcaps1_types=model_config.convcaps1_types,
      convcaps2_types=model_config.convcaps2_types,
      caps_kernel=model_config.caps_kernel,
      routing_iters=model_config.routing_iters,
      inverse_temperature=float(lam))
  if image_shape is not None:
    matrix_grids(model.input_shape, model.conv1_kernel, model.conv1_stride,
                 model.caps_kernel)
  return model


def _int_tuple(model_config, name: str, length: Optional[int] = None) -> tuple:
  value = tuple(model_config[name])
  if (not value or not all(isinstance(w, int) and not isinstance(w, bool)
                           and w >= 1 for w in value)
      or (length is not None and len(value) != length)):
    size = f'{length} ' if length else ''
    raise errors.ConfigError(
        f'config.model.{name} must be {size}ints >= 1, got {value!r}; set '
        f"--config.model.{name}='(...)' with {length or 'one or more'} "
        f'entries.')
  return value


def _efficient_capsnet(model_config, image_shape,
                       num_classes) -> EfficientCapsNet:
  _int_fields(model_config, ('routing_iters', 'primary_kernel',
                             'primary_dim', 'digit_dim'))
  _choice(model_config, 'routing', tuple(routing.ROUTINGS))
  channels = _int_tuple(model_config, 'conv_channels')
  kernels = _int_tuple(model_config, 'conv_kernels', len(channels))
  strides = _int_tuple(model_config, 'conv_strides', len(channels))
  hidden = _int_tuple(model_config, 'decoder_hidden')
  if channels[-1] % model_config.primary_dim:
    raise errors.ConfigError(
        f'config.model.primary_dim {model_config.primary_dim} must divide the '
        f'last of conv_channels ({channels[-1]}), whose channels it groups '
        f'into capsules; set --config.model.primary_dim=8.')
  model = EfficientCapsNet(
      num_classes=num_classes,
      input_shape=tuple(image_shape or (1, 1, 1)),
      routing=model_config.routing,
      routing_iters=model_config.routing_iters,
      conv_channels=channels, conv_kernels=kernels, conv_strides=strides,
      primary_kernel=model_config.primary_kernel,
      primary_dim=model_config.primary_dim,
      digit_dim=model_config.digit_dim,
      decoder_hidden=hidden)
  if image_shape is not None:
    efficient_grid(model.input_shape, kernels, strides, model.primary_kernel)
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
    'matrix_capsnet_em': ModelSpec(_matrix_capsnet_em, losses.spread_objective),
    'efficient_capsnet': ModelSpec(_efficient_capsnet,
                                   losses.margin_objective),
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
