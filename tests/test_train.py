"""End-to-end tests of capsjax.train on tfds mock data with a shrunk CapsNet."""
import functools
import json
import logging
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import capsjax
from capsjax import checkpoints
from capsjax import data
from capsjax import errors
from capsjax import losses
from capsjax import models
from capsjax import train
from capsjax.data import batching
from conftest import small_config

# The runs of small_config() compile once (conftest).

NUM_MOCK = 40  # examples per split; 40 test examples = 2 full + 1 partial batch


def run(config, workdir):
  with tfds.testing.mock_data(num_examples=NUM_MOCK):
    return train.train_and_evaluate(config, str(workdir))


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def params_close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


@pytest.mark.slow  # trains or compiles a whole model
def test_train_and_evaluate_writes_the_workdir(tmp_path):
  state, summary = run(small_config(), tmp_path)
  assert int(state.step) == 4
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f) == summary
  assert summary['steps'] == 4
  assert summary['test_examples'] == NUM_MOCK  # the partial batch counted once
  assert 0.0 <= summary['test_accuracy'] <= 1.0
  assert summary['test_error_pct'] == pytest.approx(
      100 * (1 - summary['test_accuracy']))
  assert summary['train_images_per_s'] > 0 and summary['wall_s'] > 0
  assert summary['dataset'] == 'tfds:mnist'
  # Later versions name the one that wrote a workdir they cannot read.
  assert summary['capsjax_version'] == capsjax.__version__

  records = read_jsonl(tmp_path / 'metrics.jsonl')
  train_steps = [r['step'] for r in records if r['split'] == 'train']
  test_steps = [r['step'] for r in records if r['split'] == 'test']
  assert train_steps == [2, 4] and test_steps == [2, 4]
  train_record = next(r for r in records if r['split'] == 'train')
  for key in ('loss', 'margin_loss', 'reconstruction_loss', 'accuracy',
              'error_pct', 'grad_norm', 'param_norm', 'learning_rate'):
    assert np.isfinite(train_record[key]), key
  # The batch loss is margin + 0.0005 x reconstruction.
  assert train_record['loss'] == pytest.approx(
      train_record['margin_loss'] + 0.0005 *
      train_record['reconstruction_loss'], rel=1e-5)
  for split in ('train', 'test'):
    events = os.listdir(tmp_path / 'tensorboard' / split)
    assert any(name.startswith('events.out.tfevents') for name in events)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '4']
  with open(tmp_path / 'config.json') as f:
    assert json.load(f)['model']['conv1_channels'] == 8


@pytest.mark.slow  # trains or compiles a whole model
def test_resume_and_extend_equal_an_uninterrupted_run(tmp_path):
  _, _ = run(small_config(num_train_steps=4), tmp_path / 'split')
  resumed_state, resumed = run(small_config(num_train_steps=6),
                               tmp_path / 'split')
  straight_state, straight = run(small_config(num_train_steps=6),
                                 tmp_path / 'straight')
  assert int(resumed_state.step) == int(straight_state.step) == 6
  params_close(resumed_state.params, straight_state.params)
  params_close(resumed_state.opt_state, straight_state.opt_state)
  assert resumed['test_accuracy'] == pytest.approx(straight['test_accuracy'])
  assert resumed['test_loss'] == pytest.approx(straight['test_loss'], rel=1e-5)


@pytest.mark.slow  # trains or compiles a whole model
def test_restore_returns_the_saved_state_and_finished_runs_are_kept(tmp_path):
  state, summary = run(small_config(), tmp_path)
  lines = len(read_jsonl(tmp_path / 'metrics.jsonl'))
  # Rerunning the finished command trains nothing and returns the summary.
  again_state, again = run(small_config(), tmp_path)
  assert again == summary
  assert len(read_jsonl(tmp_path / 'metrics.jsonl')) == lines
  params_close(again_state.params, state.params)
  # The checkpoint restores to exactly the returned state.
  ckpt = checkpoints.Checkpointer(str(tmp_path / 'checkpoints'))
  restored, meta = ckpt.restore(4, state)
  ckpt.close()
  params_close(restored.params, state.params)
  assert meta['seed'] == 0 and meta['batch_size'] == 8
  assert meta['model']['conv1_channels'] == 8


@pytest.mark.slow  # trains or compiles a whole model
def test_shape_changing_override_is_refused(tmp_path):
  run(small_config(num_train_steps=2), tmp_path)
  with pytest.raises(errors.CheckpointMismatchError) as e:
    run(small_config(num_train_steps=4, **{'model.digit_dim': 5}), tmp_path)
  message = str(e.value)
  assert '\n' not in message
  assert 'model.digit_dim: 6 in the checkpoint, 5 now' in message
  assert '--workdir' in message
  # The refused run wrote no checkpoint and left the record of the run alone.
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2']
  with open(tmp_path / 'config.json') as f:
    assert json.load(f)['model']['digit_dim'] == 6


# For 12x12 images: 3x3 kernels and XLA's convolution compile in seconds.
TINY = {'model.conv1_kernel': 3, 'model.primary_kernel': 3,
        'model.conv_impl': 'xla'}


def small_state(config, image_shape=(28, 28, 1)):
  model = models.create_model(config.model, image_shape, 10)
  return model, train.create_train_state(config, model, jax.random.key(0))


def random_batch(size=8, seed=0, height=28):
  rng = np.random.default_rng(seed)
  return {'image': rng.random((size, height, height, 1), np.float32),
          'label': rng.integers(0, 10, size).astype(np.int32)}


@pytest.mark.slow  # trains or compiles a whole model
def test_microbatches_give_the_same_step():
  config = small_config(**{'model.conv1_kernel': 3, 'model.primary_kernel': 3})
  _, state = small_state(config, image_shape=(12, 12, 1))
  batch = random_batch(height=12)
  objective = models.spec(config.model).objective
  steps = {n: jax.jit(functools.partial(
      train.train_step, rng=jax.random.key(1), objective=objective,
      loss_config=config.loss, num_microbatches=n))
           for n in (1, 2, 4)}
  want_state, want = steps[1](state, batch)
  for n in (2, 4):
    got_state, got = steps[n](state, batch)
    assert set(got) == set(want)
    for key in want:
      np.testing.assert_allclose(got[key], want[key], rtol=2e-5, err_msg=key)
    params_close(got_state.params, want_state.params)


@pytest.mark.slow  # compiles a whole model
def test_microbatches_bound_the_working_set():
  # Parts of a quarter of the batch need about a quarter of its scratch;
  # unrolled, XLA:CPU kept every part's buffers alive at once.
  config = small_config(**{'model.conv1_kernel': 3, 'model.primary_kernel': 3})
  _, state = small_state(config, image_shape=(12, 12, 1))
  batch = random_batch(size=64, height=12)
  objective = models.spec(config.model).objective
  scratch = {}
  for n in (1, 4):
    step = jax.jit(functools.partial(
        train.train_step, rng=jax.random.key(1), objective=objective,
        loss_config=config.loss, num_microbatches=n))
    compiled = step.lower(state, batch).compile()
    scratch[n] = compiled.memory_analysis().temp_size_in_bytes
  assert scratch[4] < 0.4 * scratch[1], scratch


def test_learning_rate_schedule_decays_in_steps():
  config = small_config(learning_rate=0.01, lr_decay_rate=0.5,
                        lr_decay_steps=3)
  schedule = train.learning_rate_schedule(config)
  got = [float(schedule(step)) for step in range(8)]
  np.testing.assert_allclose(got, [0.01] * 3 + [0.005] * 3 + [0.0025] * 2,
                             rtol=1e-6)


def test_train_state_steps_with_the_decayed_rate():
  # With a constant gradient every Adam update is the learning rate times
  # g / (|g| + eps), about the rate itself: the step sizes show the schedule.
  config = small_config(learning_rate=0.01, lr_decay_rate=0.5,
                        lr_decay_steps=2, **TINY)
  _, state = small_state(config, image_shape=(12, 12, 1))
  ones = jax.tree.map(np.ones_like, state.params)
  kernel = lambda s: np.asarray(s.params['conv1']['kernel'])
  apply_gradients = jax.jit(lambda s: s.apply_gradients(grads=ones))
  sizes = []
  for _ in range(5):
    before = kernel(state)
    state = apply_gradients(state)
    sizes.append(float(np.mean(before - kernel(state))))
  np.testing.assert_allclose(sizes, [0.01, 0.01, 0.005, 0.005, 0.0025],
                             rtol=1e-3)


@pytest.mark.slow  # trains or compiles a whole model
def test_train_and_eval_steps_use_the_configured_loss_constants():
  # Constants far from the defaults, and m_plus != 1 - m_minus, so a step
  # that ignored them or swapped two of them would give another loss.
  constants = {'loss.m_plus': 0.7, 'loss.m_minus': 0.25, 'loss.lambda_': 0.3,
               'loss.reconstruction_weight': 0.01}
  config = small_config(**constants, **TINY)
  model, state = small_state(config, image_shape=(12, 12, 1))
  batch = random_batch(height=12)
  objective = models.spec(config.model).objective
  _, metrics = jax.jit(functools.partial(
      train.train_step, objective=objective, loss_config=config.loss))(
          state, batch, jax.random.key(1))
  apply = jax.jit(model.apply)
  outputs = apply({'params': state.params}, batch['image'], batch['label'],
                  train=True)
  margin = losses.margin_loss(outputs.scores, batch['label'], m_plus=0.7,
                              m_minus=0.25, lambda_=0.3)
  recon = losses.reconstruction_loss(outputs.reconstructions, batch['image'])
  assert float(metrics['margin_loss']) == pytest.approx(
      float(np.mean(margin)), rel=1e-5)
  assert float(metrics['loss']) == pytest.approx(
      float(np.mean(margin + 0.01 * recon)), rel=1e-5)
  sums = jax.jit(functools.partial(
      train.eval_step, objective=objective, loss_config=config.loss))(
          state, dict(batch, mask=np.ones(8, np.float32)))
  test_outputs = apply({'params': state.params}, batch['image'])
  test_margin = losses.margin_loss(test_outputs.scores, batch['label'],
                                   m_plus=0.7, m_minus=0.25, lambda_=0.3)
  assert float(sums['margin_loss']) == pytest.approx(
      float(np.sum(test_margin)), rel=1e-5)


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(errors.ConfigError, match='cannot write to workdir'):
    run(small_config(), blocker / 'run')


@pytest.mark.slow  # trains or compiles a whole model
def test_non_finite_loss_stops_before_anything_is_saved(tmp_path, monkeypatch,
                                                        caplog):
  # Checkpoints at 2, 4, 6; the batch of step 5 is poisoned with NaN pixels,
  # which step 6's boundary (not a log step) must catch and attribute to 5.
  config = small_config(num_train_steps=6, log_every_steps=3,
                        eval_every_steps=6, checkpoint_every_steps=2,
                        **{'model.conv_impl': 'xla'})
  clean_batch = batching.train_batch

  def poisoned_batch(split, step, **kwargs):
    batch = clean_batch(split, step, **kwargs)
    if step == 4:  # 0-based batch index: the batch of step 5
      batch['image'] = np.full_like(batch['image'], np.nan)
    return batch

  monkeypatch.setattr(batching, 'train_batch', poisoned_batch)
  with pytest.raises(errors.NonFiniteError) as e:
    run(config, tmp_path)
  message = str(e.value)
  assert '\n' not in message
  assert message.startswith('training stopped at step 5: loss = nan'), message
  assert 'grad_norm = nan' in message
  assert f'step 4 in {tmp_path / "checkpoints"}' in message
  assert '--config.learning_rate (now 0.001)' in message
  # Nothing of the bad state was saved or logged.
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '4']
  records = read_jsonl(tmp_path / 'metrics.jsonl')
  assert [(r['step'], r['split']) for r in records] == [(3, 'train')]
  assert not os.path.exists(tmp_path / 'summary.json')

  # With clean data the rerun resumes from the last good checkpoint.
  monkeypatch.setattr(batching, 'train_batch', clean_batch)
  with caplog.at_level(logging.INFO):
    state, summary = run(config, tmp_path)
  assert any('at step 4.' in r.getMessage() for r in caplog.records
             if r.getMessage().startswith('Resumed from'))
  assert int(state.step) == summary['steps'] == 6
  assert np.isfinite(summary['test_loss'])
  records = read_jsonl(tmp_path / 'metrics.jsonl')
  assert [(r['step'], r['split']) for r in records] == [
      (3, 'train'), (6, 'train'), (6, 'test')]


@pytest.mark.parametrize('values,expected', [
    ([{'loss': 1.0, 'grad_norm': 2.0, 'param_norm': 3.0}] * 3, None),
    ([{'loss': 1.0, 'grad_norm': 2.0, 'param_norm': 3.0},
      {'loss': 1.0, 'grad_norm': np.inf, 'param_norm': 3.0},
      {'loss': np.nan, 'grad_norm': np.nan, 'param_norm': 3.0}],
     (11, {'grad_norm': np.inf})),
    ([{'loss': 1.0, 'grad_norm': 2.0, 'param_norm': -np.inf}],
     (10, {'param_norm': -np.inf})),
])
def test_first_non_finite_names_the_step_and_the_quantity(values, expected):
  fetched = [{k: np.float32(v) for k, v in m.items()} for m in values]
  assert train._first_non_finite(fetched, first_step=10) == expected


@pytest.mark.slow  # trains or compiles a whole model
def test_evaluate_counts_every_example_once(tmp_path):
  # 13 examples in batches of 5: 5 + 5 + 3 real rows, 2 rows of padding.
  config = small_config(**{'model.conv1_kernel': 3, 'model.primary_kernel': 3,
                           'model.conv_impl': 'xla'})
  rng = np.random.default_rng(0)
  split = data.Split(
      images=rng.integers(0, 256, (13, 12, 12, 1)).astype(np.uint8),
      labels=rng.integers(0, 10, 13).astype(np.int32))
  model, state = small_state(config, image_shape=(12, 12, 1))
  objective = models.spec(config.model).objective
  eval_step_fn = jax.jit(functools.partial(
      train.eval_step, objective=objective, loss_config=config.loss))
  metrics = train.evaluate(eval_step_fn, state, split, batch_size=5)
  assert metrics['num_examples'] == 13

  # All 13 at once, as the test-time forward pass sees them.
  batch = {'image': split.images.astype(np.float32) / 255,
           'label': split.labels}
  outputs = jax.jit(model.apply)({'params': state.params}, batch['image'])
  direct = jax.tree.map(lambda x: float(np.mean(x)), train.per_example_metrics(
      objective, outputs, batch, config.loss, state.step))
  assert 0 < direct['accuracy'] < 1  # so a miscounted example would show
  for key, value in direct.items():
    assert metrics[key] == pytest.approx(value, rel=1e-5), key


class _Watched:
  """An iterator that notes, at each `next`, which train steps are done
  (their metrics computed)."""

  def __init__(self, batches, outputs, done):
    self._batches, self._outputs, self._done = batches, outputs, done

  def __next__(self):
    self._done.append([all(x.is_ready() for x in jax.tree.leaves(out))
                       for out in self._outputs])
    return next(self._batches)

  def close(self):
    self._batches.close()


@pytest.mark.slow  # trains or compiles a whole model
def test_the_host_runs_at_most_one_step_ahead(tmp_path, monkeypatch):
  # Dispatch is asynchronous: a host that ran a log interval ahead would
  # serve a stop request (SIGTERM) only after every step it dispatched.
  outputs, done = [], []
  jit_train_step = train.parallel.jit_train_step

  def noting_outputs(*args, **kwargs):
    step_fn = jit_train_step(*args, **kwargs)

    def step(*a):
      state, metrics = step_fn(*a)
      outputs.append(metrics)  # the state's buffers are donated to the next
      return state, metrics

    return step

  monkeypatch.setattr(train.parallel, 'jit_train_step', noting_outputs)
  train_batches = data.train_batches
  monkeypatch.setattr(data, 'train_batches', lambda *a, **k: _Watched(
      train_batches(*a, **k), outputs, done))
  config = small_config(num_train_steps=12, log_every_steps=12,
                        eval_every_steps=12, checkpoint_every_steps=12)
  run(config, tmp_path)
  assert len(done) == 12 and len(outputs) == 12
  # When the host takes the batch of step n, step n - 2 is done.
  assert [n for n, ready in enumerate(done, start=1)
          if n > 2 and not ready[n - 3]] == []
