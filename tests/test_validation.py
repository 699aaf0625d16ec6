"""Tests for capsjax.validation: bad configs are refused before anything runs.

Every rejected-config test lives here: the run's fields, each model's and
routing's declared fields (in the shipped config that uses them) and the
rules across fields.

In-process for most fields (`check_config`, `check_data`); as the user runs
it for the four fields the issue names: `python -m capsjax.main ...` exits 1
with one `error:` line naming the field, and leaves a finished run's workdir
byte for byte as it was.
"""
import hashlib
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from capsjax import errors
from capsjax import models
from capsjax import routing
from capsjax import train
from capsjax import validation
from capsjax.data.dataset import Dataset
from capsjax.data.dataset import Split
from conftest import load_config
from conftest import ROOT
from conftest import small_config


def assert_one_line_naming(error, field):
  message = str(error)
  assert '\n' not in message, message
  assert f'--config.{field}' in message, message


@pytest.mark.parametrize('field,value', [
    ('seed', -1),
    ('batch_size', 0),
    ('batch_size', True),
    ('eval_batch_size', 0),
    ('num_train_steps', 0),
    ('log_every_steps', 0),
    ('eval_every_steps', 0),
    ('checkpoint_every_steps', -2),
    ('max_checkpoints_to_keep', 0),
    ('lr_decay_steps', 0),
    ('learning_rate', 0.0),
    ('learning_rate', float('nan')),
    ('lr_decay_rate', 0.0),
    ('lr_decay_rate', 1.5),
    ('microbatch_size', 3),
    ('microbatch_size', -1),
    ('dataset.max_shift', -1),
    ('loss.m_plus', 1.5),
    ('loss.m_minus', -0.1),
    ('loss.lambda_', 2.0),
    ('loss.reconstruction_weight', -1.0),
    ('model.name', 'nope'),
    ('model.routing', 'nope'),
    ('model.routing_iters', 0),
    ('model.primary_stride', 0),
    ('model.conv1_kernel', 0),
    ('model.primary_dim', -4),
    ('model.conv_impl', 'fft'),
    ('model.compute_dtype', 'float16'),
    ('model.decoder_hidden', (16, 0)),
])
def test_check_config_names_the_field(field, value):
  config = load_config('quickstart', **{field: value})
  with pytest.raises(errors.ConfigError) as e:
    validation.check_config(config)
  assert_one_line_naming(e.value, field)


def test_check_config_accepts_the_shipped_configs():
  for name in ('mnist', 'fashion_mnist', 'quickstart'):
    validation.check_config(load_config(name))


# The fields of each model and routing, in the shipped config that uses them:
# (config, field, value, what the one line must say besides the field).
@pytest.mark.parametrize('name,field,value,says', [
    ('multimnist', 'model.num_targets', 3, 'num_targets must be 2 with'),
    ('multimnist', 'model.num_targets', True, 'num_targets'),
    ('mnist', 'model.routing_memory', 'remat', 'routing_memory must be one of'),
    ('mnist', 'model.routing_chunk', 0, 'routing_chunk must be an int >= 1'),
    ('mnist', 'model.routing_chunk', True, 'routing_chunk must be an int >= 1'),
    ('baseline_mnist', 'model.cnn_channels', (), 'cnn_channels'),
    ('baseline_mnist', 'model.cnn_channels', (4, 0), 'cnn_channels'),
    ('baseline_mnist', 'model.cnn_hidden', (8.5,), 'cnn_hidden'),
    ('baseline_mnist', 'model.cnn_kernel', 0, 'cnn_kernel'),
    ('baseline_mnist', 'model.cnn_padding', 'FULL', 'cnn_padding'),
    ('baseline_mnist', 'model.cnn_dropout', -0.1, 'cnn_dropout'),
    ('baseline_mnist', 'model.cnn_dropout', 1.0, 'cnn_dropout'),
    ('efficient_capsnet', 'model.primary_dim', 7, 'primary_dim'),
    ('efficient_capsnet', 'model.conv_kernels', (5, 3), 'conv_kernels'),
    ('efficient_capsnet', 'model.routing', 'nope', 'routing'),
    ('smallnorb_em', 'model.caps_kernel', 0, 'caps_kernel'),
    ('smallnorb_em', 'model.routing', 'dynamic', 'routing'),
    ('smallnorb_em', 'model.inverse_temperature', -1.0, 'inverse_temperature'),
    ('smallnorb_em', 'dataset.crop_size', -1, 'crop_size'),
    ('smallnorb_em', 'dataset.read_size', -1, 'read_size'),
    ('smallnorb_em', 'dataset.brightness_delta', -0.1, 'brightness_delta'),
    ('smallnorb_em', 'dataset.contrast_delta', 1.5, 'contrast_delta'),
    ('smallnorb_em', 'loss.spread_margin_steps', 0, 'spread_margin_steps'),
    ('smallnorb_em', 'loss.spread_margin_end', 1.5, 'spread_margin_end'),
])
def test_each_models_fields_are_checked(name, field, value, says):
  config = load_config(name, **{field: value})
  with pytest.raises(errors.ConfigError) as e:
    validation.check_config(config)
  assert_one_line_naming(e.value, field)
  assert re.search(says, str(e.value)), str(e.value)


def test_a_model_built_by_a_library_caller_checks_its_fields():
  # Without check_config's rules across fields: the model's own check.
  config = load_config('multimnist', **{'model.num_targets': 3})
  with pytest.raises(errors.ConfigError,
                     match=r'num_targets must be one of 1, 2 \(digits'):
    models.create_model(config.model, (36, 36, 1), 10)


def test_chunked_routing_memory_needs_dynamic_routing(monkeypatch):
  # Any other routing, even one registered later.
  monkeypatch.setitem(routing.ROUTINGS, 'other', routing.dynamic_routing)
  config = load_config('mnist', **{'model.routing': 'other',
                                   'model.routing_memory': 'chunked'})
  with pytest.raises(errors.ConfigError, match="needs routing='dynamic'"):
    validation.check_config(config)


def data(height=28, num_train=20):
  split = Split(images=np.zeros((num_train, height, height, 1), np.uint8),
                labels=np.zeros(num_train, np.int32))
  return Dataset('random', split, split, num_classes=10)


def test_check_data_returns_the_model_for_the_images():
  model = validation.check_data(small_config('quickstart'), data())
  assert tuple(model.input_shape) == (28, 28, 1) and model.num_classes == 10


@pytest.mark.parametrize('overrides,error,field', [
    ({'model.conv1_kernel': 21}, errors.InputShapeError, 'model.conv1_kernel'),
    ({'model.primary_kernel': 21}, errors.InputShapeError,
     'model.primary_kernel'),
    ({'dataset.max_shift': 28}, errors.ConfigError, 'dataset.max_shift'),
    ({'batch_size': 24}, errors.ConfigError, 'batch_size'),
])
def test_check_data_names_the_field(overrides, error, field):
  config = small_config('quickstart', **overrides)
  validation.check_config(config)  # Only the data shows the problem.
  with pytest.raises(error) as e:
    validation.check_data(config, data())
  assert_one_line_naming(e.value, field)


def test_a_refused_config_does_not_touch_the_workdir(tmp_path):
  # In-process, through the trainer: not even the directory is created.
  with pytest.raises(errors.ConfigError):
    train.train_and_evaluate(small_config('quickstart', lr_decay_steps=0),
                             str(tmp_path / 'run'))
  with pytest.raises(errors.InputShapeError):
    train.train_and_evaluate(
        small_config('quickstart', **{'model.conv1_kernel': 21}),
        str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


# ---------------------------------------------------- the command line --


def snapshot(directory):
  """Every file's bytes (hashed) and every entry's mtime, under `directory`."""
  entries = {}
  for root, dirs, files in os.walk(directory):
    for name in dirs + files:
      path = os.path.join(root, name)
      stat = os.stat(path)
      digest = None
      if name in files:
        with open(path, 'rb') as f:
          digest = hashlib.sha256(f.read()).hexdigest()
      entries[os.path.relpath(path, directory)] = (digest, stat.st_mtime_ns,
                                                   stat.st_size)
  stat = os.stat(directory)
  entries['.'] = (None, stat.st_mtime_ns, None)
  return entries


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  """A finished tiny quickstart run and the snapshot of its workdir."""
  workdir = tmp_path_factory.mktemp('finished')
  config = small_config('quickstart', num_train_steps=2,
                        **{'dataset.holdout_per_class': 2,
                           'model.conv_impl': 'xla'})
  _, summary = train.train_and_evaluate(config, str(workdir))
  assert summary['steps'] == 2
  before = snapshot(workdir)
  assert {'config.json', 'summary.json', 'metrics.jsonl',
          os.path.join('checkpoints', '2')} <= set(before)
  return workdir, before


@pytest.mark.slow  # real processes
@pytest.mark.parametrize('field,value', [
    ('model.primary_stride', 0),
    ('max_checkpoints_to_keep', 0),
    ('lr_decay_steps', 0),
    ('dataset.max_shift', -1),
])
def test_cli_refuses_with_one_line_and_leaves_the_workdir(finished_run, field,
                                                           value):
  workdir, before = finished_run
  start = time.perf_counter()
  result = subprocess.run(
      [sys.executable, '-m', 'capsjax.main', '--config=configs/quickstart.py',
       f'--workdir={workdir}', f'--config.{field}={value}'],
      cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
      capture_output=True, text=True, timeout=120)
  seconds = time.perf_counter() - start
  print(f'--config.{field}={value}: exit {result.returncode} after '
        f'{seconds:.1f} s')
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  error_lines = [line for line in result.stderr.splitlines()
                 if line.startswith('error:')]
  assert len(error_lines) == 1, result.stderr[-3000:]
  assert f'--config.{field}' in error_lines[0], error_lines[0]
  assert snapshot(workdir) == before


def test_num_targets_is_checked_for_the_models_that_declare_it():
  config = load_config('multimnist', **{'model.num_targets': 1})
  with pytest.raises(errors.ConfigError, match='num_targets=2'):
    validation.check_config(config)
  # The baseline CNN has no per-digit decoder: num_targets is not its field.
  config = load_config('multimnist', **{'model.num_targets': 1,
                                        'model.name': 'baseline_cnn'})
  validation.check_config(config)


# Refused by train_and_evaluate itself, before anything is written.


@pytest.mark.parametrize('field,value', [('batch_size', 0),
                                         ('num_train_steps', -1),
                                         ('model.routing_iters', 0)])
def test_bad_config_values(tmp_path, field, value):
  with pytest.raises(errors.ConfigError, match=f'config.{field} must be an int'):
    train.train_and_evaluate(small_config(**{field: value}), str(tmp_path))


@pytest.mark.parametrize('field,value', [('model.conv_impl', 'fft'),
                                         ('model.compute_dtype', 'float16')])
def test_bad_config_choices(tmp_path, field, value):
  with pytest.raises(errors.ConfigError,
                     match=f'config.{field} must be one of .*, got {value!r}'):
    train.train_and_evaluate(small_config(**{field: value}), str(tmp_path))


@pytest.mark.parametrize('value', [-1, 3])
def test_bad_microbatch_size(tmp_path, value):
  with pytest.raises(errors.ConfigError,
                     match='config.microbatch_size must be 0 .* divides'):
    train.train_and_evaluate(small_config(microbatch_size=value), str(tmp_path))
