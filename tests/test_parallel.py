"""Data parallelism: per-host batch rows, two hosts, 4 CPU devices against 1.

The 4-device half of the end-to-end test runs in a subprocess (this file is
also its script) with `XLA_FLAGS=--xla_force_host_platform_device_count=4`;
the 1-device half runs in the pytest process, which has one CPU device. The
two-host test starts two `multihost_worker.py` processes that connect with
`jax.distributed` on localhost.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from capsjax import checkpoints
from capsjax import errors
from capsjax import parallel
from capsjax.data import batching
from capsjax.data.dataset import Split
import multihost_worker
from test_train import NUM_MOCK
from test_train import read_jsonl
from test_train import run
from conftest import load_config
from conftest import small_config

HERE = os.path.dirname(os.path.abspath(__file__))
NUM_DEVICES = 4
# Sharding changes only the order of float32 sums (per-device partial sums,
# then an all-reduce), so results agree to rounding. Measured on 4 vs 1 CPU
# devices: metrics within 1e-7 relative; parameters after 4 Adam steps
# within 1.2e-6 absolute. Adam amplifies rounding where a gradient is ~0: it
# divides each gradient by its own scale, and the two DigitCaps weights that
# differ most have gradients ~1e-5 of the largest, where float32 rounding
# (3e-7 of the largest gradient against float64, the same with u_hat input-
# or output-major) is a few percent of them. One Adam step moves a parameter
# by up to lr = 1e-3, so a wrong example or batch, or a learning rate 1% off
# on one side, shows far above these tolerances.
RTOL = 1e-5
PARAM_ATOL = 1e-5


def parallel_config(**overrides):
  # 3x3 kernels: the same code paths as 9x9, compiled several times faster.
  # 12 does not divide the 40 test examples: the last global batch is
  # 4 real rows + 8 padding, i.e. 3 real rows on device 0, 1 on device 1
  # and none on devices 2 and 3.
  return small_config(**{'model.conv1_kernel': 3, 'model.primary_kernel': 3,
                         'eval_batch_size': 12, **overrides})


def labelled_split(num_examples, size=6):
  """Label = index; every pixel of image i is i % 256."""
  labels = np.arange(num_examples, dtype=np.int32)
  images = np.broadcast_to(labels[:, None, None, None] % 256,
                           (num_examples, size, size, 1)).astype(np.uint8)
  return Split(images=images, labels=labels)


# ------------------------------------------------ per-process rows (numpy) --


@pytest.mark.parametrize('process_count', [2, 4])
def test_process_rows_concatenate_to_the_global_train_batch(process_count):
  split = labelled_split(50)
  kwargs = dict(batch_size=8, seed=3,
                preprocessing=batching.Preprocessing(max_shift=2))
  for step in (0, 5, 13):  # 13 is in the third epoch
    whole = batching.train_batch(split, step, **kwargs)
    parts = [batching.train_batch(split, step, process_index=p,
                                  process_count=process_count, **kwargs)
             for p in range(process_count)]
    for key in ('image', 'label'):
      assert all(len(part[key]) == 8 // process_count for part in parts)
      np.testing.assert_array_equal(
          np.concatenate([part[key] for part in parts]), whole[key])
  # The iterator passes the process arguments on.
  iterator = batching.train_batches(split, start_step=5, prefetch=1,
                                    process_index=1,
                                    process_count=process_count,
                                    **kwargs)
  np.testing.assert_array_equal(
      next(iterator)['image'],
      batching.train_batch(split, 5, process_index=1,
                           process_count=process_count,
                           **kwargs)['image'])
  iterator.close()


@pytest.mark.parametrize('num_examples', [37, 48, 5])
def test_process_eval_rows_count_every_example_once(num_examples):
  split = labelled_split(num_examples)
  batch_size, process_count = 12, 4
  whole = list(batching.eval_batches(split, batch_size))
  parts = [list(batching.eval_batches(split, batch_size,
                                      process_index=p,
                                      process_count=process_count))
           for p in range(process_count)]
  # Every process steps through the same number of batches (SPMD), each of
  # batch_size / process_count rows, and together they are the global batch.
  assert [len(p) for p in parts] == [len(whole)] * process_count
  for i, global_batch in enumerate(whole):
    for key in ('image', 'label', 'mask'):
      assert all(len(p[i][key]) == 3 for p in parts)
      np.testing.assert_array_equal(
          np.concatenate([p[i][key] for p in parts]), global_batch[key])
  real = np.concatenate([b['label'][b['mask'] == 1]
                         for p in parts for b in p])
  np.testing.assert_array_equal(np.sort(real), np.arange(num_examples))


@pytest.mark.parametrize('kwargs,fragment', [
    (dict(process_count=3), 'batch size 8 is not divisible by the 3 processes'),
    (dict(process_index=2, process_count=2), 'process_index 2 is out of range'),
    (dict(process_count=0), 'process_count must be an int >= 1'),
])
def test_process_arguments_errors(kwargs, fragment):
  split = labelled_split(20)
  with pytest.raises(errors.DataError, match=fragment) as e:
    batching.train_batch(split, 0, batch_size=8, seed=0,
                         preprocessing=batching.Preprocessing(max_shift=0),
                         **kwargs)
  assert '\n' not in str(e.value)
  with pytest.raises(errors.DataError, match=fragment):
    batching.eval_batches(split, 8, **kwargs)


@pytest.mark.parametrize('name', ['mnist', 'fashion_mnist', 'quickstart'])
def test_shipped_configs_split_over_up_to_8_devices(name):
  config = load_config(name)
  # A multiple of 8 splits over 1, 2, 4 and 8 devices.
  assert config.batch_size % 8 == 0
  assert config.eval_batch_size % 8 == 0


# ------------------------------------- two processes of 2 devices (hosts) --


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow  # two real processes, a JAX distributed run
def test_two_hosts_build_the_single_host_batches(tmp_path):
  """Two processes (hosts) of 2 CPU devices each, as `--distributed` runs."""
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  workers = [subprocess.Popen(
      [sys.executable, os.path.join(HERE, 'multihost_worker.py'), str(i),
       str(port), str(tmp_path)], env=env, cwd=HERE, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    stderrs = [worker.communicate(timeout=300)[1] for worker in workers]
  finally:
    for worker in workers:
      if worker.poll() is None:
        worker.kill()
        worker.wait()
  for worker, stderr in zip(workers, stderrs):
    assert worker.returncode == 0, stderr[-3000:]
  with open(tmp_path / 'multihost.json') as f:
    out = json.load(f)

  assert out['describe'] == ('Training on 4 devices (cpu) across 2 hosts; '
                             'global batch 8, 2 per device.')
  assert out['mesh_order'] == sorted(out['mesh_order'])
  assert [process for process, _ in out['mesh_order']] == [0, 0, 1, 1]
  # Each host built its 4 rows; the global batches are the one-host ones.
  split = multihost_worker.labelled_split()
  for step in range(3):
    whole = batching.train_batch(
        split, step, batch_size=multihost_worker.BATCH_SIZE,
        seed=multihost_worker.SEED,
        preprocessing=batching.Preprocessing(
            max_shift=multihost_worker.MAX_SHIFT))
    weights = np.arange(1, len(whole['label']) + 1)
    assert out[f'step_{step}']['weighted_labels'] == np.sum(
        weights * whole['label'])
    np.testing.assert_allclose(out[f'step_{step}']['image_sums'],
                               whole['image'].sum(axis=(1, 2, 3)), rtol=1e-6)
  # Evaluation saw each of the 37 examples once: mean label (0 + ... + 36)/37.
  assert out['eval']['num_examples'] == multihost_worker.NUM_EXAMPLES == 37
  assert out['eval']['loss'] == 18.0
  # The checkpoint the two hosts wrote restores on this one device, placed
  # by `sharding` (the abstract target has none; orbax alone would try the
  # 4 saving devices).
  ckpt = checkpoints.Checkpointer(str(tmp_path / 'checkpoints'))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = {'w': jax.ShapeDtypeStruct((6,), np.float32),
            'step': jax.ShapeDtypeStruct((), np.int32)}
  restored, meta = ckpt.restore(3, target, sharding=device)
  ckpt.close()
  assert meta == {'step': 3}
  np.testing.assert_array_equal(restored['w'], np.arange(6.0))
  assert int(restored['step']) == 3 and restored['w'].sharding == device


# ------------------------------------------ 4 devices against 1 end to end --


def four_device_phases(tmp):
  """Runs in the 4-device subprocess; returns what the test checks."""
  assert jax.device_count() == NUM_DEVICES, jax.devices()
  out = {}
  # A global batch is split over the devices in the order of their ids,
  # 2 rows each, even when the mesh is given them in another order.
  batch = parallel.global_batch({'label': np.arange(8, dtype=np.int32)},
                                parallel.create_mesh(jax.devices()[::-1]))
  out['rows_per_device'] = [
      shard.data.tolist() for shard in
      sorted(batch['label'].addressable_shards, key=lambda s: s.device.id)]
  state, out['four'] = run(parallel_config(), tmp / 'four')
  # The 1-device run's final checkpoint, restored here onto the 4 devices
  # (replicated like `state`), holds the parameters trained here.
  ckpt = checkpoints.Checkpointer(str(tmp / 'one' / 'checkpoints'))
  restored, _ = ckpt.restore(4, state)
  ckpt.close()
  out['restored_devices'] = sorted(
      {len(x.sharding.device_set) for x in jax.tree.leaves(restored)})
  assert_trees_close(restored.params, state.params)
  assert_trees_close(restored.opt_state, state.opt_state)
  for field, value in (('batch_size', 10), ('eval_batch_size', 14)):
    try:
      run(parallel_config(**{field: value}), tmp / 'refused')
      out[field] = None
    except errors.ConfigError as e:
      out[field] = str(e)
  return out


def copy_checkpoint(source_workdir, step, workdir):
  shutil.copytree(source_workdir / 'checkpoints' / str(step),
                  workdir / 'checkpoints' / str(step))


def assert_records_close(got, want):
  assert [(r['step'], r['split']) for r in got] == [
      (r['step'], r['split']) for r in want]
  for g, w in zip(got, want):
    assert g.keys() == w.keys()
    for key in w.keys() - {'step', 'split', 'images_per_s'}:
      assert g[key] == pytest.approx(w[key], rel=RTOL), (g, key)


def assert_trees_close(got, want):
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(x, y, rtol=RTOL, atol=PARAM_ATOL)


@pytest.mark.slow  # real processes with 4 and 1 host devices
def test_four_devices_match_one_device_and_checkpoints_move(tmp_path):
  # One device, in this process.
  one_state, one = run(parallel_config(), tmp_path / 'one')

  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS=f'{os.environ.get("XLA_FLAGS", "")} '
             f'--xla_force_host_platform_device_count={NUM_DEVICES}')
  result = subprocess.run([sys.executable, __file__, str(tmp_path)], env=env,
                          cwd=HERE, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert ('Training on 4 devices (cpu) across 1 host; global batch 8, 2 per '
          'device.') in result.stderr
  with open(tmp_path / 'phases.json') as f:
    out = json.load(f)

  # Same metrics, train and test, at every logged step.
  assert_records_close(read_jsonl(tmp_path / 'four' / 'metrics.jsonl'),
                       read_jsonl(tmp_path / 'one' / 'metrics.jsonl'))
  four = out['four']
  assert four['steps'] == 4 and four['test_examples'] == NUM_MOCK
  assert four['test_accuracy'] == one['test_accuracy']
  assert four['test_loss'] == pytest.approx(one['test_loss'], rel=RTOL)
  assert out['restored_devices'] == [NUM_DEVICES]
  assert out['rows_per_device'] == [[0, 1], [2, 3], [4, 5], [6, 7]]

  # The 4-device checkpoints restore on this 1-device process: the final one
  # holds the same parameters, and training resumed from step 2 ends where
  # the 1-device run did.
  ckpt = checkpoints.Checkpointer(str(tmp_path / 'four' / 'checkpoints'))
  restored, _ = ckpt.restore(4, one_state)
  ckpt.close()
  assert all(x.sharding.num_devices == 1 for x in jax.tree.leaves(restored))
  assert_trees_close(restored.params, one_state.params)
  assert_trees_close(restored.opt_state, one_state.opt_state)
  copy_checkpoint(tmp_path / 'four', 2, tmp_path / 'four_then_one')
  resumed_state, resumed = run(parallel_config(), tmp_path / 'four_then_one')
  assert_trees_close(resumed_state.params, one_state.params)
  assert resumed['test_loss'] == pytest.approx(one['test_loss'], rel=RTOL)

  assert out['batch_size'] == (
      'batch_size 10 is not divisible by the 4 devices; use a multiple of 4 '
      'such as 8 (--config.batch_size=8).')
  assert out['eval_batch_size'] == (
      'eval_batch_size 14 is not divisible by the 4 devices; use a multiple '
      'of 4 such as 12 (--config.eval_batch_size=12).')


if __name__ == '__main__':
  import pathlib  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.INFO)
  workdir = pathlib.Path(sys.argv[1])
  phases = four_device_phases(workdir)
  with open(workdir / 'phases.json', 'w') as f:
    json.dump(phases, f)
