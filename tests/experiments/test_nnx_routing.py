"""experiments/nnx_routing.py: capsjax.dynamic_routing inside Flax NNX."""
from flax import nnx
import jax
import numpy as np
import pytest

from conftest import load_script

from capsjax import layers


nnx_routing = load_script('nnx_routing')


def test_capsule_layer_matches_linen_capsules():
  layer = nnx_routing.CapsuleLayer(12, 4, 3, 5, routing_iters=3,
                                   rngs=nnx.Rngs(0))
  u = jax.random.normal(jax.random.key(1), (2, 12, 4))
  linen = layers.Capsules(num_capsules=3, dim=5, routing_iters=3)
  v_linen, c_linen = linen.apply({'params': {'kernel': layer.kernel[...]}},
                                 u, return_couplings=True)
  v, c = layer(u, return_couplings=True)
  assert v.shape == (2, 3, 5) and c.shape == (2, 3, 12, 3)
  np.testing.assert_allclose(v, v_linen, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c, c_linen, rtol=1e-5, atol=1e-6)
  # Routing moved the couplings away from uniform after the first iteration.
  assert np.abs(np.asarray(c[:, -1]) - 1 / 3).max() > 1e-5


@pytest.mark.slow  # trains or compiles a whole model
def test_training_lowers_the_loss():
  losses = nnx_routing.train(24, batch_size=16, learning_rate=3e-3,
                             conv1_channels=8, primary_types=2,
                             primary_dim=4, digit_dim=6)
  assert len(losses) == 24 and np.all(np.isfinite(losses))
  assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6]), losses
