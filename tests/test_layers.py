"""Tests for capsjax.layers: PrimaryCaps, Capsules, predictions, Decoder."""
import functools

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capsjax import conv
from capsjax import layers
from capsjax import ops
from capsjax import routing


def test_primary_caps_groups_channels_into_capsules():
  x = jax.random.normal(jax.random.key(0), (2, 14, 14, 5))
  module = layers.PrimaryCaps(num_types=3, dim=4, kernel_size=5, stride=2,
                              conv_impl='xla')
  params = module.init(jax.random.key(1), x)
  params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias too
  caps = module.apply(params, x)
  assert caps.shape == (2, 5 * 5 * 3, 4)  # (14 - 5) // 2 + 1 = 5
  p = params['params']
  y = conv.xla_conv(x, p['kernel'], 2) + p['bias']  # [2, 5, 5, 12]
  # Capsule (row 4, col 2, type 1) is channels 4:8 at that grid position.
  index = (4 * 5 + 2) * 3 + 1
  np.testing.assert_allclose(caps[:, index], ops.squash(y[:, 4, 2, 4:8]),
                             rtol=1e-5, atol=1e-6)
  assert float(jnp.max(ops.safe_norm(caps))) < 1.0


def test_primary_caps_impls_agree():
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (2, 20, 20, 8)))
  fast = layers.PrimaryCaps(num_types=4, dim=8, kernel_size=5,
                            conv_impl='slices')
  ref = layers.PrimaryCaps(num_types=4, dim=8, kernel_size=5, conv_impl='xla')
  params = fast.init(jax.random.key(1), x)
  loss = lambda module, p: jnp.sum(jnp.sin(module.apply(p, x)))
  np.testing.assert_allclose(fast.apply(params, x), ref.apply(params, x),
                             rtol=1e-5, atol=1e-6)
  g_fast = jax.grad(functools.partial(loss, fast))(params)
  g_ref = jax.grad(functools.partial(loss, ref))(params)
  for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_capsules_layer_matches_per_example_loop():
  num_in, dim_in, num_out, dim_out, batch = 6, 3, 4, 5, 3
  u = ops.squash(jax.random.normal(jax.random.key(0), (batch, num_in, dim_in)))
  module = layers.Capsules(num_out, dim_out, routing_iters=3)
  params = module.init(jax.random.key(1), u)
  w = params['params']['kernel']
  assert w.shape == (num_in, num_out, dim_out, dim_in)
  v, c = module.apply(params, u, return_couplings=True)
  assert v.shape == (batch, num_out, dim_out)
  assert c.shape == (batch, 3, num_in, num_out)
  for b in range(batch):
    u_hat = np.zeros((num_in, num_out, dim_out), np.float32)
    for i in range(num_in):
      for j in range(num_out):
        u_hat[i, j] = np.asarray(w[i, j]) @ np.asarray(u[b, i])  # W_ij u_i
    v_ref, c_ref = routing.dynamic_routing(u_hat, 3, return_couplings=True)
    np.testing.assert_allclose(v[b], v_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(c[b], c_ref, rtol=1e-4, atol=1e-6)


def test_predictions_equal_einsum_forward_and_gradient():
  with jax.enable_x64(True):
    kw, ku, kg = jax.random.split(jax.random.key(0), 3)
    w = jax.random.normal(kw, (7, 4, 5, 3), jnp.float64)
    u = jax.random.normal(ku, (6, 7, 3), jnp.float64)
    cotangent = jax.random.normal(kg, (6, 4, 7, 5), jnp.float64)
    reference = lambda w, u: jnp.einsum('ijdk,bik->bjid', w, u)
    got, pull = jax.vjp(layers.predictions, w, u)
    want, pull_ref = jax.vjp(reference, w, u)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    for g, r in zip(pull(cotangent), pull_ref(cotangent)):
      np.testing.assert_allclose(g, r, rtol=1e-12)


def test_capsules_layer_gradient_matches_batch_major_reference():
  # The layer routes u_hat in [B, J, I, D]; the textbook formulation is a
  # batch-major einsum and a vmap over axis 0. Same values and gradients.
  with jax.enable_x64(True):
    u = ops.squash(jax.random.normal(jax.random.key(0), (3, 6, 4),
                                     jnp.float64))
    module = layers.Capsules(5, 2, routing_iters=3,
                             kernel_init=jax.nn.initializers.normal(0.5))
    w = module.init(jax.random.key(1), u)['params']['kernel']

    def reference(w, u):
      u_hat = jnp.einsum('ijdk,bik->bijd', w, u)
      return jax.vmap(functools.partial(routing.dynamic_routing,
                                        num_iters=3))(u_hat)

    layer = lambda w, u: module.apply({'params': {'kernel': w}}, u)
    loss = lambda f: lambda w, u: jnp.sum(jnp.sin(3.0 * f(w, u)))
    np.testing.assert_allclose(layer(w, u), reference(w, u), rtol=1e-12)
    grads = jax.grad(loss(layer), argnums=(0, 1))(w, u)
    grads_ref = jax.grad(loss(reference), argnums=(0, 1))(w, u)
    for g, r in zip(grads, grads_ref):
      assert float(jnp.max(jnp.abs(r))) > 1e-3
      np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)


def test_capsules_layer_routes_each_example_independently():
  u = ops.squash(jax.random.normal(jax.random.key(0), (2, 6, 3)))
  module = layers.Capsules(4, 5, routing_iters=3,
                           kernel_init=jax.nn.initializers.normal(1.0))
  params = module.init(jax.random.key(1), u)
  other = u.at[1].set(ops.squash(jax.random.normal(jax.random.key(2), (6, 3))))
  v, v_other = module.apply(params, u), module.apply(params, other)
  np.testing.assert_allclose(v[0], v_other[0], rtol=1e-6)
  assert not np.allclose(v[1], v_other[1])


def test_mask_capsules_keeps_only_the_selected_capsule():
  caps = jax.random.normal(jax.random.key(0), (3, 4, 2))
  masked = layers.mask_capsules(caps, jnp.array([0, 3, 1]))
  for b, keep in enumerate([0, 3, 1]):
    for j in range(4):
      want = caps[b, j] if j == keep else jnp.zeros(2)
      np.testing.assert_array_equal(masked[b, j], want)


def test_decoder_sees_only_the_selected_capsule():
  caps = jax.random.normal(jax.random.key(0), (2, 4, 3))
  decoder = layers.Decoder((5, 6, 2), hidden=(8, 16))
  params = decoder.init(jax.random.key(1), caps, jnp.array([0, 0]))
  select = jnp.array([2, 1])
  images = decoder.apply(params, caps, select)
  assert images.shape == (2, 5, 6, 2)
  assert float(images.min()) > 0.0 and float(images.max()) < 1.0
  # Changing a capsule that is not selected changes nothing.
  changed = caps.at[:, 3].add(5.0)
  np.testing.assert_array_equal(decoder.apply(params, changed, select), images)
  assert not np.allclose(decoder.apply(params, caps, jnp.array([3, 1]))[0],
                         images[0])


# An image (patch_conv on CPU) and a feature map (sliced_conv), in both
# paddings; the baseline CNN's convolutions are SAME.
CONV_INPUTS = [((2, 14, 13, 1), 'VALID'), ((2, 9, 8, 6), 'VALID'),
               ((2, 9, 8, 6), 'SAME'), ((2, 8, 7, 1), 'SAME')]


@pytest.mark.parametrize('impl', ['slices', 'xla'])
@pytest.mark.parametrize('shape,padding', CONV_INPUTS)
def test_conv_is_nn_conv_with_the_same_parameters(impl, shape, padding):
  # CapsNet's Conv1 and the baseline's convolutions were nn.Conv: the same
  # parameter names, shapes and initial values, so old checkpoints load and
  # runs start the same; the same outputs and gradients (float64) whichever
  # implementation runs it.
  with jax.enable_x64(True):
    x = jax.random.uniform(jax.random.key(0), shape, jnp.float64)
    reference = flax.linen.Conv(5, (4, 4), padding=padding,
                                param_dtype=jnp.float64)
    ours = layers.Conv(5, 4, conv_impl=impl, padding=padding)
    params = reference.init(jax.random.key(3), x)
    initial = ours.init(jax.random.key(3), x)
    assert jax.tree.structure(initial) == jax.tree.structure(params)
    for got, want in zip(jax.tree.leaves(initial), jax.tree.leaves(params)):
      np.testing.assert_array_equal(got, want)
    loss = lambda module: lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
    np.testing.assert_allclose(ours.apply(params, x),
                               reference.apply(params, x), rtol=1e-12,
                               atol=1e-12)
    for got, want in zip(
        jax.tree.leaves(jax.grad(loss(ours), argnums=(0, 1))(params, x)),
        jax.tree.leaves(jax.grad(loss(reference), argnums=(0, 1))(params, x))):
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('impl', ['slices', 'xla'])
def test_conv_bfloat16_inputs_of_a_feature_map(impl):
  # A feature map's matmuls take bfloat16 inputs, accumulated in float32:
  # within bfloat16's rounding of the float32 result, and not equal to it.
  x = jax.random.uniform(jax.random.key(0), (2, 9, 8, 64))
  conv32 = layers.Conv(8, 3, conv_impl=impl, padding='SAME')
  conv16 = layers.Conv(8, 3, conv_impl=impl, padding='SAME',
                       compute_dtype='bfloat16')
  params = conv32.init(jax.random.key(1), x)
  want, got = conv32.apply(params, x), conv16.apply(params, x)
  assert got.dtype == jnp.float32
  scale = float(jnp.max(jnp.abs(want)))
  np.testing.assert_allclose(got, want, atol=2e-2 * scale)
  assert not np.allclose(got, want, atol=1e-5 * scale, rtol=0)


# ------------------------------------ matrix capsules, against loops ------
# Hinton, Sabour & Frosst (2018), Sec. 3, transcribed with plain loops over
# positions, kernel taps and capsule types. The routing itself is tested in
# test_em_routing.py; here each window is routed with routing.em_routing.


def _init_and_apply(layer, seed, *inputs):
  """Random values for every variable (the shapes of `layer.init`, without
  running it), then the jitted apply. Returns numpy `(params, outputs)`."""
  shapes = jax.eval_shape(layer.init, jax.random.key(0), *inputs)
  rng = np.random.default_rng(seed)
  variables = jax.tree.map(
      lambda v: 0.5 * rng.standard_normal(v.shape).astype(v.dtype), shapes)
  outputs = jax.jit(layer.apply)(variables, *inputs)
  return variables['params'], tuple(np.asarray(x) for x in outputs)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _em_reference(votes, activations, beta_u, beta_a, num_iters,
                  inverse_temperature):
  """routing.em_routing of each window on its own: votes `[N, n, J, 4, 4]`,
  activations `[N, n]` -> poses `[N, J, 4, 4]`, activations `[N, J]`."""
  votes = jnp.asarray(votes, jnp.float32)
  route = functools.partial(
      routing.em_routing, beta_u=beta_u, beta_a=beta_a, num_iters=num_iters,
      inverse_temperatures=routing.em_inverse_temperatures(
          num_iters, inverse_temperature))
  mu, a = jax.vmap(route)(votes.reshape(*votes.shape[:3], 16),
                          jnp.asarray(activations, jnp.float32))
  return mu.reshape(*mu.shape[:2], 4, 4), a


def test_matrix_primary_caps_matches_loop():
  # Each position's A channels -> per type t a 4x4 pose, a linear map of the
  # channels (entries row-major, type-major), and an activation, the
  # logistic of another linear map.
  batch, height, width, channels, types = 2, 3, 2, 5, 3
  x = np.random.default_rng(0).standard_normal(
      (batch, height, width, channels)).astype(np.float32)
  layer = layers.MatrixPrimaryCaps(num_types=types)
  p, (poses, acts) = _init_and_apply(layer, 1, x)
  assert poses.shape == (batch, height, width, types, 4, 4)
  assert acts.shape == (batch, height, width, types)
  xs = x.astype(np.float64)
  for b in range(batch):
    for h in range(height):
      for w in range(width):
        for t in range(types):
          logit = p['activation']['bias'][t] + sum(
              xs[b, h, w, c] * p['activation']['kernel'][c, t]
              for c in range(channels))
          assert acts[b, h, w, t] == pytest.approx(
              1.0 / (1.0 + np.exp(-logit)), rel=1e-5, abs=1e-6)
          for row in range(4):
            for col in range(4):
              k = t * 16 + row * 4 + col
              want = p['pose']['bias'][k] + sum(
                  xs[b, h, w, c] * p['pose']['kernel'][c, k]
                  for c in range(channels))
              assert poses[b, h, w, t, row, col] == pytest.approx(
                  want, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize('kernel,stride', [(3, 1), (3, 2), (2, 3)])
def test_patches_match_loop(kernel, stride):
  x = np.arange(2 * 9 * 7 * 2 * 3).reshape(2, 9, 7, 2, 3)
  got = np.asarray(jax.jit(layers._patches, static_argnums=(1, 2))(
      x, kernel, stride))
  out_h, out_w = (9 - kernel) // stride + 1, (7 - kernel) // stride + 1
  assert got.shape == (2, out_h, out_w, kernel * kernel, 2, 3)
  for b in range(2):
    for oy in range(out_h):
      for ox in range(out_w):
        for ky in range(kernel):
          for kx in range(kernel):
            np.testing.assert_array_equal(
                got[b, oy, ox, ky * kernel + kx],
                x[b, oy * stride + ky, ox * stride + kx])


@pytest.mark.parametrize('stride', [1, 2])
def test_conv_caps_matches_loop(stride):
  # Output position (oy, ox) routes the children of its k x k window: child
  # (ky, kx, i), input capsule n = (ky * k + kx) * T_in + i, votes
  # V_nj = M_child W_(ky, kx, i, j) for every parent type j.
  batch, height, width, t_in, t_out, k = 2, 5, 4, 2, 3, 3
  rng = np.random.default_rng(0)
  poses = rng.standard_normal((batch, height, width, t_in, 4, 4))
  acts = rng.uniform(0.1, 1.0, (batch, height, width, t_in))
  layer = layers.ConvCaps(num_types=t_out, kernel_size=k, stride=stride,
                          routing_iters=2, inverse_temperature=0.5)
  p, (out_poses, out_acts) = _init_and_apply(
      layer, 1, poses.astype(np.float32), acts.astype(np.float32))
  out_h, out_w = (height - k) // stride + 1, (width - k) // stride + 1
  assert out_poses.shape == (batch, out_h, out_w, t_out, 4, 4)
  assert out_acts.shape == (batch, out_h, out_w, t_out)
  w = p['kernel'].astype(np.float64)
  votes = np.zeros((batch, out_h, out_w, k * k * t_in, t_out, 4, 4))
  window_acts = np.zeros((batch, out_h, out_w, k * k * t_in))
  for b in range(batch):
    for oy in range(out_h):
      for ox in range(out_w):
        for ky in range(k):
          for kx in range(k):
            for i in range(t_in):
              n = (ky * k + kx) * t_in + i
              child = (b, oy * stride + ky, ox * stride + kx, i)
              window_acts[b, oy, ox, n] = acts[child]
              for j in range(t_out):
                votes[b, oy, ox, n, j] = poses[child] @ w[n, j]
  want_poses, want_acts = _em_reference(
      votes.reshape(-1, *votes.shape[3:]),
      window_acts.reshape(-1, k * k * t_in), p['beta_u'], p['beta_a'], 2,
      0.5)
  np.testing.assert_allclose(
      out_poses, np.reshape(want_poses, out_poses.shape), rtol=1e-4,
      atol=1e-5)
  np.testing.assert_allclose(out_acts, np.reshape(want_acts, out_acts.shape),
                             rtol=1e-4, atol=1e-6)


def test_class_caps_matches_loop():
  # Every position's type-t capsule votes V = M W_tj with one W_tj shared by
  # all positions; the scaled centre of its position, ((row + 0.5) / H,
  # (col + 0.5) / W), is added to V[0, 3] and V[1, 3] (coordinate
  # addition). Input capsule n = (row * W + col) * T + t, with its
  # activation.
  batch, height, width, types, classes = 2, 3, 4, 2, 3
  rng = np.random.default_rng(3)
  poses = rng.standard_normal((batch, height, width, types, 4, 4))
  acts = rng.uniform(0.1, 1.0, (batch, height, width, types))
  layer = layers.ClassCaps(num_classes=classes, routing_iters=3,
                           inverse_temperature=0.5)
  p, (out_poses, out_acts) = _init_and_apply(
      layer, 4, poses.astype(np.float32), acts.astype(np.float32))
  assert out_poses.shape == (batch, classes, 4, 4)
  assert out_acts.shape == (batch, classes)
  w = p['kernel'].astype(np.float64)
  votes = np.zeros((batch, height * width * types, classes, 4, 4))
  input_acts = np.zeros((batch, height * width * types))
  for b in range(batch):
    for row in range(height):
      for col in range(width):
        for t in range(types):
          n = (row * width + col) * types + t
          input_acts[b, n] = acts[b, row, col, t]
          for j in range(classes):
            votes[b, n, j] = poses[b, row, col, t] @ w[t, j]
            votes[b, n, j, 0, 3] += (row + 0.5) / height
            votes[b, n, j, 1, 3] += (col + 0.5) / width
  want_poses, want_acts = _em_reference(
      votes, input_acts, p['beta_u'], p['beta_a'], 3, 0.5)
  np.testing.assert_allclose(out_poses, want_poses, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out_acts, want_acts, rtol=1e-4, atol=1e-6)
