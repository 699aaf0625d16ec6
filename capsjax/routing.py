"""Routing between two capsule layers, for one example.

Every routing algorithm is a pure function of `jax.numpy`: it composes with
`jax.jit`, `jax.vmap` and `jax.grad`, so it can be dropped into any JAX model.
Batch it with `jax.vmap`. `ROUTINGS` names them for `config.model.routing`;
a new algorithm is a function here plus one entry there.
"""
import operator

import jax
import jax.numpy as jnp

from capsjax import ops


def _check_num_iters(num_iters) -> int:
  # `bool` is an `int` subclass, but `True` iterations is a bug, not a 1.
  # A tracer (num_iters not static under jit) fails operator.index with a
  # TypeError subclass, as do floats and strings.
  index = None
  if not isinstance(num_iters, bool):
    try:
      index = operator.index(num_iters)
    except TypeError:
      pass
  if index is None or index < 1:
    raise ValueError(
        f'num_iters must be a Python int >= 1 known at trace time, got '
        f'{num_iters!r} ({type(num_iters).__name__}); under jax.jit pass it as '
        f'a static argument (static_argnames="num_iters").')
  return index


def dynamic_routing(u_hat: jax.Array, num_iters: int, *,
                    stop_gradient_agreement: bool = False,
                    return_couplings: bool = False,
                    eps: float = ops.DEFAULT_EPS):
  """Procedure 1 of the paper: routing-by-agreement for ONE example.

  With routing logits `b: [num_in, num_out]` starting at zero, each of the
  `num_iters` iterations computes

    c_i = softmax(b_i) over the output capsules j   (Eq. 3)
    s_j = sum_i c_ij u_hat_ij                       (Eq. 2)
    v_j = squash(s_j)                               (Eq. 1)
    b_ij <- b_ij + u_hat_ij . v_j                   (agreement; skipped after
                                                     the last iteration)

  Args:
    u_hat: `[num_in, num_out, dim_out]`; `u_hat[i, j]` is input capsule i's
      prediction for output capsule j, `W_ij u_i` (Eq. 2).
    num_iters: routing iterations r, a Python int >= 1 (static under jit).
      The paper uses 3; r = 1 gives uniform couplings `1 / num_out`.
    stop_gradient_agreement: if True the logit updates are treated as
      constants in the backward pass, so gradients reach `u_hat` only through
      the final weighted sum s_j. Some reimplementations do this; the paper's
      official code does not, hence the default False. It does not change the
      forward values.
    return_couplings: also return the coupling coefficients used at every
      iteration.
    eps: passed to `ops.squash`.

  Returns:
    `v: [num_out, dim_out]`, the output capsules; with `return_couplings`,
    the tuple `(v, c)` where `c: [num_iters, num_in, num_out]` and `c[t]` are
    the couplings used at iteration t (each row sums to 1 over num_out).

  Raises:
    ValueError: if `num_iters` is not an int >= 1 known at trace time, or if
      `u_hat` is not rank 3.
  """
  num_iters = _check_num_iters(num_iters)
  u_hat = jnp.asarray(u_hat)
  if u_hat.ndim != 3:
    raise ValueError(
        f'u_hat must have shape [num_in, num_out, dim_out] for one example, got '
        f'shape {tuple(u_hat.shape)}; for a batch use '
        f'jax.vmap(dynamic_routing, in_axes=(0, None)).')

  # Logits are per example and start at zero: with vmap each example gets its
  # own b, and nothing is carried between calls.
  logits = jnp.zeros(u_hat.shape[:2], u_hat.dtype)
  couplings = []
  for t in range(num_iters):
    c = jax.nn.softmax(logits, axis=1)  # Over the parent (output) capsules.
    couplings.append(c)
    v = ops.squash(jnp.einsum('ij,ijd->jd', c, u_hat), eps=eps)
    if t < num_iters - 1:
      agreement = jnp.einsum('ijd,jd->ij', u_hat, v)
      if stop_gradient_agreement:
        agreement = jax.lax.stop_gradient(agreement)
      logits = logits + agreement
  if return_couplings:
    return v, jnp.stack(couplings)
  return v


# config.model.routing -> the routing function. Each takes
# `(u_hat: [num_in, num_out, dim], num_iters, *, return_couplings=False)`.
ROUTINGS = {
    'dynamic': dynamic_routing,
}


def get_routing(name: str):
  """The routing function `ROUTINGS[name]`, or a ValueError naming the choices."""
  try:
    return ROUTINGS[name]
  except (KeyError, TypeError):
    raise ValueError(
        f'unknown routing {name!r}; choose one of {", ".join(ROUTINGS)} '
        f'(--config.model.routing).') from None
