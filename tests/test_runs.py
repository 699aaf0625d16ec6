"""Tests for capsjax.runs: a trained run reloaded and applied.

The tiny runs of every registered model (conftest.TINY_RUNS) are reloaded;
`Run.apply` must give what the model gives with all its variables on images
prepared by hand, `Run.evaluate` and a rerun of training must reproduce the
summary written at the end of training, and `runs.predict` must classify
image files for every model. One tiny CapsNet trained on a folder of PNGs
checks predict's image reading, its errors and its output.
"""
import json
import os

import jax

import numpy as np
import PIL.Image
import pytest

from conftest import small_config
from conftest import TINY_RUNS

from capsjax import data
from capsjax import errors
from capsjax import models
from capsjax import runs
from capsjax import train
from capsjax.data.sources import embedded

CLASSES = {'zero': 0, 'one': 1, 'two': 2}
PER_CLASS = 8


def prepared_by_hand(pixels, crop_size, standardize):
  """The central crop, /255 and per-image standardization, written out."""
  if crop_size:
    top = (pixels.shape[1] - crop_size) // 2
    left = (pixels.shape[2] - crop_size) // 2
    pixels = pixels[:, top:top + crop_size, left:left + crop_size]
  images = pixels.astype(np.float32) / 255
  if standardize:
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    std = np.maximum(images.std(axis=(1, 2, 3), keepdims=True),
                     1 / np.sqrt(images[0].size))
    images = (images - mean) / std
  return images


def test_registry_has_a_tiny_run_of_every_model():
  assert sorted(TINY_RUNS) == sorted(models.MODELS)


@pytest.mark.slow  # trains or compiles a whole model
@pytest.mark.parametrize('name', sorted(TINY_RUNS))
def test_apply_uses_every_variable_and_the_runs_preprocessing(tiny_run, name):
  workdir, _ = tiny_run(name)
  run = runs.load(workdir)
  pixels = run.dataset.test.images[:5]
  out = run.apply(pixels, batch_size=4)  # two batches, the last padded
  config = run.config.dataset
  images = prepared_by_hand(pixels, config.crop_size, config.standardize)
  variables = {'params': run.params}
  if name == 'efficient_capsnet':
    variables['batch_stats'] = run.state.batch_stats
  # Jitted: applied eagerly, each op of the EM routing compiles on its own.
  expected = jax.jit(lambda v, x: run.model.apply(
      v, x, reconstruct=False).scores)(variables, images)
  np.testing.assert_allclose(out.scores, expected, rtol=1e-4,
                             atol=1e-5)
  assert out.scores.shape == (5, run.dataset.num_classes)


@pytest.mark.slow  # trains or compiles a whole model
def test_a_reloaded_run_is_evaluated_as_at_the_end_of_training(tiny_run):
  # The EM network's run crops and standardizes its test images.
  workdir, summary = tiny_run('matrix_capsnet_em')
  run = runs.load(workdir)
  assert run.preprocessing.crop_size == 24 and run.preprocessing.standardize
  metrics = run.evaluate()
  assert metrics['loss'] == pytest.approx(summary['test_loss'], rel=1e-5)
  assert metrics['accuracy'] == summary['test_accuracy']
  # Training's own evaluation of a restored, finished run (its summary lost).
  os.remove(os.path.join(workdir, 'summary.json'))
  _, again = train.train_and_evaluate(run.config, workdir)
  assert again['test_loss'] == pytest.approx(summary['test_loss'], rel=1e-5)
  assert again['test_accuracy'] == summary['test_accuracy']


@pytest.mark.slow  # trains or compiles a whole model
@pytest.mark.parametrize('name', sorted(TINY_RUNS))
def test_predict_classifies_files_for_every_model(tiny_run, name, tmp_path):
  workdir, _ = tiny_run(name)
  run = runs.load(workdir)
  pixels = run.dataset.test.images[:3]
  files = []
  for k, image in enumerate(pixels):
    files.append(str(tmp_path / f'{k}.png'))
    PIL.Image.fromarray(image[..., 0]).save(files[-1])
  result = runs.predict(workdir, files)
  expected = run.apply(pixels).scores
  assert [p['image'] for p in result['predictions']] == files
  for row, p in zip(expected, result['predictions']):
    np.testing.assert_allclose(p['scores'], row, rtol=1e-5, atol=1e-6)
    assert p['predicted']['class'] == int(np.argmax(row))


@pytest.fixture(scope='module')
def folder_run(tmp_path_factory):
  """`(workdir, image folder)` of a CapsNet trained 2 steps on a folder."""
  root = tmp_path_factory.mktemp('predict')
  images, labels = embedded.read_sample()
  for name, digit in CLASSES.items():
    os.makedirs(root / 'digits' / name)
    for j, i in enumerate(np.flatnonzero(labels == digit)[:PER_CLASS]):
      PIL.Image.fromarray(images[i, ..., 0]).save(
          root / 'digits' / name / f'{j}.png')
  config = small_config('quickstart', **{
      'dataset.source': 'folder',
      'dataset.directory': str(root / 'digits'),
      'dataset.holdout_fraction': 0.25,
      'num_train_steps': 2,
      'model.conv_impl': 'xla',
  })
  train.train_and_evaluate(config, str(root / 'work'))
  return str(root / 'work'), root / 'digits'


@pytest.mark.slow  # trains or compiles a whole model
def test_predictions_of_files_match_the_model(folder_run):
  workdir, digits = folder_run
  files = [str(digits / 'two' / '3.png'), str(digits / 'zero' / '0.png')]
  result = runs.predict(workdir, files)
  run = runs.load(workdir)
  pixels = np.stack([np.asarray(PIL.Image.open(f)) for f in files])[..., None]
  out = run.model.apply(run.variables, pixels.astype(np.float32) / 255)
  assert result['workdir'] == workdir and result['step'] == 2
  assert result['class_names'] == sorted(CLASSES)
  for row, p in zip(np.asarray(out.scores), result['predictions']):
    np.testing.assert_allclose(p['scores'], row, rtol=1e-5, atol=1e-6)
    best = int(np.argmax(row))
    assert p['predicted'] == {'class': best,
                              'name': result['class_names'][best]}
    assert [t['class'] for t in p['top']] == list(np.argsort(-row)[:2])
    assert p['reconstruction'] is None
  json.dumps(result)  # JSON-ready


def test_a_directory_is_expanded_recursively(folder_run):
  workdir, digits = folder_run
  result = runs.predict(workdir, [str(digits)])
  assert len(result['predictions']) == len(CLASSES) * PER_CLASS
  assert result['predictions'][0]['image'] == str(digits / 'one' / '0.png')


def test_predict_errors_are_one_line(folder_run, tmp_path):
  workdir, digits = folder_run
  image = str(digits / 'one' / '0.png')
  with pytest.raises(errors.ConfigError, match='does not exist'):
    runs.predict(str(tmp_path / 'nope'), [image])
  (tmp_path / 'empty_run').mkdir()
  (tmp_path / 'empty_run' / 'config.json').write_text(
      open(os.path.join(workdir, 'config.json')).read())
  with pytest.raises(errors.ConfigError, match='no checkpoint yet'):
    runs.predict(str(tmp_path / 'empty_run'), [image])
  bad = tmp_path / 'bad.png'
  bad.write_bytes(b'not a png')
  with pytest.raises(errors.DataError, match=f'cannot read image {bad}'):
    runs.predict(workdir, [str(bad)])
  with pytest.raises(errors.DataError, match='no images given'):
    runs.predict(workdir, [])
  (tmp_path / 'no_images').mkdir()
  with pytest.raises(errors.DataError, match='holds no PNG or JPEG'):
    runs.predict(workdir, [str(tmp_path / 'no_images')])


def _run_with_images(shape):
  """A Run whose dataset holds two blank images of `shape`; nothing else."""
  split = data.Split(images=np.zeros((2, *shape), np.uint8),
                     labels=np.array([0, 1], np.int32))
  return runs.Run(
      workdir='W', config=small_config('quickstart'),
      dataset=data.Dataset(name='x', train=split, test=split, num_classes=2),
      preprocessing=data.Preprocessing(crop_size=24), model=None, state=None)


def test_new_images_are_read_at_the_datasets_shape_before_the_crop():
  for shape in ((28, 28, 1), (32, 30, 3)):
    assert runs.image_options(_run_with_images(shape)) == data.ImageOptions(
        size=shape[:2], channels=shape[2], resize='stretch')
  with pytest.raises(errors.DataError, match='4-channel'):
    runs.image_options(_run_with_images((28, 28, 4)))


def test_loading_a_missing_workdir_is_one_line(tmp_path):
  with pytest.raises(errors.ConfigError, match='does not exist'):
    runs.load(str(tmp_path / 'missing'))
