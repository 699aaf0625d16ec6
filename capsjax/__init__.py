"""capsjax: capsule networks (Sabour, Frosst & Hinton, 2017) in JAX and Flax.

The reusable pieces are pure JAX functions:

  squash, safe_norm                 capsjax.ops      (Eq. 1, capsule lengths)
  dynamic_routing                   capsjax.routing  (Procedure 1, Eqs. 2-3)
  margin_loss, reconstruction_loss  capsjax.losses   (Eq. 4, Section 4.1)
"""
from capsjax.losses import margin_loss
from capsjax.losses import reconstruction_loss
from capsjax.ops import safe_norm
from capsjax.ops import squash
from capsjax.routing import dynamic_routing

__version__ = '0.1.0'

__all__ = [
    'dynamic_routing',
    'margin_loss',
    'reconstruction_loss',
    'safe_norm',
    'squash',
]
