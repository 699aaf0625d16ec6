"""Tests of capsjax.checkpoints: interrupted saves and damaged checkpoints."""
import asyncio
import glob
import json
import logging
import os

from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import capsjax
from capsjax import checkpoints
from capsjax import errors
from capsjax import parallel

# A failed orbax read leaves tensorstore callbacks that report "Event loop is
# closed" when they run later (main.py drops them for CLI users).
pytestmark = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnraisableExceptionWarning')


def make_state(offset=0.0, shape=(64, 32)):
  # Random and big enough that the arrays go to a data file of their own
  # (small or compressible ones end up inline in OCDBT's index).
  noise = jax.random.normal(jax.random.key(0), shape)
  params = {'w': noise + offset, 'b': jnp.arange(5.0) + offset}
  return train_state.TrainState.create(apply_fn=None, params=params,
                                       tx=optax.adam(1e-3))


def save_steps(directory, steps):
  ckpt = checkpoints.Checkpointer(str(directory), max_to_keep=3)
  for step in steps:
    # After training the step is an int32 array; restored into a fresh
    # TrainState it becomes a Python int.
    state = make_state(float(step)).replace(step=jnp.asarray(step, jnp.int32))
    ckpt.save(step, state, {'step': step})
  ckpt.wait_until_finished()
  ckpt.close()


def damage(directory, step, how):
  """Damages the biggest file of checkpoint `step`: its array data."""
  files = [os.path.join(root, name)
           for root, _, names in os.walk(os.path.join(directory, str(step)))
           for name in names]
  path = max(files, key=os.path.getsize)
  assert os.path.getsize(path) > 64 * 32 * 2  # holds w (compressed)
  if how == 'truncate':
    os.truncate(path, os.path.getsize(path) // 2)
  else:
    with open(path, 'r+b') as f:
      f.seek(os.path.getsize(path) // 2)
      byte = f.read(1)
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte[0] ^ 0x01]))


def restore_latest(directory, target=None):
  ckpt = checkpoints.Checkpointer(str(directory), max_to_keep=3)
  try:
    return ckpt.restore_latest(target or make_state())
  finally:
    ckpt.close()


def test_restore_latest_returns_the_newest(tmp_path):
  assert restore_latest(tmp_path) is None
  save_steps(tmp_path, [1, 2])
  step, state, meta = restore_latest(tmp_path)
  assert step == 2 and meta == {'step': 2} and int(state.step) == 2
  np.testing.assert_array_equal(state.params['w'], make_state(2.0).params['w'])


def test_each_checkpoint_records_the_capsjax_version_that_wrote_it(tmp_path):
  save_steps(tmp_path, [1, 2])
  metas = sorted(glob.glob(str(tmp_path / '*' / 'meta' / 'metadata')))
  assert len(metas) == 2
  for path in metas:
    with open(path) as f:
      assert json.load(f)['capsjax_version'] == capsjax.__version__
  # Restoring hands back the caller's meta only.
  assert restore_latest(tmp_path)[2] == {'step': 2}


@pytest.mark.parametrize('how', ['truncate', 'flip'])
def test_damaged_latest_falls_back_with_a_warning(tmp_path, caplog, how):
  save_steps(tmp_path, [1, 2, 3])
  damage(tmp_path, 3, how)
  with caplog.at_level(logging.WARNING):
    step, state, meta = restore_latest(tmp_path)
  assert step == 2 and meta == {'step': 2}
  np.testing.assert_array_equal(state.params['b'], np.arange(5.0) + 2)
  warning, = [r.getMessage() for r in caplog.records
              if 'does not read back intact' in r.getMessage()]
  assert str(tmp_path / '3') in warning and 'step 2' in warning
  # Moved aside, not deleted, and out of the way of a new save of step 3.
  moved, = os.listdir(str(tmp_path) + '_corrupt')
  assert moved.startswith('3-') and moved in warning
  assert sorted(os.listdir(tmp_path)) == ['1', '2']
  save_steps(tmp_path, [3])
  assert restore_latest(tmp_path)[0] == 3


def test_no_readable_checkpoint_is_one_line_naming_the_directory(tmp_path):
  save_steps(tmp_path, [1, 2])
  damage(tmp_path, 1, 'truncate')
  damage(tmp_path, 2, 'flip')  # one bit
  with pytest.raises(errors.CheckpointCorruptError) as e:
    restore_latest(tmp_path)
  message = str(e.value)
  assert '\n' not in message
  assert f'no checkpoint in {tmp_path} reads back intact' in message
  assert 'step 2: ' in message and 'step 1: ' in message
  assert '--workdir' in message
  # Nothing was moved: the user decides.
  assert sorted(os.listdir(tmp_path)) == ['1', '2']
  assert not os.path.exists(str(tmp_path) + '_corrupt')


def test_a_different_model_is_a_mismatch_not_damage(tmp_path):
  save_steps(tmp_path, [1, 2])
  with pytest.raises(errors.CheckpointMismatchError):
    restore_latest(tmp_path, make_state(shape=(64, 33)))
  assert sorted(os.listdir(tmp_path)) == ['1', '2']
  assert not os.path.exists(str(tmp_path) + '_corrupt')


def test_half_written_step_is_ignored_and_removed(tmp_path):
  save_steps(tmp_path, [1, 2])
  # What a kill during orbax's save of step 3 leaves: its files in a
  # temporary directory that was never renamed to `3`.
  os.rename(tmp_path / '2', tmp_path / '3.orbax-checkpoint-tmp')
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  assert ckpt.latest_step() == 1
  assert ckpt.restore_latest(make_state())[0] == 1
  # Opening the directory removes the leftover (a save waits for that).
  ckpt.save(2, make_state(2.0), {'step': 2})
  ckpt.wait_until_finished()
  ckpt.close()
  assert sorted(os.listdir(tmp_path)) == ['1', '2']


@pytest.mark.parametrize('leader', [True, False])
def test_only_process_0_moves_a_damaged_checkpoint(tmp_path, monkeypatch,
                                                   leader):
  # Several hosts restore from one shared directory; one of them moves the
  # damaged step aside, the others wait for it at the same barrier.
  save_steps(tmp_path, [1, 2])
  damage(tmp_path, 2, 'truncate')
  barriers = []
  monkeypatch.setattr(parallel, 'wait_for_all_processes', barriers.append)
  monkeypatch.setattr(jax, 'process_index', lambda: 0 if leader else 1)
  ckpt = checkpoints.Checkpointer(str(tmp_path), max_to_keep=3)
  try:
    step, _, meta = ckpt.restore_latest(make_state())
  finally:
    ckpt.close()
  assert step == 1 and meta == {'step': 1}
  assert barriers == ['capsjax_corrupt_checkpoints_moved']
  corrupt = str(tmp_path) + '_corrupt'
  if leader:
    assert sorted(os.listdir(tmp_path)) == ['1']
    assert len(os.listdir(corrupt)) == 1
  else:
    assert sorted(os.listdir(tmp_path)) == ['1', '2']
    assert not os.path.exists(corrupt)


def test_unretrieved_disk_full_errors_of_a_save_are_not_logged(tmp_path,
                                                              caplog):
  # tensorstore fails every fragment of a save on a full disk; Checkpointer
  # reports one in a line, asyncio would log the rest as tracebacks.
  checkpoints.Checkpointer(str(tmp_path / 'checkpoints'))
  loop = asyncio.new_event_loop()
  try:
    for error in (ValueError('RESOURCE_EXHAUSTED: Failed to write 66375 '
                             'bytes to file 13: No space left on device'),
                  ValueError('some other failure')):
      loop.call_exception_handler({
          'message': '_GatheringFuture exception was never retrieved',
          'exception': error})
  finally:
    loop.close()
  logged = [r.exc_info[1] for r in caplog.records if r.name == 'asyncio']
  assert [str(e) for e in logged] == ['some other failure']
