"""End-to-end tests of capsjax.train on tfds mock data with a shrunk CapsNet."""
import functools
import json
import logging
import os

import jax
import numpy as np
import pytest
import runpy
import tensorflow_datasets as tfds

from capsjax import checkpoints
from capsjax import input_pipeline
from capsjax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_MOCK = 40  # examples per split; 40 test examples = 2 full + 1 partial batch


def small_config(**overrides):
  config = runpy.run_path(os.path.join(ROOT, 'configs', 'mnist.py'))[
      'get_config']()
  config.batch_size = 8
  config.eval_batch_size = 16
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.model.conv1_channels = 8
  config.model.primary_types = 2
  config.model.primary_dim = 4
  config.model.digit_dim = 6
  config.model.decoder_hidden = (16, 32)
  config.update_from_flattened_dict(overrides)
  return config


def run(config, workdir):
  with tfds.testing.mock_data(num_examples=NUM_MOCK):
    return train.train_and_evaluate(config, str(workdir))


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def params_close(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


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
  assert meta['step'] == 4 and meta['seed'] == 0 and meta['batch_size'] == 8


def test_shape_changing_override_is_refused(tmp_path):
  run(small_config(num_train_steps=2), tmp_path)
  with pytest.raises(checkpoints.CheckpointMismatchError) as e:
    run(small_config(num_train_steps=4, **{'model.digit_dim': 5}), tmp_path)
  message = str(e.value)
  assert '\n' not in message
  assert 'model.digit_dim: 6 in the checkpoint, 5 now' in message
  assert '--workdir' in message
  # The refused run wrote no checkpoint and left the record of the run alone.
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2']
  with open(tmp_path / 'config.json') as f:
    assert json.load(f)['model']['digit_dim'] == 6


@pytest.mark.parametrize('field,value', [('batch_size', 0),
                                         ('num_train_steps', -1),
                                         ('model.routing_iters', 0)])
def test_bad_config_values(tmp_path, field, value):
  with pytest.raises(train.ConfigError, match=f'config.{field} must be an int'):
    run(small_config(**{field: value}), tmp_path)


@pytest.mark.parametrize('field,value', [('model.conv_impl', 'fft'),
                                         ('model.compute_dtype', 'float16')])
def test_bad_config_choices(tmp_path, field, value):
  with pytest.raises(train.ConfigError,
                     match=f'config.{field} must be one of .*, got {value!r}'):
    run(small_config(**{field: value}), tmp_path)


@pytest.mark.parametrize('value', [-1, 3])
def test_bad_microbatch_size(tmp_path, value):
  with pytest.raises(train.ConfigError,
                     match='config.microbatch_size must be 0 .* divides'):
    run(small_config(microbatch_size=value), tmp_path)


def test_microbatches_give_the_same_step():
  config = small_config()
  stub = input_pipeline.Split(np.zeros((1, 28, 28, 1), np.uint8),
                              np.zeros((1,), np.int32))
  dataset = input_pipeline.Dataset('random', stub, stub, num_classes=10)
  model = train.create_model(config.model, dataset)
  state = train.create_train_state(config, model, jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {'image': rng.random((8, 28, 28, 1), np.float32),
           'label': rng.integers(0, 10, 8).astype(np.int32)}
  steps = {n: jax.jit(functools.partial(
      train.train_step, loss_config=config.loss, num_microbatches=n))
           for n in (1, 2, 4)}
  want_state, want = steps[1](state, batch)
  for n in (2, 4):
    got_state, got = steps[n](state, batch)
    assert set(got) == set(want)
    for key in want:
      np.testing.assert_allclose(got[key], want[key], rtol=2e-5, err_msg=key)
    params_close(got_state.params, want_state.params)


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(train.ConfigError, match='cannot write to workdir'):
    run(small_config(), blocker / 'run')


def test_non_finite_loss_stops_before_anything_is_saved(tmp_path, monkeypatch,
                                                        caplog):
  # Checkpoints at 2, 4, 6; the batch of step 5 is poisoned with NaN pixels,
  # which step 6's boundary (not a log step) must catch and attribute to 5.
  config = small_config(num_train_steps=6, log_every_steps=3,
                        eval_every_steps=6, checkpoint_every_steps=2,
                        **{'model.conv_impl': 'xla'})
  clean_batch = input_pipeline.train_batch

  def poisoned_batch(split, step, **kwargs):
    batch = clean_batch(split, step, **kwargs)
    if step == 4:  # 0-based batch index: the batch of step 5
      batch['image'] = np.full_like(batch['image'], np.nan)
    return batch

  monkeypatch.setattr(input_pipeline, 'train_batch', poisoned_batch)
  with pytest.raises(train.NonFiniteError) as e:
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
  monkeypatch.setattr(input_pipeline, 'train_batch', clean_batch)
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


def test_evaluate_counts_every_example_once(tmp_path):
  # 13 examples in batches of 5: 5 + 5 + 3 real rows, 2 rows of padding.
  config = small_config(**{'model.conv1_kernel': 3, 'model.primary_kernel': 3,
                           'model.conv_impl': 'xla'})
  rng = np.random.default_rng(0)
  split = input_pipeline.Split(
      images=rng.integers(0, 256, (13, 12, 12, 1)).astype(np.uint8),
      labels=rng.integers(0, 10, 13).astype(np.int32))
  dataset = input_pipeline.Dataset(name='random', train=split, test=split,
                                   num_classes=10)
  model = train.create_model(config.model, dataset)
  state = train.create_train_state(config, model, jax.random.key(0))
  eval_step_fn = jax.jit(functools.partial(train.eval_step,
                                           loss_config=config.loss))
  metrics = train.evaluate(eval_step_fn, state, split, batch_size=5)
  assert metrics['num_examples'] == 13

  # All 13 at once, as the test-time forward pass sees them.
  batch = {'image': split.images.astype(np.float32) / 255,
           'label': split.labels}
  outputs = jax.jit(model.apply)({'params': state.params}, batch['image'])
  direct = jax.tree.map(lambda x: float(np.mean(x)), train._per_example_losses(
      outputs, batch, config.loss))
  assert 0 < direct['accuracy'] < 1  # so a miscounted example would show
  for key, value in direct.items():
    assert metrics[key] == pytest.approx(value, rel=1e-5), key
