"""capsjax: capsule networks (Sabour, Frosst & Hinton, 2017) in JAX and Flax.

The reusable pieces are pure JAX functions:

  squash, safe_norm                 capsjax.ops      (Eq. 1, capsule lengths)
  efficient_squash                  capsjax.ops      (Efficient-CapsNet's)
  dynamic_routing                   capsjax.routing  (Procedure 1, Eqs. 2-3)
  self_attention_routing            capsjax.routing  (Mazzia et al. 2021)
  inverted_dot_product_routing      capsjax.routing  (Tsai et al. 2020)
  margin_loss, reconstruction_loss  capsjax.losses   (Eq. 4, Section 4.1)
"""
import importlib.metadata

from capsjax.losses import margin_loss
from capsjax.losses import reconstruction_loss
from capsjax.ops import efficient_squash
from capsjax.ops import safe_norm
from capsjax.ops import squash
from capsjax.routing import dynamic_routing
from capsjax.routing import inverted_dot_product_routing
from capsjax.routing import self_attention_routing

try:
  __version__ = importlib.metadata.version('capsjax')
except importlib.metadata.PackageNotFoundError:  # A source tree, not installed.
  __version__ = '0+unknown'

__all__ = [
    'dynamic_routing',
    'efficient_squash',
    'inverted_dot_product_routing',
    'margin_loss',
    'reconstruction_loss',
    'safe_norm',
    'self_attention_routing',
    'squash',
]
