"""A full disk: the save fails with one line, the previous checkpoint survives.

The run's workdir is on a real 4 MiB tmpfs (mounting needs root with
CAP_SYS_ADMIN; elsewhere the test is skipped, saying so), filled with a file
until a checkpoint of the tiny CapsNet of test_crash_resume.py no longer
fits. The small file writes (metrics, config.json) are checked with ENOSPC
injected where their bytes are written.
"""
import errno
import os
import subprocess
import sys

import pytest

from capsjax import errors
from capsjax import metric_writers
from capsjax import workdir as workdir_lib
from test_crash_resume import complete_steps
from test_crash_resume import results
from test_crash_resume import ROOT
from test_crash_resume import TINY

# Room for the metrics of a few steps, not for a checkpoint (~0.6 MiB).
FREE_BYTES = 96 * 1024


@pytest.fixture
def small_disk(tmp_path):
  """A 4 MiB tmpfs mounted at tmp_path/disk, unmounted afterwards."""
  mount_point = tmp_path / 'disk'
  mount_point.mkdir()
  mounted = subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', str(mount_point)],
      capture_output=True, text=True)
  if mounted.returncode != 0:
    pytest.skip(f'cannot mount a tmpfs here ({mounted.stderr.strip()}); '
                f'needs root with CAP_SYS_ADMIN')
  yield mount_point
  subprocess.run(['umount', '-l', str(mount_point)], check=True)


def fill(directory, leave_bytes):
  """Writes `directory`/filler until the disk is full, then frees
  `leave_bytes` of it."""
  path = os.path.join(directory, 'filler')
  with open(path, 'wb') as f:
    try:
      while True:
        f.write(b'\0' * 65536)
        f.flush()
    except OSError as e:
      assert e.errno == errno.ENOSPC
  os.truncate(path, max(0, os.path.getsize(path) - leave_bytes))
  return path


def run(workdir, steps):
  return subprocess.run(
      [sys.executable, '-m', 'capsjax.main', *TINY,
       '--config.model.conv_impl=xla', f'--config.num_train_steps={steps}',
       f'--workdir={workdir}'], cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), timeout=600)


@pytest.mark.slow  # real processes
def test_a_save_on_a_full_disk_keeps_the_previous_checkpoint(small_disk,
                                                            tmp_path):
  reference = run(tmp_path / 'reference', 8)
  assert reference.returncode == 0, reference.stderr[-3000:]
  workdir = small_disk / 'run'
  first = run(workdir, 2)
  assert first.returncode == 0, first.stderr[-3000:]

  filler = fill(small_disk, FREE_BYTES)
  full = run(workdir, 8)
  assert full.returncode == 1, full.stderr[-3000:]
  assert 'Traceback' not in full.stderr, full.stderr[-3000:]
  error, = [line for line in full.stderr.splitlines()
            if line.startswith('error:')]
  assert error.startswith(f'error: no space left on the device of {workdir}'
                          f'/checkpoints while writing checkpoint 4 (needs '
                          f'about '), error
  assert 'MiB free, ' in error and 'checkpoint 2 is intact' in error, error
  assert error.endswith('rerun the same command to resume.'), error
  assert complete_steps(workdir) == [2]

  os.remove(filler)
  rerun = run(workdir, 8)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'at step 2.' in rerun.stderr, rerun.stderr[-3000:]
  assert complete_steps(workdir) == [6, 8]
  summary, records = results(workdir)
  expected_summary, expected_records = results(tmp_path / 'reference')
  assert summary == expected_summary
  train = [r for r in records if r['split'] == 'train']
  assert train == [r for r in expected_records if r['split'] == 'train']


def no_space(*args, **kwargs):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_writing_json_keeps_the_old_file(tmp_path):
  path = tmp_path / 'summary.json'
  workdir_lib.write_json(path, {'old': 1})

  def write(tmp):
    with open(tmp, 'w') as f:
      f.write('partial')
    no_space()

  with pytest.raises(errors.DiskFullError) as e:
    workdir_lib.write_atomic(str(path), write)
  assert str(e.value).startswith(
      f'no space left on the device of {tmp_path} while writing summary.json')
  assert workdir_lib.read_json(path) == {'old': 1}
  assert os.listdir(tmp_path) == ['summary.json']


def test_a_full_disk_while_logging_metrics_is_one_error(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path))

  class FullFile:
    write = flush = close = staticmethod(no_space)

  writer._jsonl = FullFile()  # pylint: disable=protected-access
  with pytest.raises(errors.DiskFullError) as e:
    writer.write_scalars(3, 'train', {'loss': 0.5})
  assert 'while writing metrics.jsonl' in str(e.value)
  assert 'the checkpoints are intact' in str(e.value)
  writer.close()  # The failed flush is not raised a second time.
