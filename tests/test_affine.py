"""Tests for capsjax.data.affine: the affine set, affNIST's files, and the
experiments/affine_robustness.py table."""
import csv
import importlib.util
import json
import os

import numpy as np
import pytest
import scipy.io

from conftest import dataset_config
from conftest import ink_box
from conftest import small_config
from capsjax import errors
from capsjax import metric_writers
from capsjax import runs as runs_lib
from capsjax import train
from capsjax.data import affine
from capsjax.data import augment
from capsjax.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The embedded sample with 10 test digits per class (100): fast evaluations.
EMBEDDED = {'dataset.source': 'embedded', 'dataset.name': 'mnist_5k',
            'dataset.holdout_per_class': 10}


@pytest.fixture(scope='module')
def digits():
  return sources.load(dataset_config(
      source='embedded', name='mnist_5k', holdout_per_class=100))


# ------------------------------------------------------------------ affine --


def test_identity_transform_gives_the_original(digits):
  images = digits.test.images[:20]
  identity = np.tile(np.eye(2), (20, 1, 1))
  np.testing.assert_array_equal(
      affine.warp(images, identity, np.zeros((20, 2)), 28), images)
  np.testing.assert_array_equal(
      affine.warp(images, identity, np.zeros((20, 2)), 40),
      augment.pad(images, 6))
  # A whole-pixel translation is a shift.
  moved = affine.warp(images, identity, np.tile([[3.0, -2.0]], (20, 1)), 40)
  np.testing.assert_array_equal(moved, augment.shift(
      augment.pad(images, 6), np.tile([[-2, 3]], (20, 1))))


def test_rotation_by_90_degrees_turns_the_image():
  image = np.zeros((1, 5, 5, 1), np.uint8)
  image[0, 0, 2] = 200  # top middle
  linear = affine.matrices(np.array([90.0]), np.zeros(1), np.ones(1),
                           np.ones(1))
  turned = affine.warp(image, linear, np.zeros((1, 2)), 5)
  assert turned[0, 2, 4, 0] == 200 and turned.sum() == 200  # to the right


def test_generated_set_within_affnist_ranges(digits):
  images = digits.test.images[:300]
  out, params = affine.generate(images, seed=0)
  assert out.shape == (300, 40, 40, 1) and out.dtype == np.uint8
  # affNIST's published ranges, written out (not read from the module).
  assert affine.AFFNIST_RANGES == {'rotation_degrees': (-20.0, 20.0),
                                   'shear': (-0.2, 0.2), 'scale': (0.8, 1.2)}
  assert -20 <= params['rotation_degrees'].min() < -18
  assert 18 < params['rotation_degrees'].max() <= 20
  for name in ('scale_x', 'scale_y'):
    assert 0.8 <= params[name].min() < 0.82 and 1.18 < params[name].max() <= 1.2
  assert -0.2 <= params['shear'].min() < -0.18
  assert 0.18 < params['shear'].max() <= 0.2
  # The ink stays on the canvas: at most a sliver of interpolation at edges.
  edge = (out[:, 0].sum() + out[:, -1].sum() + out[:, :, 0].sum()
          + out[:, :, -1].sum())
  assert edge < 0.001 * out.sum()
  # Translations vary: ink boxes start at many places.
  assert len({ink_box(im)[:3:2] for im in out}) > 50
  again, _ = affine.generate(images, seed=0)
  np.testing.assert_array_equal(out, again)
  assert not np.array_equal(out, affine.generate(images, seed=1)[0])


def _write_affnist(path, images, labels):
  """A small .mat file in affNIST's published layout."""
  record = {'image': images.reshape(len(images), 1600).T,
            'label_int': labels.astype(np.uint8),
            'label_one_of_n': np.eye(10, dtype=np.uint8)[labels].T}
  scipy.io.savemat(path, {'affNISTdata': record})


def test_affnist_loader(tmp_path, digits):
  images = augment.pad(digits.test.images[:7], 6)
  labels = digits.test.labels[:7]
  _write_affnist(tmp_path / '1.mat', images[:4], labels[:4])
  _write_affnist(tmp_path / '2.mat', images[4:], labels[4:])
  loaded, loaded_labels, description = affine.load_affnist(str(tmp_path))
  np.testing.assert_array_equal(loaded, images)
  np.testing.assert_array_equal(loaded_labels, labels)
  assert '1.mat' in description and '7 images' in description
  # test.mat wins over the batches.
  _write_affnist(tmp_path / 'test.mat', images[:1], labels[:1])
  assert len(affine.load_affnist(str(tmp_path))[1]) == 1
  with pytest.raises(errors.DataError, match='not a directory'):
    affine.load_affnist(str(tmp_path / 'missing'))
  (tmp_path / 'none').mkdir()
  with pytest.raises(errors.DataError, match='no .mat files'):
    affine.load_affnist(str(tmp_path / 'none'))
  empty = tmp_path / 'bad'
  empty.mkdir()
  scipy.io.savemat(empty / 'test.mat', {'something': np.zeros(3)})
  with pytest.raises(errors.DataError, match='not an affNIST'):
    affine.load_affnist(str(empty))


# ------------------------------------------------------------- the script --


def _load_script():
  spec = importlib.util.spec_from_file_location(
      'affine_robustness', os.path.join(ROOT, 'experiments',
                                        'affine_robustness.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow  # trains or compiles a whole model
def test_affine_robustness_table(tmp_path):
  # Checkpoints and evaluations at steps 2 and 4, both kept.
  canvas = {**EMBEDDED, 'dataset.canvas_size': 40, 'dataset.max_shift': 0,
            'num_train_steps': 4}
  runs = {
      'capsnet': small_config('mnist', **canvas),
      'cnn': small_config('baseline_mnist', **canvas, **{
          'model.cnn_channels': (4,), 'model.cnn_hidden': (8,)}),
  }
  workdirs = []
  for name, config in runs.items():
    workdirs.append(str(tmp_path / name))
    train.train_and_evaluate(config, workdirs[-1])
  script = _load_script()
  rows = script.evaluate(workdirs, str(tmp_path / 'out'), num_examples=64)
  assert [r['model'] for r in rows] == ['capsnet', 'baseline_cnn']
  with open(tmp_path / 'out' / 'results.csv') as f:
    table = list(csv.DictReader(f))
  assert [r['workdir'] for r in table] == workdirs
  for row, summary_row in zip(table, rows):
    assert float(row['affine_accuracy']) == summary_row['affine_accuracy']
    assert row['affine_examples'] == '64' and row['clean_examples'] == '100'
  # The clean accuracy is the trainer's own test accuracy.
  for workdir, row in zip(workdirs, rows):
    with open(os.path.join(workdir, 'summary.json')) as f:
      assert row['clean_accuracy'] == pytest.approx(
          json.load(f)['test_accuracy'], abs=1e-6)
  text = (tmp_path / 'out' / 'results.md').read_text()
  assert 'capsnet' in text and 'baseline_cnn' in text and 'seed 0' in text
  assert (tmp_path / 'out' / 'examples.png').stat().st_size > 1000
  # A run that was not trained on the canvas is refused, in one line.
  plain = str(tmp_path / 'plain')
  train.train_and_evaluate(small_config(
      'baseline_mnist', **EMBEDDED, num_train_steps=1,
      **{'model.cnn_channels': (4,), 'model.cnn_hidden': (8,)}), plain)
  with pytest.raises(errors.ConfigError, match='canvas_size=40'):
    script.evaluate([workdirs[0], plain], str(tmp_path / 'out2'))
  assert not (tmp_path / 'out2').exists()

  # Any kept checkpoint loads; another step is one line naming the kept.
  assert runs_lib.kept_steps(workdirs[0]) == [2, 4]
  assert runs_lib.load(workdirs[0], 2).step == 2
  assert runs_lib.load(workdirs[0]).step == 4
  with pytest.raises(errors.ConfigError, match='kept steps 2, 4'):
    runs_lib.load(workdirs[0], 3)

  # At matched clean accuracy: the checkpoints matched_steps picks, each
  # tested at its own evaluation's clean accuracy.
  steps = script.matched_steps(workdirs)
  rows = script.evaluate(workdirs, str(tmp_path / 'out3'), num_examples=64,
                         match_clean=True)
  assert [r['steps'] for r in rows] == steps
  for workdir, row in zip(workdirs, rows):
    [evaluation] = [e for e in metric_writers.read_split(workdir)
                    if e['step'] == row['steps']]
    assert row['clean_accuracy'] == pytest.approx(evaluation['accuracy'],
                                                  abs=1e-6)


def _evaluated_run(directory, accuracies, kept, monkeypatch, kept_by_dir):
  directory.mkdir()
  with open(directory / 'metrics.jsonl', 'w') as f:
    for step, accuracy in accuracies.items():
      f.write(json.dumps({'step': step, 'split': 'test',
                          'accuracy': accuracy}) + '\n')
      f.write(json.dumps({'step': step, 'split': 'train',
                          'accuracy': 0.0}) + '\n')
  kept_by_dir[str(directory)] = kept
  monkeypatch.setattr(runs_lib, 'kept_steps', kept_by_dir.__getitem__)
  return str(directory)


def test_matched_steps_pick_the_closest_clean_accuracies(tmp_path,
                                                         monkeypatch):
  script = _load_script()
  kept = {}
  # Binary fractions: the differences are exact.
  capsnet = _evaluated_run(tmp_path / 'capsnet', {
      100: 0.5, 200: 0.625, 300: 0.75, 400: 0.9375}, [200, 300, 400],
                           monkeypatch, kept)
  cnn = _evaluated_run(tmp_path / 'cnn', {
      100: 0.6875, 200: 0.875, 300: 0.9375}, [100, 200, 300], monkeypatch,
                       kept)
  assert script.matched_steps([capsnet, cnn]) == [400, 300]
  assert script.matched_steps([cnn, capsnet]) == [300, 400]
  # Without step 400: 0.625 and 0.75 are both 0.0625 from 0.6875; the more
  # accurate pair wins.
  kept[capsnet] = [200, 300]
  assert script.matched_steps([capsnet, cnn]) == [300, 100]
  # A checkpoint without an evaluation is not a candidate.
  kept[cnn] = [150]
  with pytest.raises(errors.ConfigError, match='no checkpoint with a test'):
    script.matched_steps([capsnet, cnn])
  with pytest.raises(errors.ConfigError, match='two runs'):
    script.matched_steps([capsnet, cnn, cnn])
