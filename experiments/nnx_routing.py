r"""Dynamic routing in a Flax NNX model: capsjax's pure functions, no linen.

    python experiments/nnx_routing.py --steps=60

`CapsuleLayer` is an `nnx.Module` that holds the transformation matrices
W_ij as an `nnx.Param` and routes with `capsjax.dynamic_routing` under
`jax.vmap`, exactly as the linen `capsjax.layers.Capsules` does. A small
CapsNet built from it (NNX Conv1, PrimaryCaps as an NNX Conv plus
`capsjax.squash`, this DigitCaps layer) trains with optax and
`capsjax.margin_loss` on the embedded 5k MNIST sample; the loss printed
every few steps goes down.

Flax 0.12 API: `nnx.Optimizer(model, tx, wrt=nnx.Param)` and
`optimizer.update(model, grads)`.
"""
import functools
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import capsjax
from capsjax import data


class CapsuleLayer(nnx.Module):
  """Fully connected capsules with routing-by-agreement (the paper's DigitCaps).

  u_hat_ij = W_ij u_i (Eq. 2), then `capsjax.dynamic_routing` (Procedure 1)
  for each example under `jax.vmap`.
  """

  def __init__(self, num_in: int, dim_in: int, num_out: int, dim_out: int,
               routing_iters: int, *, rngs: nnx.Rngs):
    # W: [num_in, num_out, dim_out, dim_in], N(0, 0.01) like layers.Capsules.
    self.kernel = nnx.Param(0.01 * jax.random.normal(
        rngs.params(), (num_in, num_out, dim_out, dim_in)))
    self.routing_iters = routing_iters

  def __call__(self, u: jax.Array, return_couplings: bool = False):
    """`u: [B, num_in, dim_in]` -> `v: [B, num_out, dim_out]`.

    With `return_couplings` also `c: [B, routing_iters, num_in, num_out]`.
    """
    u_hat = jnp.einsum('ijdk,bik->bijd', self.kernel[...], u)
    route = functools.partial(capsjax.dynamic_routing,
                              num_iters=self.routing_iters,
                              return_couplings=return_couplings)
    return jax.vmap(route)(u_hat)


class SmallCapsNet(nnx.Module):
  """ReLU Conv1 -> PrimaryCaps (squashed) -> `CapsuleLayer` -> lengths."""

  def __init__(self, *, image_shape=(28, 28, 1), num_classes: int = 10,
               conv1_channels: int = 32, primary_types: int = 8,
               primary_dim: int = 8, digit_dim: int = 16,
               routing_iters: int = 3, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(image_shape[-1], conv1_channels, (9, 9),
                          padding='VALID', rngs=rngs)
    self.primary = nnx.Conv(conv1_channels, primary_types * primary_dim,
                            (9, 9), strides=2, padding='VALID', rngs=rngs)
    grid = ((image_shape[0] - 8) - 9) // 2 + 1  # 6 for 28x28
    self.primary_dim = primary_dim
    self.digits = CapsuleLayer(grid * grid * primary_types, primary_dim,
                               num_classes, digit_dim, routing_iters,
                               rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    """`images: [B, H, W, C]` in [0, 1] -> capsule lengths `[B, K]`."""
    h = nnx.relu(self.conv1(images))
    h = self.primary(h)
    u = capsjax.squash(h.reshape(h.shape[0], -1, self.primary_dim))
    return capsjax.safe_norm(self.digits(u))


def loss_fn(model: SmallCapsNet, images, labels):
  return capsjax.margin_loss(model(images), labels).mean()


@nnx.jit
def train_step(model: SmallCapsNet, optimizer: nnx.Optimizer, images, labels):
  loss, grads = nnx.value_and_grad(loss_fn)(model, images, labels)
  optimizer.update(model, grads)
  return loss


def embedded_mnist():
  """The embedded sample's training split: `[N, 28, 28, 1]` float, `[N]`."""
  # The source's loader reads only its own fields.
  dataset = data.SOURCES['embedded'](ml_collections.ConfigDict(
      dict(name='mnist_5k', holdout_per_class=100)))
  return data.to_float(dataset.train.images), dataset.train.labels


def train(num_steps: int, *, batch_size: int = 32, learning_rate=1e-3,
          seed: int = 0, log_every: int = 0, **model_args) -> list[float]:
  """Trains a `SmallCapsNet` on the embedded sample; returns every loss."""
  images, labels = embedded_mnist()
  model = SmallCapsNet(rngs=nnx.Rngs(seed), **model_args)
  optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)
  order = np.random.default_rng(seed).permutation(len(labels))
  losses = []
  start = time.perf_counter()
  for step in range(num_steps):
    index = order[np.arange(step * batch_size, (step + 1) * batch_size)
                  % len(order)]
    losses.append(float(train_step(model, optimizer, images[index],
                                   labels[index])))
    if log_every and (step + 1) % log_every == 0:
      mean = np.mean(losses[-log_every:])
      print(f'step {step + 1:4d}: margin loss {mean:.4f} '
            f'({time.perf_counter() - start:.0f} s)')
  return losses


def main(argv):
  del argv
  train(FLAGS.steps, batch_size=FLAGS.batch_size, log_every=FLAGS.log_every)


if __name__ == '__main__':
  flags.DEFINE_integer('steps', 60, 'Training steps.')
  flags.DEFINE_integer('batch_size', 32, 'Examples per step.')
  flags.DEFINE_integer('log_every', 10, 'Print the mean loss this often.')
  FLAGS = flags.FLAGS
  app.run(main)
