r"""Seconds from SIGTERM to exit for a real training run (the grace period).

    python experiments/preemption_time.py [--config=configs/quickstart.py] \
        [--after_steps=3] [--repeats=2]

Starts `python -m capsjax.main` with the config (quickstart: the paper's
CapsNet, 8.2M parameters, on the embedded MNIST sample), waits until the run
has logged `--after_steps` steps after compiling, sends SIGTERM and times
the exit: the step in progress, the checkpoint save (parameters and Adam's
two moments), the metrics and the exit. Prints one JSON line per try with
the exit status, the seconds and the checkpoint's size; a scheduler's grace
period (Kubernetes' default 30 s) must exceed the seconds.
"""
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string('config', 'configs/quickstart.py', 'Config file to train.')
flags.DEFINE_integer('after_steps', 3, 'Steps logged before the SIGTERM.')
flags.DEFINE_integer('repeats', 2, 'Number of timed tries.')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return re.search(r'model name\s*:\s*(.*)', f.read()).group(1)
  except (OSError, AttributeError):
    return platform.processor()


def directory_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, files in os.walk(path) for name in files)


def time_one(workdir: str) -> dict:
  process = subprocess.Popen(
      [sys.executable, '-m', 'capsjax.main', f'--config={FLAGS.config}',
       f'--workdir={workdir}', '--config.num_train_steps=100000',
       '--config.log_every_steps=1', '--config.eval_every_steps=100000',
       '--config.checkpoint_every_steps=100000'],
      cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  logged, lines = 0, []
  for line in process.stderr:
    lines.append(line)
    if ': train loss' in line:
      logged += 1
      if logged == FLAGS.after_steps:
        break
  sent = time.perf_counter()
  process.send_signal(signal.SIGTERM)
  lines.append(process.stderr.read())
  status = process.wait()
  seconds = time.perf_counter() - sent
  stopped = [l for l in ''.join(lines).splitlines() if l.startswith('stopped:')]
  return {'exit_status': status, 'sigterm_to_exit_s': round(seconds, 2),
          'checkpoint_mib': round(directory_bytes(
              os.path.join(workdir, 'checkpoints')) / 2**20, 1),
          'stopped': stopped[0] if stopped else None}


def main(argv):
  del argv
  for _ in range(FLAGS.repeats):
    with tempfile.TemporaryDirectory() as workdir:
      record = time_one(workdir)
    record.update(config=FLAGS.config, cpu=cpu_name(), cores=os.cpu_count())
    print(json.dumps(record), flush=True)


if __name__ == '__main__':
  app.run(main)
