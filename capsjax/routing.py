"""Routing between two capsule layers, for one example.

Every routing algorithm is a pure function of `jax.numpy`: it composes with
`jax.jit`, `jax.vmap` and `jax.grad`, so it can be dropped into any JAX model.
Batch it with `jax.vmap`. `ROUTINGS` names them for `config.model.routing`;
a new algorithm is a function here plus one entry there.
"""
import functools
import operator

import jax
import jax.numpy as jnp
from jax import lax

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


def dynamic_routing_chunked(w: jax.Array, u: jax.Array, num_iters: int, *,
                            chunk_size: int, return_couplings: bool = False,
                            eps: float = ops.DEFAULT_EPS):
  """`dynamic_routing` for a batch, never holding all of u_hat at once.

  The same outputs as computing u_hat_ij = W_ij u_i and running
  `dynamic_routing` per example, in memory that does not grow with the
  number of input capsules: u_hat `[num_in, B, num_out, dim]` is 1.7 GB for a
  CIFAR-100-sized CapsNet at batch 128, and training keeps it and its gradient.
  Here u_hat is computed for `chunk_size` input capsules at a time, once per
  iteration, inside a `jax.checkpoint`, so the backward pass recomputes each
  chunk instead of storing it.

  Chunking over the inputs i is exact because each iteration needs, per input
  capsule, only quantities that are shared by all inputs:

    b_ij = sum_{t' < t} u_hat_ij . v_j^(t') = u_hat_ij . V_j,
           V = the sum of the earlier iterations' outputs  (`[B, J, D]`)
    c_i  = softmax_j(b_i)                                  (per input i)
    s_j  = sum_i c_ij u_hat_ij                             (accumulated over
                                                            the chunks)

  so one pass over the chunks per iteration, carrying only s, gives v = squash
  (s). The logits are not stored either (the dot product with the running sum
  V equals the sum of the dot products). Cost: u_hat is recomputed in every
  iteration and again in the backward pass; its matmul is ~1% of a CapsNet's
  FLOPs.

  Args:
    w: `[num_in, num_out, dim, dim_in]`, the W_ij of Eq. 2.
    u: `[B, num_in, dim_in]`, the input capsules.
    num_iters: routing iterations r, a Python int >= 1.
    chunk_size: input capsules per chunk (static); the last chunk is padded
      with zero capsules, whose predictions are zero and add nothing to s.
    return_couplings: also return the couplings of every iteration.
    eps: passed to `ops.squash`.

  Returns:
    `v: [B, num_out, dim]`; with `return_couplings` the tuple `(v, c)`,
    `c: [B, num_iters, num_in, num_out]`.
  """
  num_iters = _check_num_iters(num_iters)
  num_in, num_out, dim, dim_in = w.shape
  batch = u.shape[0]
  chunk = max(1, min(int(chunk_size), num_in))
  num_chunks = -(-num_in // chunk)
  pad = num_chunks * chunk - num_in
  # Input-major operands, as in layers.predictions: the batched matmul over i
  # then needs no transposes of its [chunk, B, J, D] result or gradient.
  u_t = jnp.pad(u.transpose(1, 0, 2), ((0, pad), (0, 0), (0, 0)))
  w_t = jnp.pad(w.reshape(num_in, num_out * dim, dim_in).transpose(0, 2, 1),
                ((0, pad), (0, 0), (0, 0)))
  u_chunks = u_t.reshape(num_chunks, chunk, batch, dim_in)
  w_chunks = w_t.reshape(num_chunks, chunk, dim_in, num_out * dim)

  def one_pass(v_sum):
    """s for the logits u_hat . v_sum: `[B, J, D]`, and c `[n, chunk, B, J]`."""

    @functools.partial(jax.checkpoint, prevent_cse=False)
    def add_chunk(s, chunk_operands):
      w_c, u_c = chunk_operands
      u_hat = lax.dot_general(u_c, w_c, (((2,), (1,)), ((0,), (0,))))
      u_hat = u_hat.reshape(chunk, batch, num_out, dim)
      logits = jnp.einsum('ibjd,bjd->ibj', u_hat, v_sum)
      c = jax.nn.softmax(logits, axis=-1)  # Over the output capsules.
      return s + jnp.einsum('ibj,ibjd->bjd', c, u_hat), c

    s0 = jnp.zeros((batch, num_out, dim), jnp.result_type(w, u))
    return lax.scan(add_chunk, s0, (w_chunks, u_chunks))

  v_sum = jnp.zeros((batch, num_out, dim), jnp.result_type(w, u))
  couplings = []
  for t in range(num_iters):
    s, c = one_pass(v_sum)
    v = ops.squash(s, eps=eps)
    if return_couplings:
      c = c.reshape(num_chunks * chunk, batch, num_out)[:num_in]
      couplings.append(c.transpose(1, 0, 2))
    if t < num_iters - 1:
      v_sum = v_sum + v
  if return_couplings:
    return v, jnp.stack(couplings, axis=1)
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
