"""The CNN baseline of Sabour, Frosst & Hinton (2017), Section 5:
model 'baseline_cnn'.

`FIELDS` declares the `config.model` fields it is built from (the attributes
of `BaselineCNN` of the same names) and their checks.
"""
import functools
from typing import NamedTuple, Optional, Sequence

import flax.linen as nn
import jax

from capsjax import checks
from capsjax import conv
from capsjax import errors
from capsjax import layers


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
    cnn_channels: output channels of each convolution.
    cnn_kernel: square kernel size.
    cnn_padding: 'SAME' or 'VALID'.
    cnn_pool: 2x2 stride-2 max pooling (SAME) after each convolution.
    cnn_hidden: widths of the fully connected ReLU layers.
    cnn_dropout: dropout rate before the logits, active when `train`.
    conv_impl: 'auto' | 'slices' | 'xla', as CapsNet's (`layers.Conv`): on
      CPU the convolutions run as matmuls, faster than XLA:CPU's own.
    compute_dtype: 'float32' | 'bfloat16' | 'auto', the matmul inputs of the
      convolutions after the first (`layers.Conv`), as CapsNet's PrimaryCaps.
  """
  num_classes: int = 10
  input_shape: Sequence[int] = (28, 28, 1)
  cnn_channels: Sequence[int] = (256, 256, 128)
  cnn_kernel: int = 5
  cnn_padding: str = 'SAME'
  cnn_pool: bool = False
  cnn_hidden: Sequence[int] = (328, 192)
  cnn_dropout: float = 0.5
  conv_impl: str = 'auto'
  compute_dtype: str = 'float32'

  def check_input_shape(self) -> None:
    """Raises errors.InputShapeError if VALID convolutions empty the image."""
    if self.cnn_padding != 'VALID':
      return
    size = min(self.input_shape[:2])
    for _ in self.cnn_channels:
      size = size - self.cnn_kernel + 1
      if self.cnn_pool:
        size = -(-size // 2)
    if size < 1:
      raise errors.InputShapeError(
          f'{self.input_shape[0]}x{self.input_shape[1]} images are too small '
          f'for {len(self.cnn_channels)} VALID {self.cnn_kernel}x'
          f'{self.cnn_kernel} convolutions; set '
          f"--config.model.cnn_padding='SAME'.")

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
    for i, width in enumerate(self.cnn_channels):
      h = nn.relu(layers.Conv(width, self.cnn_kernel, self.conv_impl,
                              self.cnn_padding, self.compute_dtype,
                              name=f'conv{i + 1}')(h))
      if self.cnn_pool:
        h = nn.max_pool(h, (2, 2), strides=(2, 2), padding='SAME')
    h = h.reshape(h.shape[0], -1)
    for i, width in enumerate(self.cnn_hidden):
      h = nn.relu(nn.Dense(width, name=f'fc{i + 1}')(h))
    h = nn.Dropout(self.cnn_dropout, deterministic=not train)(h)
    return BaselineOutput(nn.Dense(self.num_classes, name='logits')(h))


# config.model field -> its check, `check(value, 'model.FIELD') -> value`.
FIELDS = {
    'cnn_channels': functools.partial(checks.int_tuple,
                                      example='(256, 256, 128)'),
    'cnn_kernel': checks.int_at_least,
    'cnn_padding': functools.partial(checks.choice,
                                     allowed=('SAME', 'VALID')),
    'cnn_pool': checks.boolean,
    'cnn_hidden': functools.partial(checks.int_tuple, allow_empty=True,
                                    example='(328, 192)'),
    'cnn_dropout': functools.partial(checks.number_in, low=0, high=1,
                                     example=0.5, high_open=True),
    'conv_impl': functools.partial(checks.choice, allowed=conv.CONV_IMPLS),
    'compute_dtype': functools.partial(checks.choice,
                                       allowed=conv.COMPUTE_DTYPES),
}
