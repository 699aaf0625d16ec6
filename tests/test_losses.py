"""Tests for capsjax.losses against loop transcriptions of the paper."""
import collections

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from capsjax import losses


def loop_margin(lengths, targets, m_plus=0.9, m_minus=0.1, lam=0.5):
  out = []
  for row, t_row in zip(lengths, targets):
    total = 0.0
    for length, t in zip(row, t_row):
      total += t * max(0.0, m_plus - length) ** 2
      total += lam * (1 - t) * max(0.0, length - m_minus) ** 2
    out.append(total)
  return np.array(out)


def random_lengths(seed, shape=(6, 10)):
  return np.random.default_rng(seed).uniform(0.0, 1.0, size=shape).astype(np.float32)


def test_margin_loss_matches_loop_with_integer_labels():
  lengths = random_lengths(0)
  labels = np.array([0, 3, 9, 3, 5, 1])
  got = losses.margin_loss(lengths, labels)
  assert got.shape == (6,)
  np.testing.assert_allclose(got, loop_margin(lengths, np.eye(10)[labels]), rtol=1e-5)


def test_margin_loss_configurable_constants():
  lengths = random_lengths(1)
  labels = np.arange(6)
  got = losses.margin_loss(lengths, labels, m_plus=0.8, m_minus=0.3, lambda_=0.25)
  expected = loop_margin(lengths, np.eye(10)[labels], 0.8, 0.3, 0.25)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_margin_loss_accepts_one_hot_and_multi_hot_targets():
  lengths = random_lengths(2)
  labels = np.array([1, 2, 3, 4, 5, 6])
  np.testing.assert_allclose(losses.margin_loss(lengths, np.eye(10)[labels]),
                             losses.margin_loss(lengths, labels), rtol=1e-6)
  multi = np.zeros((6, 10))
  multi[np.arange(6), labels] = 1
  multi[np.arange(6), (labels + 4) % 10] = 1
  np.testing.assert_allclose(losses.margin_loss(lengths, multi),
                             loop_margin(lengths, multi), rtol=1e-5)


def test_margin_loss_zero_when_margins_met():
  lengths = np.full((2, 10), 0.05, np.float32)
  lengths[0, 4] = lengths[1, 7] = 0.95
  np.testing.assert_array_equal(losses.margin_loss(lengths, np.array([4, 7])), 0.0)


def test_margin_loss_finite_gradient_at_zero_lengths():
  g = jax.grad(lambda l: losses.margin_loss(l, jnp.array([1, 2])).sum())(
      jnp.zeros((2, 10)))
  assert np.all(np.isfinite(g))
  # Only the present class pulls: d/dl (0.9 - l)^2 = -1.8 at l = 0.
  np.testing.assert_allclose(g[0, 1], -1.8, rtol=1e-6)
  assert g[0, 0] == 0.0


def test_margin_loss_bad_label_shape():
  with pytest.raises(ValueError, match='labels must be class indices'):
    losses.margin_loss(jnp.zeros((4, 10)), jnp.zeros((5,), jnp.int32))


def test_reconstruction_loss_matches_loop():
  rng = np.random.default_rng(3)
  images = rng.uniform(size=(3, 4, 4, 1)).astype(np.float32)
  recon = rng.uniform(size=(3, 16)).astype(np.float32)
  got = losses.reconstruction_loss(recon, images)
  assert got.shape == (3,)
  for b in range(3):
    flat = images[b].reshape(-1)
    expected = sum((float(recon[b, k]) - float(flat[k])) ** 2 for k in range(16))
    assert float(got[b]) == pytest.approx(expected, rel=1e-5)


def test_reconstruction_loss_size_mismatch():
  with pytest.raises(ValueError, match='same batch size and values per example'):
    losses.reconstruction_loss(jnp.zeros((3, 15)), jnp.zeros((3, 4, 4, 1)))


def test_accepts_python_lists():
  got = losses.margin_loss([[0.95, 0.05], [0.5, 0.5]], [0, 1])
  np.testing.assert_allclose(got, [0.0, 0.5 * 0.4**2 + 0.4**2], rtol=1e-5)
  np.testing.assert_allclose(losses.reconstruction_loss([[1.0, 2.0]], [[0.0, 0.0]]), [5.0])


# What an objective reads of a model's outputs.
Outputs = collections.namedtuple('Outputs', 'scores reconstructions')
CapsOutputs = collections.namedtuple('CapsOutputs',
                                     'scores logits reconstructions')


def test_margin_objective_reads_each_constant_from_the_config():
  # Lengths on both sides of both margins, constants far from the defaults:
  # any two of them swapped, or a default used instead, changes the loss.
  lengths = jnp.array([[0.05, 0.3, 0.6, 0.95], [0.5, 0.15, 0.8, 0.2]])
  labels = jnp.array([2, 1])
  images = jnp.full((2, 2, 2, 1), 0.5)
  recons = jnp.zeros((2, 2, 2, 1))
  config = ml_collections.ConfigDict({'m_plus': 0.7, 'm_minus': 0.2,
                                      'lambda_': 0.3,
                                      'reconstruction_weight': 0.01})
  outputs = Outputs(scores=lengths, reconstructions=recons)
  got = losses.margin_objective(outputs, {'label': labels, 'image': images},
                                config)
  t = np.eye(4)[np.asarray(labels)]
  length = np.asarray(lengths)
  margin = np.sum(t * np.maximum(0, 0.7 - length) ** 2 + 0.3 * (1 - t) *
                  np.maximum(0, length - 0.2) ** 2, axis=-1)
  np.testing.assert_allclose(got['margin_loss'], margin, rtol=1e-6)
  np.testing.assert_allclose(got['reconstruction_loss'], [1.0, 1.0],
                             rtol=1e-6)
  np.testing.assert_allclose(got['loss'], margin + 0.01, rtol=1e-6)


def test_margin_objective_trains_a_linear_readout_with_cross_entropy():
  # Tsai et al. (2020): a CapsNet whose scores are logits is trained with
  # softmax cross-entropy in the margin loss's place; the reconstruction
  # term stays.
  logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]], np.float32)
  labels = np.array([0, 1])
  outputs = CapsOutputs(scores=jnp.asarray(logits), logits=jnp.asarray(logits),
                        reconstructions=jnp.zeros((2, 2, 2, 1)))
  config = ml_collections.ConfigDict({'m_plus': 0.9, 'm_minus': 0.1,
                                      'lambda_': 0.5,
                                      'reconstruction_weight': 0.01})
  got = losses.margin_objective(
      outputs, {'label': jnp.asarray(labels),
                'image': jnp.full((2, 2, 2, 1), 0.5)}, config)
  z = logits.astype(np.float64)
  want = np.log(np.exp(z).sum(-1)) - z[np.arange(2), labels]
  assert 'margin_loss' not in got
  np.testing.assert_allclose(got['cross_entropy'], want, rtol=1e-5)
  np.testing.assert_allclose(got['loss'], want + 0.01, rtol=1e-5)


# ------------------------------------------ two digits per image (MultiMNIST) --
# Section 6: both digits of an image are present classes, T_k = 1 for each.


def loop_multi_hot(pairs, num_classes):
  targets = np.zeros((len(pairs), num_classes))
  for b, row in enumerate(pairs):
    for k in row:
      targets[b, k] = 1.0
  return targets


def test_multi_hot_marks_every_digit():
  pairs = np.array([[3, 7], [0, 9], [5, 2], [4, 4]])  # a repeat counts once
  np.testing.assert_array_equal(losses.multi_hot(pairs, 10),
                                loop_multi_hot(pairs, 10))
  triples = np.array([[1, 0, 4], [2, 3, 1]])
  np.testing.assert_array_equal(losses.multi_hot(triples, 5),
                                loop_multi_hot(triples, 5))


def test_margin_objective_counts_both_digits_present():
  lengths = random_lengths(4, (4, 10))
  pairs = np.array([[3, 7], [0, 9], [5, 2], [8, 1]])
  config = ml_collections.ConfigDict({'m_plus': 0.9, 'm_minus': 0.1,
                                      'lambda_': 0.5,
                                      'reconstruction_weight': 0.0})
  outputs = Outputs(scores=jnp.asarray(lengths), reconstructions=None)
  batch = {'label': jnp.asarray(pairs), 'image': jnp.zeros((4, 6, 6, 1)),
           'digits': jnp.zeros((4, 2, 6, 6, 1))}
  got = losses.margin_objective(outputs, batch, config)
  want = loop_margin(lengths, loop_multi_hot(pairs, 10))
  np.testing.assert_allclose(got['margin_loss'], want, rtol=1e-5)
  np.testing.assert_allclose(got['loss'], want, rtol=1e-5)


def test_cross_entropy_objective_counts_both_digits_present():
  # The baseline's MultiMNIST loss: one sigmoid per class, both digits'
  # classes targets 1, every other class 0.
  logits = np.random.default_rng(5).normal(size=(4, 10)).astype(np.float32)
  pairs = np.array([[3, 7], [0, 9], [5, 2], [8, 1]])
  got = losses.cross_entropy_objective(
      Outputs(scores=jnp.asarray(logits), reconstructions=None),
      {'label': jnp.asarray(pairs)}, None)
  targets = loop_multi_hot(pairs, 10)
  want = []
  for row, t_row in zip(logits.astype(np.float64), targets):
    total = 0.0
    for z, t in zip(row, t_row):
      p = 1.0 / (1.0 + np.exp(-z))
      total -= t * np.log(p) + (1 - t) * np.log(1 - p)
    want.append(total)
  np.testing.assert_allclose(got['loss'], want, rtol=1e-5)
