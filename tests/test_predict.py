"""Tests for python -m capsjax.predict (capsjax/predict.py, prediction.py).

One tiny CapsNet is trained for 2 steps on a folder of PNGs written from the
embedded sample; predictions are checked against `model.apply` on the same
pixels, read here with Pillow directly.
"""
import json
import os
import subprocess
import sys
import types

import numpy as np
import PIL.Image
import pytest

from conftest import ROOT, small_config

from capsjax import data
from capsjax import errors
from capsjax import prediction
from capsjax import train
from capsjax import trained
from capsjax.data.sources import embedded

CLASSES = {'zero': 0, 'one': 1, 'two': 2}
PER_CLASS = 8


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
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


def expected_outputs(workdir, pixels):
  """`model.apply` on uint8 `[N, H, W, C]` pixels."""
  run = trained.load(workdir)
  out = run.model.apply({'params': run.params},
                        pixels.astype(np.float32) / 255)
  return np.asarray(out.scores), np.asarray(out.reconstructions)


def test_predictions_match_model_apply(run_dir, tmp_path):
  workdir, digits = run_dir
  files = [str(digits / 'two' / '0.png'), str(digits / 'zero' / '3.png')]
  # An RGB image of another size: stretched to 28x28 and made gray, as
  # Pillow does it.
  rgb = np.asarray(PIL.Image.open(files[0]).convert('RGB').resize((41, 33)))
  PIL.Image.fromarray(rgb).save(tmp_path / 'big_rgb.png')
  files.append(str(tmp_path / 'big_rgb.png'))

  result = prediction.predict(workdir, files)

  pixels = np.stack(
      [np.asarray(PIL.Image.open(f)) for f in files[:2]]
      + [np.asarray(PIL.Image.open(files[2]).convert('L').resize(
          (28, 28), PIL.Image.Resampling.BILINEAR))])[..., None]
  scores, _ = expected_outputs(workdir, pixels)
  assert result['class_names'] == ['one', 'two', 'zero']
  assert result['step'] == 2
  assert [p['image'] for p in result['predictions']] == files
  for row, p in zip(scores, result['predictions']):
    np.testing.assert_allclose(p['scores'], row, rtol=1e-5, atol=1e-6)
    best, second = np.argsort(-row)[:2]
    assert p['predicted']['class'] == best
    assert p['predicted']['name'] == result['class_names'][best]
    assert [t['class'] for t in p['top']] == [best, second]
    np.testing.assert_allclose([t['score'] for t in p['top']],
                               row[[best, second]], rtol=1e-5)
    assert p['reconstruction'] is None
  text = prediction.format_text(result)
  assert f'{files[0]}: {result["predictions"][0]["predicted"]["name"]}' in text
  assert 'top-2:' in text and 'scores: one' in text


def test_directory_is_expanded_recursively(run_dir):
  workdir, digits = run_dir
  result = prediction.predict(workdir, [str(digits)])
  assert len(result['predictions']) == len(CLASSES) * PER_CLASS
  assert result['predictions'][0]['image'] == str(digits / 'one' / '0.png')


def test_cli_json_and_reconstructions(run_dir, tmp_path):
  workdir, digits = run_dir
  files = [str(digits / 'one' / '1.png'), str(digits / 'zero' / '1.png')]
  out_dir = tmp_path / 'recon'
  proc = subprocess.run(
      [sys.executable, '-m', 'capsjax.predict', f'--workdir={workdir}',
       '--json', f'--save_reconstructions={out_dir}', *files],
      capture_output=True, text=True, cwd=ROOT, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 0, proc.stderr
  result = json.loads(proc.stdout)
  pixels = np.stack([np.asarray(PIL.Image.open(f)) for f in files])[..., None]
  scores, reconstructions = expected_outputs(workdir, pixels)
  for k, p in enumerate(result['predictions']):
    np.testing.assert_allclose(p['scores'], scores[k], rtol=1e-5, atol=1e-6)
    assert p['reconstruction'] == str(out_dir / '1.png' if k == 0
                                      else out_dir / '1_2.png')
    written = np.asarray(PIL.Image.open(p['reconstruction']))
    np.testing.assert_allclose(written, reconstructions[k, ..., 0] * 255,
                               atol=1)


def test_cli_error_is_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'capsjax.predict',
       f'--workdir={tmp_path / "missing"}', 'x.png'],
      capture_output=True, text=True, cwd=ROOT, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: image x.png does not exist'), proc.stderr


def test_errors(run_dir, tmp_path):
  workdir, digits = run_dir
  image = str(digits / 'one' / '0.png')
  with pytest.raises(errors.ConfigError, match='does not exist'):
    prediction.predict(str(tmp_path / 'nope'), [image])
  (tmp_path / 'empty_run').mkdir()
  (tmp_path / 'empty_run' / 'config.json').write_text(
      open(os.path.join(workdir, 'config.json')).read())
  with pytest.raises(errors.ConfigError, match='no checkpoint yet'):
    prediction.predict(str(tmp_path / 'empty_run'), [image])
  bad = tmp_path / 'bad.png'
  bad.write_bytes(b'not a png')
  with pytest.raises(errors.DataError, match=f'cannot read image {bad}'):
    prediction.predict(workdir, [str(bad)])
  with pytest.raises(errors.DataError, match='no images given'):
    prediction.predict(workdir, [])
  (tmp_path / 'no_images').mkdir()
  with pytest.raises(errors.DataError, match='holds no PNG or JPEG'):
    prediction.predict(workdir, [str(tmp_path / 'no_images')])


def test_non_folder_runs_stretch_to_the_training_shape():
  for shape in ((28, 28, 1), (32, 30, 3)):
    run = types.SimpleNamespace(
        model=types.SimpleNamespace(input_shape=shape),
        config=types.SimpleNamespace(
            dataset=types.SimpleNamespace(source='tfds')),
        workdir='W')
    assert prediction.image_options(run) == data.ImageOptions(
        size=shape[:2], channels=shape[2], resize='stretch')
  run.model.input_shape = (28, 28, 4)
  with pytest.raises(errors.DataError, match='4-channel'):
    prediction.image_options(run)
