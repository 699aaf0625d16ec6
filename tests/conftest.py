"""Shared fixtures: the configs of the shipped files, shrunk for tests.

`load_config('quickstart', **overrides)` is a shipped config with dotted
overrides; `small_config(...)` is that config with a CapsNet small enough to
compile and train a few steps in seconds (the shapes of the paper's network
are kept where a test is about them, via overrides).
"""
import importlib.util
import os
import runpy

import jax
from jax.experimental.compilation_cache import compilation_cache
import ml_collections
import numpy as np
import pytest

from capsjax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tests check values, not speed, and compile hundreds of small programs:
# without LLVM's optimizations XLA compiles them ~1.7x faster, and with its
# older loop emitters instead of the fusion emitters ~2.5x faster again.
# Set before the first computation starts a backend; the processes tests
# start inherit it.
os.environ['XLA_FLAGS'] = ' '.join(filter(None, [
    os.environ.get('XLA_FLAGS'), '--xla_backend_optimization_level=0',
    '--xla_cpu_use_fusion_emitters=false']))

def pytest_collection_modifyitems(items):
  """tests/scenarios/ first, then the other files with slow tests, then the
  rest; each file's tests in their own order.

  pytest-xdist hands out whole files in this order (`--dist loadfile
  --no-loadscope-reorder` in pyproject.toml): the long files start early and
  the short ones fill in at the end, instead of one long file (a fresh
  virtualenv, the kill tests) running alone while the other workers idle.
  """
  slow_files = {item.path for item in items if item.get_closest_marker('slow')}
  items.sort(key=lambda item: (item.path.parent.name != 'scenarios',
                               item.path not in slow_files))  # stable


# A CapsNet of the paper's shape with few channels: a few seconds a run.
SMALL_MODEL = {
    'model.conv1_channels': 8,
    'model.primary_types': 2,
    'model.primary_dim': 4,
    'model.digit_dim': 6,
    'model.decoder_hidden': (16, 32),
}
# Few steps, with a log, an evaluation and a checkpoint every 2 steps.
SMALL_RUN = {
    'batch_size': 8,
    'eval_batch_size': 16,
    'num_train_steps': 4,
    'log_every_steps': 2,
    'eval_every_steps': 2,
    'checkpoint_every_steps': 2,
}


def load_config(name: str = 'mnist', **overrides):
  """`configs/NAME.py`'s get_config() with dotted-name overrides applied."""
  config = runpy.run_path(os.path.join(ROOT, 'configs', f'{name}.py'))[
      'get_config']()
  config.update_from_flattened_dict(overrides)
  return config


def small_config(name: str = 'mnist', **overrides):
  """`load_config(name)` with `SMALL_MODEL`, `SMALL_RUN` and `overrides`."""
  return load_config(name, **{**SMALL_MODEL, **SMALL_RUN, **overrides})


@pytest.fixture
def small():
  """`small_config` as a fixture, for tests that take no arguments."""
  return small_config


def dataset_config(**fields):
  """`configs/mnist.py`'s `config.dataset` with `fields` replaced: every
  field a loader may read is there, as in a real run."""
  return ml_collections.ConfigDict(
      {**load_config('mnist').dataset.to_dict(), **fields})


def ink_box(image):
  """`(top, bottom, left, right)` rows and columns of an `[H, W, C]` image's
  nonzero pixels."""
  rows = np.flatnonzero(image.any(axis=(1, 2)))
  cols = np.flatnonzero(image.any(axis=(0, 2)))
  return rows[0], rows[-1], cols[0], cols[-1]


def load_script(name: str):
  """Imports experiments/NAME.py (a script, not a package module)."""
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(ROOT, 'experiments', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def block_between(path: str, begin: str, end: str) -> str:
  """The text of file `path` between the marker lines `begin` and `end`."""
  with open(path) as f:
    return f.read().split(begin)[1].split(end)[0]


def assert_one_line_data_error(excinfo, *fragments):
  """The raised error is a ValueError with a one-line message holding every
  fragment."""
  message = str(excinfo.value)
  assert isinstance(excinfo.value, ValueError)
  assert '\n' not in message, message
  for fragment in fragments:
    assert fragment in message, message


# Each model of the registry, shrunk, from its shipped config, trained on the
# embedded sample: the workdirs that reload, predict and figure tests share.
# The EM network keeps a crop and per-image standardization, so a reloaded
# run's preprocessing is exercised.
_EMBEDDED = {'dataset.source': 'embedded', 'dataset.name': 'mnist_5k'}
TINY_RUNS = {
    'capsnet': ('quickstart', SMALL_MODEL),
    'baseline_cnn': ('baseline_mnist', {
        **_EMBEDDED, 'model.cnn_channels': (4,), 'model.cnn_hidden': (8,)}),
    'efficient_capsnet': ('efficient_capsnet', {
        'model.conv_channels': (4, 8, 8, 16), 'model.primary_dim': 4,
        'model.digit_dim': 6, 'model.decoder_hidden': (16, 32)}),
    'matrix_capsnet_em': ('smallnorb_em', {
        **_EMBEDDED, 'dataset.read_size': 0, 'dataset.crop_size': 24,
        'model.conv1_channels': 4, 'model.primary_types': 2,
        'model.convcaps1_types': 2, 'model.convcaps2_types': 2,
        'model.routing_iters': 2, 'loss.spread_margin_steps': 2}),
}


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
  """`tiny_run(name) -> (workdir, summary)`: `TINY_RUNS[name]` trained 2
  steps, once per test session."""
  done = {}

  def get(name):
    if name not in done:
      config_name, overrides = TINY_RUNS[name]
      config = load_config(config_name, **{**SMALL_RUN, **overrides,
                                            'num_train_steps': 2})
      workdir = str(tmp_path_factory.mktemp(f'tiny_{name}'))
      _, summary = train.train_and_evaluate(config, workdir)
      done[name] = (workdir, summary)
    return done[name]

  return get


@pytest.fixture(scope='session', autouse=True)
def float32_matmuls():
  """Full float32 matmuls and convolutions on GPUs, for every test.

  The tests compare float32 results with float32 and float64 references at
  float32's tolerances. GPUs multiply float32 in TF32 (a 10-bit mantissa) by
  default; these tests need 'highest', which is what the CPU always does, so
  on the CPU nothing is set. The processes tests start inherit it through
  the environment.
  """
  if jax.default_backend() == 'cpu':
    yield
    return
  saved = jax.config.jax_default_matmul_precision
  jax.config.update('jax_default_matmul_precision', 'highest')
  os.environ['JAX_DEFAULT_MATMUL_PRECISION'] = 'highest'
  yield
  jax.config.update('jax_default_matmul_precision', saved)


@pytest.fixture(scope='session', autouse=True)
def shared_compilation_cache(tmp_path_factory):
  """One JAX persistent compilation cache for the test session (every
  pytest-xdist worker of it) and the processes its tests start.

  Every `train_and_evaluate` call builds new jitted closures, so each run
  compiles its init, train and eval steps again (most of a small run's
  time), and so does every `python -m capsjax.main` a test starts. With this
  cache a later run of the same program loads the executable the first one
  compiled; the programs, and so every number, are the same (a loaded
  executable reports the same memory and cost analysis too).
  """
  if os.environ.get('PYTEST_XDIST_WORKER'):
    # One for every worker of the run: beside the workers' own directories.
    directory = tmp_path_factory.getbasetemp().parent / 'jax_cache'
    directory.mkdir(exist_ok=True)
    directory = str(directory)
  else:
    directory = str(tmp_path_factory.mktemp('jax_cache'))
  options = {'jax_persistent_cache_min_compile_time_secs': 0,
             'jax_persistent_cache_min_entry_size_bytes': 0}
  saved = {name: getattr(jax.config, name) for name in options}
  for name, value in options.items():
    jax.config.update(name, value)
  compilation_cache.set_cache_dir(directory)
  compilation_cache.reset_cache()
  with pytest.MonkeyPatch.context() as patch:
    # The same settings for the processes tests start.
    patch.setenv('JAX_COMPILATION_CACHE_DIR', directory)
    patch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    patch.setenv('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
    yield directory
  compilation_cache.set_cache_dir(None)
  compilation_cache.reset_cache()
  for name, value in saved.items():
    jax.config.update(name, value)
