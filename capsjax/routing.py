"""Routing between two capsule layers, for one example.

Every routing algorithm is a pure function of `jax.numpy`: it composes with
`jax.jit`, `jax.vmap` and `jax.grad`, so it can be dropped into any JAX model.
Batch it with `jax.vmap`. `ROUTINGS` names the vector routings (u_hat in, v
out) for `config.model.routing`; a new algorithm is a function here plus one
entry there. `em_routing` (matrix capsules: votes and activations in, poses
and activations out) has its own signature and is used by the
'matrix_capsnet_em' model.
"""
import functools
import operator

import jax
import jax.numpy as jnp
from jax import lax

from capsjax import checks
from capsjax import ops


def _check_num_iters(num_iters) -> int:
  # A tracer (num_iters not static under jit) is not an int to checks.is_int.
  if not checks.is_int(num_iters) or num_iters < 1:
    raise ValueError(
        f'num_iters must be a Python int >= 1 known at trace time, got '
        f'{num_iters!r} ({type(num_iters).__name__}); under jax.jit pass it as '
        f'a static argument (static_argnames="num_iters").')
  return operator.index(num_iters)


def _check_u_hat(u_hat, name: str) -> jax.Array:
  u_hat = jnp.asarray(u_hat)
  if u_hat.ndim != 3:
    raise ValueError(
        f'u_hat must have shape [num_in, num_out, dim_out] for one example, '
        f'got shape {tuple(u_hat.shape)}; for a batch use jax.vmap({name}, '
        f'in_axes=(0, None)).')
  return u_hat


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
  u_hat = _check_u_hat(u_hat, 'dynamic_routing')

  # Laid out output-major, [num_out, num_in, dim]: both contractions below
  # are then batched over j (and over the batch under vmap) with u_hat read
  # as it lies. Input-major, XLA:CPU copied the whole batch of u_hat (94 MB
  # for the paper's DigitCaps at batch 128) into that layout for each of them
  # (docs/performance.md). Under `layers.Capsules`' vmap this transpose
  # cancels the swap that feeds it `layers.predictions`' `[B, J, I, D]`.
  u_t = u_hat.transpose(1, 0, 2)
  num_out = u_t.shape[0]
  # Logits are per example and start at zero: with vmap each example gets its
  # own b, and nothing is carried between calls.
  logits = None
  couplings = []
  for t in range(num_iters):
    if logits is None:
      # softmax(0) is uniform: s is a plain sum (a softmax of constant zeros
      # would be constant-folded at compile time, seconds for a batch).
      c = jnp.full(u_t.shape[:2], 1.0 / num_out, u_t.dtype)
      s = jnp.sum(u_t, axis=1) / num_out
    else:
      c = jax.nn.softmax(logits, axis=0)  # Over the parent (output) capsules.
      s = jnp.einsum('ji,jid->jd', c, u_t)
    couplings.append(c.T)
    v = ops.squash(s, eps=eps)
    if t < num_iters - 1:
      agreement = jnp.einsum('jid,jd->ji', u_t, v)
      if stop_gradient_agreement:
        agreement = jax.lax.stop_gradient(agreement)
      logits = agreement if logits is None else logits + agreement
  if return_couplings:
    return v, jnp.stack(couplings)
  return v


# Added to sigma^2 and to sum_i R_ij in `em_routing`: zero variance (identical
# votes) and zero mass (all input activations 0) must give finite values and
# gradients. Small next to float32 votes of order 1, large enough that
# 1 / (sigma^2 + eps) stays far below float32's range.
EM_EPS = 1e-6


def em_inverse_temperatures(num_iters: int,
                            final: float = 0.01) -> tuple[float, ...]:
  """The default inverse temperature schedule lambda_t of `em_routing`.

  The paper says only that lambda "increases at each iteration with a fixed
  schedule". This is Jonathan Hui's schedule, also used by Gritzman (2019,
  "Avoiding implementation pitfalls of matrix capsules with EM routing"):
  `lambda_t = final * (1 - 0.95 ** (t + 1))`, t = 0 .. num_iters - 1.

  Returns:
    `num_iters` Python floats, increasing.
  """
  num_iters = _check_num_iters(num_iters)
  return tuple(final * (1.0 - 0.95 ** (t + 1)) for t in range(num_iters))


def em_routing(votes: jax.Array, activations: jax.Array, beta_u, beta_a,
               num_iters: int, *, inverse_temperatures=None,
               return_couplings: bool = False, eps: float = EM_EPS):
  """EM routing between matrix capsules (Hinton, Sabour & Frosst, ICLR 2018).

  Procedure 1 of "Matrix capsules with EM routing", for ONE example (batch it
  with `jax.vmap(em_routing, in_axes=(0, 0, None, None, None))`). With
  assignments `R: [num_in, num_out]` starting at `1 / num_out` (Proc. 1
  line 2), each of the `num_iters` iterations t runs

    M-step (Proc. 1, M-STEP lines 2-6; Sec. 2.1 Eq. 1-3):
      R'_ij      = R_ij a_i                       (scale by input activation)
      mu_j^h     = sum_i R'_ij V_ij^h / sum_i R'_ij
      sigma_j^h2 = sum_i R'_ij (V_ij^h - mu_j^h)^2 / sum_i R'_ij
      cost_j^h   = (beta_u + log sigma_j^h) sum_i R'_ij
      a_j        = logistic(lambda_t (beta_a - sum_h cost_j^h))
    E-step (Proc. 1, E-STEP lines 2-3), skipped after the last M-step since
    the outputs (mu, a) do not depend on it:
      p_ij = prod_h N(V_ij^h; mu_j^h, sigma_j^h2)
      R_ij = a_j p_ij / sum_k a_k p_ik

  The E-step is computed in log space, `log R = log_sigmoid(.) + log p -
  logsumexp`, so vanishing activations or densities never divide 0 by 0;
  `eps` is added to sigma^2 and to sum_i R'_ij (see `EM_EPS`), so identical
  votes, a single input capsule or all-zero input activations give finite
  outputs and gradients.

  Ambiguities of the paper, and the choices made here:
  - Cost. Proc. 1 uses `(beta_u + log sigma) sum_i R_ij`; Sec. 2.1 Eq. 3
    writes `a_j = logistic(lambda (beta_a - beta_u sum_i R_ij - sum_h
    cost_j^h))` with `cost_j^h = (log sigma_j^h + (1 + log 2 pi) / 2) sum_i
    R_ij`, the same up to how the constant is folded into beta_u. Here:
    Proc. 1 literally. The cost is NOT normalised before the logistic: it
    grows with the number of inputs, which the learned beta_a and a small
    lambda absorb. Public code differs: yl-1993/Matrix-Capsules-EM-PyTorch
    also uses the raw cost (with a constant lambda = 1e-3, and it
    renormalises `R a_i` over outputs, which cancels the scaling by a_i);
    www0wwwjs1/Matrix-Capsules-EM-Tensorflow replaces the logistic by a
    softmax over output capsules and uses `softmax(sum_i R_ij)` before the
    last iteration; others standardise the cost over output capsules
    (mean/std) before the logistic.
  - Schedule of lambda: not given in the paper; see
    `em_inverse_temperatures` (the default), or pass your own.
  - beta_u, beta_a: per output capsule type (the authors' OpenReview reply),
    so scalars or `[num_out]` here; the layer learns them.
  - The gradient flows through every iteration (no stop_gradient), as the
    paper does not say otherwise.

  Args:
    votes: `[num_in, num_out, pose_dim]`, V_ij = M_i W_ij flattened
      (pose_dim 16 for 4x4 poses).
    activations: `[num_in]`, a_i in [0, 1].
    beta_u: scalar or `[num_out]`, the cost per unit of log-std.
    beta_a: scalar or `[num_out]`, the activation threshold.
    num_iters: EM iterations, a Python int >= 1 (static under jit); the
      paper uses 3.
    inverse_temperatures: `num_iters` values lambda_t; None uses
      `em_inverse_temperatures(num_iters)`.
    return_couplings: also return the assignments R used by every M-step.
    eps: see above.

  Returns:
    `(poses, out_activations)` with `poses: [num_out, pose_dim]` (mu_j) and
    `out_activations: [num_out]` (a_j); with `return_couplings` also
    `R: [num_iters, num_in, num_out]`, R[t] the assignments entering
    iteration t's M-step (before scaling by a_i; rows sum to 1).

  Raises:
    ValueError: bad `num_iters`, shapes or `inverse_temperatures` length.
  """
  num_iters = _check_num_iters(num_iters)
  votes = jnp.asarray(votes)
  activations = jnp.asarray(activations, votes.dtype)
  if votes.ndim != 3 or activations.shape != votes.shape[:1]:
    raise ValueError(
        f'em_routing needs votes [num_in, num_out, pose_dim] and activations '
        f'[num_in] for one example, got {tuple(votes.shape)} and '
        f'{tuple(activations.shape)}; for a batch use jax.vmap(em_routing, '
        f'in_axes=(0, 0, None, None, None)).')
  if inverse_temperatures is None:
    inverse_temperatures = em_inverse_temperatures(num_iters)
  if len(inverse_temperatures) != num_iters:
    raise ValueError(
        f'inverse_temperatures has {len(inverse_temperatures)} values for '
        f'{num_iters} iterations; give one lambda per iteration.')
  num_in, num_out, _ = votes.shape
  beta_u = jnp.broadcast_to(jnp.asarray(beta_u, votes.dtype), (num_out,))
  beta_a = jnp.broadcast_to(jnp.asarray(beta_a, votes.dtype), (num_out,))
  log_2pi = jnp.log(2 * jnp.pi).astype(votes.dtype)

  r = jnp.full((num_in, num_out), 1.0 / num_out, votes.dtype)
  assignments = []
  for t in range(num_iters):
    assignments.append(r)
    # M-step.
    r_scaled = r * activations[:, None]
    mass = jnp.sum(r_scaled, axis=0)  # [num_out], sum_i R'_ij
    weights = r_scaled / (mass + eps)
    mu = jnp.einsum('ij,ijh->jh', weights, votes)
    # Deviations from the mean, not E[V^2] - mu^2, which can go negative.
    var = jnp.einsum('ij,ijh->jh', weights, jnp.square(votes - mu)) + eps
    log_sigma = 0.5 * jnp.log(var)  # [num_out, pose_dim]
    cost = (beta_u[:, None] + log_sigma) * mass[:, None]
    logits = inverse_temperatures[t] * (beta_a - jnp.sum(cost, axis=1))
    a_out = jax.nn.sigmoid(logits)
    if t < num_iters - 1:
      # E-step, in log space.
      log_p = -jnp.sum(
          jnp.square(votes - mu) / (2 * var) + log_sigma + 0.5 * log_2pi,
          axis=-1)  # [num_in, num_out]
      log_ap = jax.nn.log_sigmoid(logits) + log_p
      r = jnp.exp(log_ap - jax.nn.logsumexp(log_ap, axis=1, keepdims=True))
  if return_couplings:
    return mu, a_out, jnp.stack(assignments)
  return mu, a_out


def _check_shape(name: str, value, shape) -> jax.Array:
  value = jnp.asarray(value)
  if value.shape != tuple(shape):
    raise ValueError(f'{name} must have shape {tuple(shape)} to match u_hat, '
                     f'got {tuple(value.shape)}.')
  return value


def self_attention_routing(u_hat: jax.Array, num_iters: int = 1, *,
                           log_prior: jax.Array,
                           return_couplings: bool = False,
                           eps: float = ops.DEFAULT_EPS):
  """Efficient-CapsNet's self-attention routing (Mazzia et al.), ONE example.

  Non-iterative: the couplings come from the agreement of the predictions
  with each other, in one pass (Eqs. 4-6 of the paper; the authors' FCCaps):

    A_j = U_j U_j^T / sqrt(dim)      U_j = u_hat[:, j]: [num_in, dim]
    c_ij = softmax_j(sum_k A_j[i, k])   over the OUTPUT capsules j
    s_j = sum_i u_hat_ij (c_ij + b_ij)   b: the learned log prior
    v_j = efficient_squash(s_j)

  `sum_k A_j[i, k] = u_hat_ij . sum_k u_hat_kj`, computed without the
  `[num_in, num_in]` matrix. As in the authors' code the prior b is added to
  the couplings after the softmax, not to the logits.

  Args:
    u_hat: `[num_in, num_out, dim]` predictions `W_ij u_i`.
    num_iters: accepted for the common routing interface (`ROUTINGS`) and
      checked like the others' (a Python int >= 1), but the algorithm has no
      iterations: every value gives the same result.
    log_prior: `[num_in, num_out]`, the paper's B (zeros at initialisation,
      a parameter of the layer).
    return_couplings: also return the couplings c.
    eps: passed to `ops.efficient_squash`.

  Returns:
    `v: [num_out, dim]`; with `return_couplings`, `(v, c)` with
    `c: [1, num_in, num_out]` (the softmax, rows summing to 1 over num_out;
    the prior is not included).

  Raises:
    ValueError: `num_iters` not an int >= 1 known at trace time, or shapes
      that do not fit.
  """
  _check_num_iters(num_iters)
  u_hat = _check_u_hat(u_hat, 'self_attention_routing')
  log_prior = _check_shape('log_prior', log_prior, u_hat.shape[:2])
  dim = u_hat.shape[-1]
  u_t = u_hat.transpose(1, 0, 2)  # Output-major, as in dynamic_routing.
  logits = jnp.einsum('jid,jd->ji', u_t, jnp.sum(u_t, axis=1))
  c = jax.nn.softmax(logits / jnp.sqrt(jnp.asarray(dim, u_hat.dtype)), axis=0)
  v = ops.efficient_squash(
      jnp.einsum('ji,jid->jd', c + log_prior.T, u_t), eps=eps)
  if return_couplings:
    return v, c.T[None]
  return v


def layer_norm(x: jax.Array, scale: jax.Array, offset: jax.Array,
               eps: float = 1e-5) -> jax.Array:
  """`(x - mean) / sqrt(var + eps) * scale + offset` over the last axis.

  The biased variance and eps = 1e-5 of `torch.nn.LayerNorm`, as in the
  inverted dot-product routing's official code.
  """
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * scale + offset


def inverted_dot_product_routing(u_hat: jax.Array, num_iters: int, *,
                                 norm_scale: jax.Array,
                                 norm_offset: jax.Array,
                                 return_couplings: bool = False,
                                 eps: float = 1e-5):
  """Inverted dot-product attention routing (Tsai et al. 2020), ONE example.

  The parents' poses start from uniform couplings and are then refined
  `num_iters - 1` times (Procedure 1 of the paper; the authors' CapsuleFC):

    t = 0:  c_ij = 1 / num_out
    t > 0:  c_ij = softmax_j(u_hat_ij . v_j / sqrt(dim))   over the OUTPUT
                                                         capsules j
    v_j = LayerNorm(sum_i c_ij u_hat_ij)   (every t)

  The 1/sqrt(dim) scale and the layer norm (one scale and offset shared by
  all parents) are the authors' code; unlike dynamic routing the agreement
  is not accumulated over iterations, and there is no squash.

  Args:
    u_hat: `[num_in, num_out, dim]` predictions `W_ij u_i`.
    num_iters: total iterations, a Python int >= 1 (static under jit); 1 is
      the uniform-coupling pass alone. The paper uses 2 (CIFAR-10) to 3.
    norm_scale: `[dim]` layer-norm scale (ones at initialisation).
    norm_offset: `[dim]` layer-norm offset (zeros at initialisation).
    return_couplings: also return the couplings of every iteration.
    eps: the layer norm's epsilon (PyTorch's 1e-5).

  Returns:
    `v: [num_out, dim]`; with `return_couplings`, `(v, c)` with
    `c: [num_iters, num_in, num_out]`, rows summing to 1 over num_out.

  Raises:
    ValueError: `num_iters` not an int >= 1 known at trace time, or shapes
      that do not fit.
  """
  num_iters = _check_num_iters(num_iters)
  u_hat = _check_u_hat(u_hat, 'inverted_dot_product_routing')
  dim = u_hat.shape[-1]
  norm_scale = _check_shape('norm_scale', norm_scale, (dim,))
  norm_offset = _check_shape('norm_offset', norm_offset, (dim,))
  scale = 1.0 / jnp.sqrt(jnp.asarray(dim, u_hat.dtype))
  u_t = u_hat.transpose(1, 0, 2)  # Output-major, as in dynamic_routing.
  num_out = u_t.shape[0]
  # t = 0: uniform couplings, so s is a plain sum.
  c = jnp.full(u_t.shape[:2], 1.0 / num_out, u_t.dtype)
  couplings = [c.T]
  v = layer_norm(jnp.sum(u_t, axis=1) / num_out, norm_scale, norm_offset, eps)
  for _ in range(num_iters - 1):
    agreement = jnp.einsum('jid,jd->ji', u_t, v) * scale
    c = jax.nn.softmax(agreement, axis=0)
    couplings.append(c.T)
    v = layer_norm(jnp.einsum('ji,jid->jd', c, u_t), norm_scale, norm_offset,
                   eps)
  if return_couplings:
    return v, jnp.stack(couplings)
  return v


def dynamic_routing_chunked(w: jax.Array, u: jax.Array, num_iters: int, *,
                            chunk_size: int, return_couplings: bool = False,
                            eps: float = ops.DEFAULT_EPS):
  """`dynamic_routing` for a batch, never holding all of u_hat at once.

  The same outputs as computing u_hat_ij = W_ij u_i and running
  `dynamic_routing` per example, in memory that does not grow with the
  number of input capsules: u_hat `[B, num_out, num_in, dim]` is 1.7 GB for a
  CIFAR-100-sized CapsNet at batch 128, and training holds its gradient.
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
# `(u_hat: [num_in, num_out, dim], num_iters, *, return_couplings=False,
#   **params)`, with the keyword arguments `PARAMS[name]` describes.
ROUTINGS = {
    'dynamic': dynamic_routing,
    'self_attention': self_attention_routing,
    'inverted_dot_product': inverted_dot_product_routing,
}

# A routing's learned arguments beyond u_hat, for the layer that owns them:
# name -> `(num_in, num_out, dim) -> {argument: (shape, initializer)}`, with
# `jax.nn.initializers`. A routing missing here has none ('dynamic').
PARAMS = {
    'self_attention': lambda num_in, num_out, dim: {
        'log_prior': ((num_in, num_out), jax.nn.initializers.zeros)},
    'inverted_dot_product': lambda num_in, num_out, dim: {
        'norm_scale': ((dim,), jax.nn.initializers.ones),
        'norm_offset': ((dim,), jax.nn.initializers.zeros)},
}


def routing_params(name: str, num_in: int, num_out: int, dim: int) -> dict:
  """`{argument: (shape, initializer)}` of routing `name` (empty if none)."""
  get_routing(name)
  spec = PARAMS.get(name)
  return spec(num_in, num_out, dim) if spec else {}


def get_routing(name: str):
  """The routing function `ROUTINGS[name]`, or a ValueError naming the choices."""
  try:
    return ROUTINGS[name]
  except (KeyError, TypeError):
    raise ValueError(
        f'unknown routing {name!r}; choose one of {", ".join(ROUTINGS)} '
        f'(--config.model.routing).') from None
