"""Tests of experiments/learning_curve.py on a hand-made workdir."""
import json
import os
import runpy

import pytest

from capsjax import errors
from conftest import ROOT
from conftest import load_config

curve = runpy.run_path(os.path.join(ROOT, 'experiments', 'learning_curve.py'))


def make_workdir(tmp_path, records):
  # The embedded sample: 4,000 training digits, so batch 400 is 10 steps an
  # epoch.
  config = load_config('quickstart', batch_size=400)
  (tmp_path / 'config.json').write_text(json.dumps(config.to_dict()))
  (tmp_path / 'metrics.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in records))
  return str(tmp_path)


def test_epochs_come_from_the_split_size_and_batch_size(tmp_path):
  workdir = make_workdir(tmp_path, [
      {'step': 5, 'split': 'train', 'accuracy': 0.5},
      {'step': 10, 'split': 'test', 'accuracy': 0.8},
      {'step': 25, 'split': 'test', 'accuracy': 0.875}])
  rows = curve['epoch_accuracies'](workdir)
  assert rows == [{'epoch': 1.0, 'step': 10, 'test_accuracy': 0.8},
                  {'epoch': 2.5, 'step': 25, 'test_accuracy': 0.875}]
  assert curve['markdown'](rows).splitlines()[2:] == [
      '| 1 | 10 | 80.00 |', '| 2.5 | 25 | 87.50 |']


def test_the_figure_is_written_with_the_reference(tmp_path):
  (tmp_path / 'run').mkdir()
  workdir = make_workdir(tmp_path / 'run',
                         [{'step': 10, 'split': 'test', 'accuracy': 0.8}])
  out = tmp_path / 'curve.png'
  curve['plot'](curve['epoch_accuracies'](workdir), str(out), 'capsjax',
                'capsnet_keras_fashion')
  assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert not [p for p in os.listdir(tmp_path) if '.tmp' in p]


def test_a_workdir_without_test_metrics_is_a_user_error(tmp_path):
  workdir = make_workdir(tmp_path, [{'step': 5, 'split': 'train',
                                     'accuracy': 0.5}])
  with pytest.raises(errors.ConfigError, match='no test evaluations'):
    curve['epoch_accuracies'](workdir)
