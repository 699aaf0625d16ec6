"""Any value of any config field: a started run or one `error:` line.

Hypothesis mutates one field at a time of every config in configs/ (its data
moved to the embedded MNIST sample, which needs no network) to a wrong type,
zero, a negative, a huge number, NaN, infinity, an empty or unknown string.
In-process, the run goes through `train.train_and_evaluate` up to the
model's initialisation, traced but not compiled (`Started`); the outcome must
be that or a one-line `errors.UserError` (or ml_collections' TypeError when
the value's type cannot be stored in the field, which the command line
reports as a bad flag), and a refused run must leave a finished workdir
byte for byte as it was. A few of the same mutations go through the real
command line too.
"""
import contextlib
import copy
import glob
import os
import signal
import subprocess
import sys
import time

from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from capsjax import errors
from capsjax import train
from conftest import load_config
from conftest import ROOT
from conftest import SMALL_RUN
from test_validation import snapshot

# Every config is traced through train_and_evaluate; some real processes.
pytestmark = pytest.mark.slow

CONFIGS = sorted(os.path.basename(path)[:-3]
                 for path in glob.glob(os.path.join(ROOT, 'configs', '*.py')))

# What a user might type, or a sweep script compute, for a field of each
# type; any field also gets the values of the other types.
VALUES = {
    int: (0, -1, -10**9, 10**12, 2**63),
    float: (0.0, -0.5, 1e-300, 1e300, float('nan'), float('inf'),
            -float('inf')),
    bool: (True, False),
    str: ('', 'nope', ' ', 'x' * 300),
    tuple: ((), (0,), (10**9, 1), (2, -3), ('a',)),
    type(None): (None,),
}
ALL_VALUES = tuple(v for values in VALUES.values() for v in values)

# A shipped config on the embedded sample: the tfds ones need the network.
ON_THE_SAMPLE = {'dataset.source': 'embedded', 'dataset.name': 'mnist_5k',
                 'dataset.read_size': 0, 'dataset.crop_size': 0,
                 'num_train_steps': 1}


# Per config; the whole test stays under ~40 s on 2 CPU cores.
MAX_EXAMPLES = 60


class Started(Exception):
  """The run got past every check to the model's initialisation."""


# Seconds after which one mutation counts as a hang (each takes < 1 s).
HANG_S = 20


@contextlib.contextmanager
def time_limit(seconds, field, value):
  def hang(signum, frame):
    del signum, frame
    raise AssertionError(f'--config.{field}={value!r} hung for {seconds} s')

  previous = signal.signal(signal.SIGALRM, hang)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def base_config(name):
  return load_config(name, **{**SMALL_RUN, **ON_THE_SAMPLE})


def fields(config, prefix=''):
  for key, value in config.items():
    if hasattr(value, 'items'):
      yield from fields(value, f'{prefix}{key}.')
    else:
      yield prefix + key


def get(config, field):
  for part in field.split('.'):
    config = config[part]
  return config


def mutated(config, field, value):
  """`config` with `field` set to `value`, or None if its type refuses it."""
  config = copy.deepcopy(config)
  *parents, leaf = field.split('.')
  node = config
  for parent in parents:
    node = node[parent]
  try:
    node[leaf] = value
  except TypeError:
    return None
  return config


@pytest.fixture(scope='module')
def finished_workdir(tmp_path_factory):
  """A finished one-step run made by the real command line."""
  workdir = tmp_path_factory.mktemp('finished')
  result = cli(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def cli(workdir, *overrides):
  return subprocess.run(
      [sys.executable, '-m', 'capsjax.main', '--config=configs/quickstart.py',
       f'--workdir={workdir}', '--config.model.conv1_channels=8',
       '--config.model.primary_types=2', '--config.model.decoder_hidden=(8,8)',
       '--config.num_train_steps=1', '--config.batch_size=8',
       '--config.eval_batch_size=500', '--config.dataset.holdout_per_class=1',
       '--config.model.conv_impl=xla', *overrides],
      cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
      capture_output=True, text=True, timeout=300)


def test_the_bases_start(monkeypatch, tmp_path):
  # Otherwise every mutation of a config would be refused for its base.
  stop_at_init(monkeypatch)
  for name in CONFIGS:
    with pytest.raises(Started):
      train.train_and_evaluate(base_config(name), str(tmp_path / name))


def stop_at_init(monkeypatch):
  create = train.create_train_state

  def create_then_stop(*args):
    create(*args)  # Traced by parallel.init_replicated's jit: no arrays.
    raise Started()

  monkeypatch.setattr(train, 'create_train_state', create_then_stop)


OUTCOMES = {}


@pytest.mark.parametrize('name', CONFIGS)
def test_one_mutated_field_starts_or_is_one_error(name, finished_workdir,
                                                  monkeypatch):
  stop_at_init(monkeypatch)
  base = base_config(name)
  counts = OUTCOMES.setdefault(name, {})

  @settings(max_examples=MAX_EXAMPLES, deadline=10_000, database=None,
            derandomize=True, suppress_health_check=list(HealthCheck))
  @given(st.data())
  def check(data):
    field = data.draw(st.sampled_from(sorted(fields(base))), 'field')
    own = VALUES[type(get(base, field))]
    value = data.draw(st.sampled_from(own) | st.sampled_from(ALL_VALUES),
                      'value')
    config = mutated(base, field, value)
    if config is None:
      counts['type refused'] = counts.get('type refused', 0) + 1
      return
    before = snapshot(finished_workdir)
    try:
      with time_limit(HANG_S, field, value):
        train.train_and_evaluate(config, str(finished_workdir))
    except Started:
      counts['started'] = counts.get('started', 0) + 1
      return
    except errors.UserError as e:
      assert '\n' not in str(e), (field, value, str(e))
      counts['error'] = counts.get('error', 0) + 1
    assert snapshot(finished_workdir) == before, (field, value)

  start = time.perf_counter()
  check()  # pylint: disable=no-value-for-parameter
  print(f'{name}: {counts} in {time.perf_counter() - start:.1f} s')


@pytest.mark.parametrize('override', [
    '--config.learning_rate=nan',
    '--config.model.routing_iters=-1',
    '--config.dataset.source=nope',
    '--config.batch_size=abc',
    '--config.model.decoder_hidden=(8,0)',
    '--config.seed=10000000000',
    '--config.model.routing_iters=1000000000000',
])
def test_the_command_line_refuses_with_one_line(finished_workdir, override):
  before = snapshot(finished_workdir)
  result = cli(finished_workdir, override)
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  error_lines = [line for line in result.stderr.splitlines()
                 if line.startswith('error:')]
  assert len(error_lines) == 1, result.stderr[-3000:]
  assert snapshot(finished_workdir) == before
