"""Matrix capsules with EM routing, Hinton, Sabour & Frosst (2018),
Section 3: model 'matrix_capsnet_em'.

`FIELDS` declares the `config.model` fields it is built from (the attributes
of `MatrixCapsNetEM` of the same names) and their checks.
"""
import functools
import math
from typing import NamedTuple, Optional, Sequence

import flax.linen as nn
import jax

from capsjax import checks
from capsjax import conv
from capsjax import errors
from capsjax import layers


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
  checks.image_shape(input_shape)
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
    routing: 'em', the only routing of matrix capsules (`routing.em_routing`).
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
  routing: str = 'em'
  routing_iters: int = 3
  inverse_temperature: float = 0.01

  def grids(self) -> list[tuple[int, int]]:
    """The (H, W) grids of Conv1, ConvCaps1 and ConvCaps2 (matrix_grids)."""
    return matrix_grids(self.input_shape, self.conv1_kernel,
                        self.conv1_stride, self.caps_kernel)

  def capsule_grid(self) -> tuple[int, int]:
    """The (H, W) grid of the ConvCaps2 capsules routed to the class layer."""
    return self.grids()[-1]

  def check_input_shape(self) -> None:
    """Raises errors.InputShapeError if `input_shape` does not fit."""
    self.grids()

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
    self.check_input_shape()
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


# config.model field -> its check, `check(value, 'model.FIELD') -> value`.
FIELDS = {
    # EM routing is part of the layers: 'em' is the only choice.
    'routing': functools.partial(checks.choice, allowed=('em',)),
    'routing_iters': checks.int_at_least,
    'conv1_channels': checks.int_at_least,
    'conv1_kernel': checks.int_at_least,
    'conv1_stride': checks.int_at_least,
    'primary_types': checks.int_at_least,
    'convcaps1_types': checks.int_at_least,
    'convcaps2_types': checks.int_at_least,
    'caps_kernel': checks.int_at_least,
    'inverse_temperature': functools.partial(
        checks.number_in, low=0, high=math.inf, example=0.01, low_open=True),
}
