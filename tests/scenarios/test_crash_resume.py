"""Killed runs resume exactly, runs are reproducible, damaged checkpoints.

Real `kill -9`s of real `python -m capsjax.main` processes on the embedded
MNIST sample, with a tiny CapsNet. The subprocesses share the session's JAX
compilation cache (conftest), so only the first one compiles (each still
pays ~5 s of imports).
Both PrimaryCaps convolutions: 'slices' (the CPU default, with its own VJP)
and 'xla'; the full sequence of kills and damage runs with 'xla' only.
"""
import glob
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT

# Integration: real processes, killed; `-m 'not slow'` skips them.
pytestmark = pytest.mark.slow

# 8 steps of batch 8 on quickstart's data: train rows every step, test rows
# at 4 and 8, checkpoints at 2, 4, 6, 8 (the newest 2 kept).
TINY = ('--config=configs/quickstart.py',
        '--config.model.conv1_channels=8', '--config.model.primary_types=2',
        '--config.model.primary_dim=4', '--config.model.digit_dim=6',
        '--config.model.decoder_hidden=(16,32)',
        '--config.batch_size=8',
        '--config.num_train_steps=8', '--config.log_every_steps=1',
        '--config.eval_every_steps=4', '--config.checkpoint_every_steps=2')

# Wall-clock quantities, the only ones allowed to differ between runs.
TIMING = ('images_per_s', 'train_images_per_s', 'wall_s')

# Runs capsjax.main after arranging its own SIGKILL: `train N` dies right
# after logging step N, `save N` dies while saving checkpoint N, after orbax
# wrote all its files but before it renamed `N.orbax-checkpoint-tmp` to `N`.
KILLER = r'''
import os
import signal
import sys

from absl import app
from capsjax import cli
from capsjax import main
from capsjax import metric_writers
from orbax.checkpoint._src.path import atomicity

mode, at = sys.argv.pop(1), int(sys.argv.pop(1))


def die():
  os.kill(os.getpid(), signal.SIGKILL)


write_scalars = metric_writers.MetricWriter.write_scalars
finalize = atomicity.AtomicRenameTemporaryPath.finalize


def write_then_die(self, step, split, scalars):
  write_scalars(self, step, split, scalars)
  if mode == 'train' and split == 'train' and step == at:
    die()


async def die_before_rename(self, *args, **kwargs):
  if mode == 'save' and self.get_final().name == str(at):
    die()
  return await finalize(self, *args, **kwargs)


metric_writers.MetricWriter.write_scalars = write_then_die
atomicity.AtomicRenameTemporaryPath.finalize = die_before_rename
app.run(main.main, flags_parser=cli.parse_flags)
'''


@pytest.fixture(scope='module')
def scripts_dir(tmp_path_factory):
  """Scratch space for the killer script."""
  return str(tmp_path_factory.mktemp('scripts'))


def run_cli(scripts, workdir, *extra, killer=None, conv_impl='xla'):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  command = [sys.executable]
  if killer:
    script = os.path.join(scripts, 'killer.py')
    with open(script, 'w') as f:
      f.write(KILLER)
    command += [script, *killer]
  else:
    command += ['-m', 'capsjax.main']
  command += [*TINY, f'--config.model.conv_impl={conv_impl}',
              f'--workdir={workdir}', *extra]
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


def results(workdir):
  """summary.json and metrics.jsonl without the wall-clock numbers."""
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  for record in [summary, *records]:
    for key in TIMING:
      record.pop(key, None)
  return summary, records


def complete_steps(workdir):
  return sorted(int(n) for n in os.listdir(os.path.join(workdir,
                                                        'checkpoints'))
                if n.isdigit())


@pytest.fixture(scope='module')
def references(tmp_path_factory, scripts_dir):
  """conv_impl -> an uninterrupted run's workdir and results, made once."""
  made = {}

  def reference(conv_impl):
    if conv_impl not in made:
      workdir = str(tmp_path_factory.mktemp(f'reference_{conv_impl}'))
      result = run_cli(scripts_dir, workdir, conv_impl=conv_impl)
      assert result.returncode == 0, result.stderr[-3000:]
      made[conv_impl] = workdir, results(workdir)
    return made[conv_impl]

  return reference


@pytest.fixture
def reference(references):
  return references('xla')


def test_same_seed_and_config_give_identical_metrics(references, scripts_dir,
                                                     tmp_path):
  # With 'slices', the CPU default; 'xla' runs are compared with its
  # reference after every kill below.
  _, (summary, records) = references('slices')
  result = run_cli(scripts_dir, tmp_path, conv_impl='slices')
  assert result.returncode == 0, result.stderr[-3000:]
  again_summary, again_records = results(tmp_path)
  # Exactly equal, not close: every train loss, gradient norm and test
  # metric of the 8 steps, through JSON's 17 significant digits.
  assert again_summary == summary
  assert again_records == records
  assert len(records) == 8 + 2


def test_kill_9_then_rerun_with_the_sliced_convolution(references, scripts_dir,
                                                       tmp_path):
  # The CPU default: its custom VJP must resume bit for bit too.
  _, (summary, records) = references('slices')
  killed = run_cli(scripts_dir, tmp_path, killer=('train', '5'),
                   conv_impl='slices')
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'summary.json')
  last = complete_steps(tmp_path)[-1]
  assert last in (2, 4)
  rerun = run_cli(scripts_dir, tmp_path, conv_impl='slices')
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'at step {last}.' in rerun.stderr, rerun.stderr[-3000:]
  assert results(tmp_path) == (summary, records)


def test_kill_9_in_training_and_in_a_save_then_rerun(reference, scripts_dir,
                                                     tmp_path):
  _, (summary, records) = reference

  # 1. Killed right after step 5: checkpoints 2 and 4 exist (4 possibly still
  # being written when the kill came, in which case only 2 is complete).
  killed = run_cli(scripts_dir, tmp_path, killer=('train', '5'))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'summary.json')
  last = complete_steps(tmp_path)[-1]
  assert last in (2, 4)

  # 2. The rerun resumes from it, then is killed while saving step 6.
  killed = run_cli(scripts_dir, tmp_path, killer=('save', '6'))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert f'at step {last}.' in killed.stderr, killed.stderr[-3000:]
  assert complete_steps(tmp_path) == [2, 4]
  # The kill came after orbax had written step 6's arrays.
  partial, = glob.glob(str(tmp_path / 'checkpoints' / '6.orbax-checkpoint-tmp*'))
  assert os.listdir(os.path.join(partial, 'state'))

  # 3. The same command again: resumes from 4, ignoring the half-written 6,
  # and ends exactly where the uninterrupted run ended.
  rerun = run_cli(scripts_dir, tmp_path)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'at step 4.' in rerun.stderr, rerun.stderr[-3000:]
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['6', '8']
  assert results(tmp_path) == (summary, records)

  # 4. The newest checkpoint damaged (its array files cut in half): the rerun
  # warns, moves it aside, resumes from 6 and again reaches the same end.
  for path in glob.glob(str(tmp_path / 'checkpoints' / '8' / 'state' / 'd' /
                            '*')):
    os.truncate(path, os.path.getsize(path) // 2)
  rerun = run_cli(scripts_dir, tmp_path)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Traceback' not in rerun.stderr, rerun.stderr[-3000:]
  warning = next(line for line in rerun.stderr.splitlines()
                 if 'does not read back intact' in line)
  assert str(tmp_path / 'checkpoints' / '8') in warning
  assert 'step 6' in warning
  moved, = os.listdir(tmp_path / 'checkpoints_corrupt')
  assert moved.startswith('8-')
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['6', '8']
  assert results(tmp_path) == (summary, records)
