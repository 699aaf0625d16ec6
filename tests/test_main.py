"""The command line, as a user runs it: `python -m capsjax.main ...`."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capsjax import cli
from capsjax import errors
from capsjax import models
from capsjax import train
from conftest import load_config
from conftest import SMALL_MODEL
from conftest import small_config
from conftest import ROOT


def run_main(*args, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', 'capsjax.main', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True,
                        timeout=timeout)


# Runs capsjax.main in-process, then reports which TensorFlow modules the
# run imported and its exit status.
IN_PROCESS = r'''
import json
import sys

from absl import app
from capsjax import cli
from capsjax import main

try:
  app.run(main.main, argv=['capsjax.main', *sys.argv[1:]],
          flags_parser=cli.parse_flags)
  code = 0
except SystemExit as e:  # app.run exits, with None on success.
  code = 0 if e.code is None else e.code
print(json.dumps({'exit': code, 'tensorflow': sorted(
    name for name in sys.modules if name.startswith('tensorflow'))}))
'''


@pytest.mark.slow  # a real capsjax.main process
def test_quickstart_config_end_to_end_never_imports_tensorflow(tmp_path):
  # The quickstart config and data, its CapsNet shrunk (SMALL_MODEL; the
  # paper's size is test_capsnet's), for a handful of steps, run by
  # capsjax.main's own entry point in a process that then lists the
  # tensorflow modules it imported (IN_PROCESS).
  shrink = [f'--config.{k}={v}' for k, v in SMALL_MODEL.items()]
  result = subprocess.run(
      [sys.executable, '-c', IN_PROCESS, '--config=configs/quickstart.py',
       f'--workdir={tmp_path}', '--config.num_train_steps=3',
       '--config.eval_every_steps=3', '--config.checkpoint_every_steps=3',
       *shrink],
      cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['exit'] == 0, result.stderr[-3000:]
  assert report['tensorflow'] == []
  with open(tmp_path / 'summary.json') as f:
    summary = json.load(f)
  assert summary['steps'] == 3
  assert summary['test_examples'] == 1000
  assert summary['dataset'] == 'embedded:mnist_5k'
  small = small_config('quickstart')
  shapes = jax.eval_shape(
      models.create_model(small.model, (28, 28, 1), 10).init,
      jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  assert summary['num_params'] == sum(
      int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  assert os.listdir(tmp_path / 'checkpoints') == ['3']
  # TensorBoard files all the same, without TensorFlow.
  for split in ('train', 'test'):
    events = os.listdir(tmp_path / 'tensorboard' / split)
    assert any(name.startswith('events.out.tfevents') for name in events)


@pytest.mark.parametrize('args,expected', [
    (['--config=configs/quickstart.py', '--config.model.routing_iterations=2'],
     "error: --config.model.routing_iterations: the config has no field "
     "'routing_iterations' (did you mean 'routing_iters'?); fix the name "
     "(configs/mnist.py lists every field)."),
    (['--config=configs/quickstart', '--config.seed=1'],
     "error: cannot load --config=configs/quickstart ([Errno 2] No such file "
     "or directory: 'configs/quickstart'); pass a config file such as "
     "configs/mnist.py."),
])
def test_bad_flags_are_one_line(tmp_path, args, expected):
  result = run_main(*args, f'--workdir={tmp_path}', timeout=120)
  assert result.returncode == 1
  # Not even a log line: the flags are checked before anything starts.
  assert result.stderr.strip().splitlines() == [expected], result.stderr
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_model_that_does_not_fit_the_images_is_one_line(tmp_path):
  result = run_main('--config=configs/quickstart.py', f'--workdir={tmp_path}',
                    '--config.model.conv1_kernel=21', timeout=120)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: input H=28 is too small'), result.stderr
  assert '28-21+1=8' in last


def test_workdir_is_required():
  result = run_main('--config=configs/quickstart.py', timeout=120)
  assert result.returncode != 0
  assert 'workdir' in result.stderr


# ------------------------------------------- bad input, in-process: one line --


def quickstart(**overrides):
  return load_config('quickstart', **overrides)


def run(config, workdir):
  """What `capsjax.main.main` does after parsing the flags."""
  with cli.user_errors_exit():
    train.train_and_evaluate(config, workdir)


def write_idx(directory, image_shape=(28, 28), skip=(), bad_magic=()):
  """Four small IDX files; `skip` files are left out, `bad_magic` broken."""
  directory.mkdir()
  rng = np.random.default_rng(0)
  arrays = {'train-images-idx3-ubyte': rng.integers(0, 256, (80, *image_shape)),
            'train-labels-idx1-ubyte': np.arange(80) % 10,
            't10k-images-idx3-ubyte': rng.integers(0, 256, (10, *image_shape)),
            't10k-labels-idx1-ubyte': np.arange(10) % 10}
  for name, array in arrays.items():
    if name in skip:
      continue
    magic = 0x803 if 'images' in name else 0x801
    if name in bad_magic:
      magic = 0x0D03  # e.g. a file of another format
    header = magic.to_bytes(4, 'big') + b''.join(
        d.to_bytes(4, 'big') for d in array.shape)
    (directory / name).write_bytes(header + array.astype(np.uint8).tobytes())
  return str(directory)


def idx_config(directory):
  return quickstart(**{'dataset.source': 'idx', 'dataset.directory': directory})


BAD_INPUTS = {  # case: (config maker, fragment of the one-line message)
    'unknown embedded dataset': (
        lambda tmp: quickstart(**{'dataset.name': 'mnist_6k'}),
        "unknown embedded dataset 'mnist_6k'; set "
        "--config.dataset.name=mnist_5k"),
    'unknown tfds dataset': (
        lambda tmp: quickstart(**{'dataset.source': 'tfds',
                                  'dataset.name': 'no_such_dataset'}),
        "unknown tfds dataset 'no_such_dataset'"),
    'unknown source': (
        lambda tmp: quickstart(**{'dataset.source': 'csv'}),
        "unknown dataset source 'csv'; set --config.dataset.source to one of"),
    'idx directory missing a file': (
        lambda tmp: idx_config(write_idx(tmp / 'idx',
                                         skip=['t10k-labels-idx1-ubyte'])),
        'has no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz; put the '
        'four MNIST-format IDX files there'),
    'idx file with a wrong magic number': (
        lambda tmp: idx_config(write_idx(tmp / 'idx',
                                         bad_magic=['train-images-idx3-ubyte'])),
        'train-images-idx3-ubyte has magic number 0x00000d03, expected '
        '0x00000803'),
    'images too small for the model': (
        lambda tmp: idx_config(write_idx(tmp / 'idx', image_shape=(12, 12))),
        'input H=12 is too small for the convolutions'),
    'routing iterations < 1': (
        lambda tmp: quickstart(**{'model.routing_iters': 0}),
        'config.model.routing_iters must be an int >= 1, got 0; set '
        '--config.model.routing_iters='),
    'batch size < 1': (
        lambda tmp: quickstart(batch_size=0),
        'config.batch_size must be an int >= 1, got 0; set '
        '--config.batch_size='),
}


@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_status_1(tmp_path, case):
  make_config, fragment = BAD_INPUTS[case]
  workdir = tmp_path / 'run'
  with pytest.raises(SystemExit) as e:
    run(make_config(tmp_path), str(workdir))
  # sys.exit(str) prints the string to stderr and exits with status 1.
  message = e.value.code
  assert isinstance(message, str), message
  assert message.startswith('error: ') and '\n' not in message, message
  assert fragment in message, message
  assert not os.path.exists(workdir / 'checkpoints')


def test_unwritable_workdir_is_one_line(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(SystemExit) as e:
    run(quickstart(), str(blocker / 'run'))
  message = e.value.code
  assert isinstance(message, str) and '\n' not in message, message
  assert message.startswith(f'error: cannot write to workdir {blocker}/run')
  assert message.endswith('pass a writable --workdir.')


@pytest.mark.parametrize('error', [
    errors.NonFiniteError('training stopped at step 5: loss = nan (not '
                         'finite); ...'),
    errors.CheckpointCorruptError('no checkpoint in /w/checkpoints reads '
                                       'back intact (...); ...'),
])
def test_errors_raised_during_training_are_one_line(tmp_path, monkeypatch,
                                                    error):
  # Raised by real runs in test_train.py and test_checkpoints.py; here only
  # how main reports them.
  def train_and_evaluate(config, workdir):
    raise error

  monkeypatch.setattr(train, 'train_and_evaluate', train_and_evaluate)
  with pytest.raises(SystemExit) as e:
    run(quickstart(), str(tmp_path))
  assert e.value.code == f'error: {error}'


def test_distributed_flags_without_a_cluster_are_one_line_errors(tmp_path):
  # Outside Slurm/Open MPI/TPU, --distributed needs the coordinator flags;
  # and those flags alone do nothing, so they are refused without it.
  cluster_vars = ('SLURM_JOB_ID', 'OMPI_MCA_orte_hnp_uri',
                  'KUBERNETES_SERVICE_HOST', 'JAX_COORDINATOR_ADDRESS')
  env = {k: v for k, v in os.environ.items() if k not in cluster_vars}
  for flag, expected in [
      ('--distributed', 'error: --distributed cannot start (coordinator_address'
                        ' should be defined); pass --coordinator_address='),
      ('--num_processes=2', 'error: --num_processes is for multi-host runs '
                            'only; add --distributed.')]:
    result = subprocess.run(
        [sys.executable, '-m', 'capsjax.main', '--config=configs/quickstart.py',
         f'--workdir={tmp_path}', flag], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(expected), (
        result.stderr)
    assert not os.path.exists(tmp_path / 'checkpoints')
