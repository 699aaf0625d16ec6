"""Capsule nonlinearities: pure `jax.numpy` functions with no state.

References are to Sabour, Frosst & Hinton, "Dynamic Routing Between Capsules"
(NIPS 2017).
"""
import jax
import jax.numpy as jnp

# The epsilon sits inside the square root so that the gradient of a norm at the
# zero vector is 0 rather than NaN (d|s|/ds = s/|s| is 0/0 there). Zero vectors
# are common: ReLU features feed PrimaryCaps, and padded or masked capsules are
# exactly zero.
DEFAULT_EPS = 1e-7


def safe_norm(s: jax.Array, axis: int = -1, eps: float = DEFAULT_EPS,
              keepdims: bool = False) -> jax.Array:
  """Euclidean norm `sqrt(sum(s**2) + eps)` with a finite gradient at s = 0.

  Used for capsule lengths ||v_j||, the class scores of the paper's Section 3.

  Args:
    s: capsule vectors, e.g. `[..., num_caps, dim]`.
    axis: the capsule-dimension axis to reduce.
    eps: added to the squared norm before the square root. The result is
      therefore at least `sqrt(eps)`; the gradient at s = 0 is exactly 0.
    keepdims: keep the reduced axis with size 1.

  Returns:
    The norms, `s.shape` without `axis` (or with size 1 there if `keepdims`).
  """
  return jnp.sqrt(jnp.sum(jnp.square(s), axis=axis, keepdims=keepdims) + eps)


def squash(s: jax.Array, axis: int = -1, eps: float = DEFAULT_EPS) -> jax.Array:
  """The squashing nonlinearity of Eq. 1: `v = |s|^2 / (1 + |s|^2) * s / |s|`.

  Short vectors shrink to almost zero length and long vectors to a length just
  below 1; the direction is unchanged. The `|s|` in the denominator is
  `sqrt(|s|^2 + eps)`, so `squash(0) = 0` with a finite (zero) gradient.

  Args:
    s: total capsule inputs, e.g. `s: [..., num_caps, dim]`.
    axis: the capsule-dimension axis.
    eps: added to `|s|^2` under the square root.

  Returns:
    `v`, the same shape and dtype as `s`, with `|v| < 1` along `axis`.
  """
  sq_norm = jnp.sum(jnp.square(s), axis=axis, keepdims=True)
  scale = sq_norm / (1.0 + sq_norm) / jnp.sqrt(sq_norm + eps)
  return scale * s


def efficient_squash(s: jax.Array, axis: int = -1,
                     eps: float = DEFAULT_EPS) -> jax.Array:
  """Efficient-CapsNet's squash: `v = (1 - 1 / e^|s|) s / |s|`.

  Mazzia et al. (2021), Eq. 3. Unlike Eq. 1 of Sabour et al. it is still
  steep near |s| = 0 (slope 1 rather than 0), which is what their shallow,
  single-pass network needs. `|s|` is `safe_norm(s, eps)`, so
  `efficient_squash(0) = 0` with a finite gradient.

  Args:
    s: capsule vectors, e.g. `[..., num_caps, dim]`.
    axis: the capsule-dimension axis.
    eps: added to `|s|^2` under the square root.

  Returns:
    `v`, the same shape and dtype as `s`, with `|v| < 1` along `axis`.
  """
  norm = safe_norm(s, axis=axis, eps=eps, keepdims=True)
  # 1 - e^-n without the cancellation of 1 - exp(-n) for small n.
  return -jnp.expm1(-norm) / norm * s
