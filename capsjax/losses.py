"""Losses of capsule networks and their baselines, and the objectives built on them.

Each loss returns one value per example; the caller averages. An objective,
`objective(outputs, batch, loss_config, step) -> {name: [B]}`, combines a
model's losses as `config.loss` says, with the total under 'loss' (`step`, the
training step of the parameters, is for schedules such as the spread loss's
margin); each model in `models.MODELS` names the objective it trains with. Pure `jax.numpy`.
"""
import jax
import jax.numpy as jnp


def margin_loss(lengths: jax.Array, labels: jax.Array, *,
                m_plus: float = 0.9, m_minus: float = 0.1,
                lambda_: float = 0.5) -> jax.Array:
  """Margin loss of Eq. 4, summed over classes.

    L_k = T_k max(0, m+ - |v_k|)^2 + lambda (1 - T_k) max(0, |v_k| - m-)^2

  Args:
    lengths: `[batch, num_classes]` capsule lengths |v_k|.
    labels: either integer class indices `[batch]`, or targets T
      `[batch, num_classes]` (one-hot, or multi-hot when several classes are
      present, as in the paper's MultiMNIST).
    m_plus: the length a present class's capsule should exceed (0.9).
    m_minus: the length an absent class's capsule should stay under (0.1).
    lambda_: down-weighting of the absent-class term (0.5).

  Returns:
    `[batch]`, the loss of each example.
  """
  lengths, labels = jnp.asarray(lengths), jnp.asarray(labels)
  if labels.shape == lengths.shape[:-1]:
    targets = jax.nn.one_hot(labels, lengths.shape[-1], dtype=lengths.dtype)
  elif labels.shape == lengths.shape:
    targets = labels.astype(lengths.dtype)
  else:
    raise ValueError(
        f'labels must be class indices of shape {lengths.shape[:-1]} or targets '
        f'of shape {lengths.shape} to match lengths, got shape {labels.shape}.')
  present = targets * jnp.square(jax.nn.relu(m_plus - lengths))
  absent = lambda_ * (1.0 - targets) * jnp.square(jax.nn.relu(lengths - m_minus))
  return jnp.sum(present + absent, axis=-1)


def reconstruction_loss(reconstructions: jax.Array,
                        images: jax.Array) -> jax.Array:
  """Sum of squared pixel errors per example (Section 4.1).

  The paper scales this by 0.0005 before adding it to the margin loss; that
  weight belongs to the caller.

  Args:
    reconstructions: `[batch, ...]`, e.g. the decoder's `[batch, H*W*C]`.
    images: `[batch, ...]`, e.g. `[batch, H, W, C]`, with the same number of
      values per example as `reconstructions`.

  Returns:
    `[batch]`, the summed squared error of each example.
  """
  reconstructions, images = jnp.asarray(reconstructions), jnp.asarray(images)
  batch = images.shape[0]
  if (reconstructions.shape[0] != batch
      or reconstructions.size != images.size):
    raise ValueError(
        f'reconstructions {reconstructions.shape} and images {images.shape} '
        f'must have the same batch size and values per example.')
  diff = reconstructions.reshape(batch, -1) - images.reshape(batch, -1)
  return jnp.sum(jnp.square(diff), axis=-1)


def multi_hot(pairs: jax.Array, num_classes: int) -> jax.Array:
  """`[B, T]` class indices -> `[B, num_classes]` targets, 1 where present."""
  return jnp.max(jax.nn.one_hot(pairs, num_classes), axis=-2)


def pair_reconstruction_loss(reconstructions: jax.Array, digits: jax.Array,
                             decoded: jax.Array,
                             labels: jax.Array) -> jax.Array:
  """Sum of the two digits' reconstruction losses (MultiMNIST, Section 6).

  Reconstruction t was decoded from the capsule of class `decoded[:, t]`;
  it is compared with the digit of that class. In training `decoded` is
  `labels`; at test time it is the two longest capsules, and when one of
  them is a label in the other slot the pair is compared crosswise.

  Args:
    reconstructions: `[B, 2, H, W, C]`.
    digits: `[B, 2, H, W, C]`, the digits in the order of `labels`.
    decoded: `[B, 2]` int, the classes the reconstructions were decoded from.
    labels: `[B, 2]` int, the classes of `digits`.

  Returns:
    `[B]`.
  """
  def pair_loss(first, second):
    return (reconstruction_loss(reconstructions[:, 0], first)
            + reconstruction_loss(reconstructions[:, 1], second))
  crossed = ((decoded[:, 0] == labels[:, 1]) | (decoded[:, 1] == labels[:, 0]))
  return jnp.where(crossed, pair_loss(digits[:, 1], digits[:, 0]),
                   pair_loss(digits[:, 0], digits[:, 1]))


def margin_objective(outputs, batch, loss_config,
                     step=None) -> dict[str, jax.Array]:
  """The paper's loss: margin loss + weight x reconstruction loss (Sec. 4.1).

  A CapsNet with a linear readout (`outputs.logits` not None) trains its
  logits with cross-entropy in the margin loss's place, as Tsai et al.
  (2020) train theirs (`classification_cross_entropy`).

  Args:
    outputs: with `scores: [B, K]` capsule lengths and `reconstructions`
      (`[B, H, W, C]`, or `[B, 2, H, W, C]` with `decoded: [B, 2]` for
      images of two digits, or None when the decoder did not run).
    batch: with `label` (`[B]` classes) and `image`; or, for MultiMNIST,
      `label: [B, 2]` (both present in the margin loss) and `digits:
      [B, 2, H, W, C]` (each reconstruction's target).
    loss_config: `config.loss`: m_plus, m_minus, lambda_,
      reconstruction_weight.
    step: unused (no schedule).

  Returns:
    Per-example 'loss', 'margin_loss' (or 'cross_entropy' with a linear
    readout) and 'reconstruction_loss', each `[B]`.
  """
  labels = batch['label']
  pairs = 'digits' in batch
  if getattr(outputs, 'logits', None) is not None:
    name = 'cross_entropy'
    classification = classification_cross_entropy(outputs.logits, labels)
  else:
    name = 'margin_loss'
    targets = multi_hot(labels, outputs.scores.shape[-1]) if pairs else labels
    classification = margin_loss(
        outputs.scores, targets, m_plus=loss_config.m_plus,
        m_minus=loss_config.m_minus, lambda_=loss_config.lambda_)
  if outputs.reconstructions is None:
    recon = jnp.zeros_like(classification)
  elif pairs:
    recon = pair_reconstruction_loss(outputs.reconstructions, batch['digits'],
                                     outputs.decoded, labels)
  else:
    recon = reconstruction_loss(outputs.reconstructions, batch['image'])
  total = classification + loss_config.reconstruction_weight * recon
  return {'loss': total, name: classification, 'reconstruction_loss': recon}


def spread_margin(step, *, start: float = 0.2, end: float = 0.9,
                  ramp_steps: int = 1) -> jax.Array:
  """The spread loss margin m at `step`: `start` rising linearly to `end`.

  "We start with a small margin of 0.2 and linearly increase it during
  training to 0.9" (Hinton, Sabour & Frosst 2018, Sec. 3.1); the length of
  the ramp is not given, hence `ramp_steps` (m = end from then on).
  """
  fraction = jnp.clip(jnp.asarray(step, jnp.float32) / ramp_steps, 0.0, 1.0)
  return start + (end - start) * fraction


def spread_loss(activations: jax.Array, labels: jax.Array,
                margin) -> jax.Array:
  """Spread loss, summed over the wrong classes (Sec. 3.1).

    L = sum_{i != t} max(0, m - (a_t - a_i))^2

  Args:
    activations: `[batch, num_classes]` class capsule activations a_i.
    labels: `[batch]` integer target classes t.
    margin: m, a scalar (see `spread_margin`).

  Returns:
    `[batch]`, the loss of each example.
  """
  activations, labels = jnp.asarray(activations), jnp.asarray(labels)
  if labels.shape != activations.shape[:-1]:
    raise ValueError(
        f'labels must be class indices of shape {activations.shape[:-1]}, got '
        f'shape {labels.shape}.')
  target = jax.nn.one_hot(labels, activations.shape[-1],
                          dtype=activations.dtype)
  a_t = jnp.sum(target * activations, axis=-1, keepdims=True)
  wrong = 1.0 - target
  return jnp.sum(wrong * jnp.square(jax.nn.relu(margin - (a_t - activations))),
                 axis=-1)


def spread_objective(outputs, batch, loss_config,
                     step=None) -> dict[str, jax.Array]:
  """The matrix capsules' loss: spread loss with the margin schedule.

  Args:
    outputs: with `scores: [B, K]` class activations.
    batch: with `label: [B]`.
    loss_config: `config.loss`: spread_margin_start, spread_margin_end,
      spread_margin_steps.
    step: the training step of the parameters (None: the final margin, e.g.
      for a finished model).

  Returns:
    Per-example 'loss' and 'spread_loss', `[B]`, and the 'margin' used
    (broadcast to `[B]`).
  """
  if step is None:
    step = loss_config.spread_margin_steps
  margin = spread_margin(step, start=loss_config.spread_margin_start,
                         end=loss_config.spread_margin_end,
                         ramp_steps=loss_config.spread_margin_steps)
  loss = spread_loss(outputs.scores, batch['label'], margin)
  return {'loss': loss, 'spread_loss': loss,
          'margin': jnp.broadcast_to(margin, loss.shape)}


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """`-log softmax(logits)[label]`: `[B, K]`, `[B]` int -> `[B]`."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]


def sigmoid_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Binary cross-entropy of every class, summed: `[B, K]`, `[B, K]` -> `[B]`.

  One independent sigmoid per class, so several classes can be present.
  """
  per_class = (jax.nn.softplus(logits) - targets * logits)
  return jnp.sum(per_class, axis=-1)


def classification_cross_entropy(logits: jax.Array,
                                 labels: jax.Array) -> jax.Array:
  """Cross-entropy of class logits `[B, K]` against `labels` -> `[B]`.

  Softmax cross-entropy for one label per image (`labels: [B]`); for two
  digits per image (`labels: [B, 2]`, MultiMNIST) a sigmoid per class with
  both labels as targets, as the paper's official code trains its
  MultiMNIST baseline.
  """
  if labels.ndim == 2:
    return sigmoid_cross_entropy(logits, multi_hot(labels, logits.shape[-1]))
  return softmax_cross_entropy(logits, labels)


def cross_entropy_objective(outputs, batch, loss_config,
                            step=None) -> dict[str, jax.Array]:
  """The baseline CNN's loss (Section 5): cross-entropy of its logits
  (`classification_cross_entropy`).

  Args:
    outputs: with `scores: [B, K]` logits.
    batch: with `label`, `[B]` or `[B, 2]` int.
    loss_config: unused (the baseline has no loss hyperparameters).
    step: unused.

  Returns:
    `{'loss': [B]}`.
  """
  del loss_config, step
  return {'loss': classification_cross_entropy(outputs.scores,
                                               batch['label'])}
