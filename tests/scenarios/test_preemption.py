"""SIGTERM and SIGINT stop a run cleanly, and the rerun resumes exactly.

Real signals to real `python -m capsjax.main` processes on the embedded MNIST
sample, with the tiny CapsNet of test_crash_resume.py. The moments that
matter are reached deterministically by a wrapper script that patches a hook
and sends the signal there (to itself, or asks the test to send it): after a
step, during an evaluation, while orbax writes a periodic checkpoint, and a
second signal during the stop's own save. Two `--distributed` processes show
that a signal to one stops both at the same step.
"""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from capsjax import cli
from test_crash_resume import complete_steps
from test_crash_resume import results
from test_crash_resume import ROOT
from test_crash_resume import TINY

# 14 steps: checkpoints every 2 (the newest 2 kept), tests at 4, 8, 12, 14.
RUN = (*TINY, '--config.num_train_steps=14', '--config.model.conv_impl=xla')

# Runs capsjax.main after arranging a signal at one moment (MODE AT):
#   train N   SIGTERM to itself right after logging step N's train metrics;
#   wait N    there, prints WAITING and sleeps: the test sends the signal;
#   eval N    SIGTERM while evaluating at step N (after the first test batch);
#   save N    SIGTERM from orbax's writer thread while it writes checkpoint N,
#             before the rename that completes it;
#   twice N   as `train N`, then SIGTERM again while the stop's checkpoint
#             N + 1 is written;
#   none 0    no signal.
SIGNALLER = r'''
import os
import signal
import sys
import time

from absl import app
from capsjax import cli
from capsjax import data
from capsjax import main
from capsjax import metric_writers
from orbax.checkpoint._src.path import atomicity

mode, at = sys.argv.pop(1), int(sys.argv.pop(1))


def term():
  os.kill(os.getpid(), signal.SIGTERM)


write_scalars = metric_writers.MetricWriter.write_scalars
finalize = atomicity.AtomicRenameTemporaryPath.finalize
eval_batches = data.eval_batches


def write_then_signal(self, step, split, scalars):
  write_scalars(self, step, split, scalars)
  logged['step'] = step
  if split == 'train' and step == at:
    if mode in ('train', 'twice'):
      term()
    elif mode == 'wait':
      print('WAITING', file=sys.stderr, flush=True)
      time.sleep(3)


async def signal_before_rename(self, *args, **kwargs):
  name = self.get_final().name
  if (mode == 'save' and name == str(at)) or (
      mode == 'twice' and name == str(at + 1)):
    term()
    time.sleep(1)  # The main thread's handler runs meanwhile.
  return await finalize(self, *args, **kwargs)


def eval_then_signal(*args, **kwargs):
  for i, batch in enumerate(eval_batches(*args, **kwargs)):
    if mode == 'eval' and i == 1 and logged['step'] == at:
      term()
    yield batch


logged = {'step': 0}
metric_writers.MetricWriter.write_scalars = write_then_signal
atomicity.AtomicRenameTemporaryPath.finalize = signal_before_rename
data.eval_batches = eval_then_signal
app.run(main.main, flags_parser=cli.parse_flags)
'''


def command(scripts, workdir, mode, at, *extra):
  script = os.path.join(scripts, 'signaller.py')
  with open(script, 'w') as f:
    f.write(SIGNALLER)
  return [sys.executable, script, mode, str(at), *RUN, f'--workdir={workdir}',
          *extra]


def environment(**extra):
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **extra)


def run(scripts, workdir, mode='none', at=0):
  return subprocess.run(command(scripts, workdir, mode, at), cwd=ROOT,
                        env=environment(), capture_output=True,
                        text=True, timeout=600)


def run_and_signal_when_waiting(scripts, workdir, at):
  """`wait AT`: sends SIGTERM from here once the run prints WAITING."""
  process = subprocess.Popen(command(scripts, workdir, 'wait', at), cwd=ROOT,
                             env=environment(), stderr=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, text=True)
  lines = []
  try:
    for line in process.stderr:
      lines.append(line)
      if line.strip() == 'WAITING':
        process.send_signal(signal.SIGTERM)
        break
    lines.append(process.stderr.read())
    process.wait(timeout=600)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  return process.returncode, ''.join(lines)


def stopped_line(stderr):
  lines = [line for line in stderr.splitlines() if line.startswith('stopped:')]
  assert len(lines) == 1, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  return lines[0]


def last_train_step(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line)['step'] for line in f][-1]


@pytest.mark.slow  # real processes
def test_signals_at_every_moment_then_rerun_resumes_exactly(tmp_path):
  scripts = str(tmp_path / 'scripts')
  os.makedirs(scripts)
  reference = tmp_path / 'reference'
  done = run(scripts, reference)
  assert done.returncode == 0, done.stderr[-3000:]
  expected = results(reference)
  workdir = tmp_path / 'run'

  # 1. SIGTERM from outside after step 2: step 3 is finished, logged and
  # saved (not a checkpoint step otherwise), and the run says so.
  status, stderr = run_and_signal_when_waiting(scripts, workdir, 2)
  assert status == cli.EXIT_PREEMPTED == 75, stderr[-3000:]
  line = stopped_line(stderr)
  assert line.startswith('stopped: SIGTERM at step 3 of 14: checkpoint 3 '
                         f'saved in {workdir / "checkpoints"}'), line
  assert line.endswith('rerun the same command to resume from step 3.'), line
  assert complete_steps(workdir) == [2, 3]
  assert last_train_step(workdir) == 3
  assert not (workdir / 'summary.json').exists()

  # 2. A second signal while the stop's checkpoint 5 is written: out at once,
  # checkpoint 5 never completed, 4 intact.
  twice = run(scripts, workdir, 'twice', 4)
  assert 'at step 3.' in twice.stderr, twice.stderr[-3000:]
  assert twice.returncode == 128 + signal.SIGTERM, twice.stderr[-3000:]
  assert 'SIGTERM again: exiting at once' in twice.stderr
  assert complete_steps(workdir) == [3, 4]

  # 3. SIGTERM during the test-set evaluation of step 8: it is finished and
  # logged, and the run stops after step 9.
  during_eval = run(scripts, workdir, 'eval', 8)
  assert 'at step 4.' in during_eval.stderr, during_eval.stderr[-3000:]
  assert during_eval.returncode == 75, during_eval.stderr[-3000:]
  assert 'at step 9 of 14' in stopped_line(during_eval.stderr)
  assert complete_steps(workdir) == [8, 9]

  # 4. SIGTERM while orbax writes the periodic checkpoint 10 in its thread:
  # that save completes, and the run stops at the next step boundary
  # (save 12 waits for save 10, so by step 13 at the latest).
  during_save = run(scripts, workdir, 'save', 10)
  assert during_save.returncode == 75, during_save.stderr[-3000:]
  line = stopped_line(during_save.stderr)
  stop = next(s for s in (11, 12, 13) if f'at step {s} of 14' in line)
  assert complete_steps(workdir)[-1] == stop
  assert 10 in complete_steps(workdir) or stop > 11

  # 5. The same command again finishes exactly as the uninterrupted run.
  final = run(scripts, workdir)
  assert final.returncode == 0, final.stderr[-3000:]
  assert f'at step {stop}.' in final.stderr
  assert results(workdir) == expected


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow  # real processes
def test_a_signal_to_one_process_stops_every_process_at_one_step(tmp_path):
  scripts = str(tmp_path / 'scripts')
  os.makedirs(scripts)
  port = free_port()
  env = environment(JAX_PLATFORMS='cpu')
  # Process 1 alone gets the signal, after step 2.
  processes = [subprocess.Popen(
      command(scripts, tmp_path / 'run', *(('train', 2) if i else ('none', 0)),
              '--distributed', f'--coordinator_address=localhost:{port}',
              '--num_processes=2', f'--process_id={i}'),
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  try:
    stderrs = [p.communicate(timeout=300)[1] for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, stderr in zip(processes, stderrs):
    assert p.returncode == 75, stderr[-3000:]
  assert stopped_line(stderrs[1]).startswith('stopped: SIGTERM at step 3 ')
  assert stopped_line(stderrs[0]).startswith(
      'stopped: a signal to another process at step 3 ')
  assert complete_steps(tmp_path / 'run') == [2, 3]
