"""Tests for the command line python -m capsjax.predict (capsjax/predict.py).

The library behind it, `runs.predict`, is tested in test_runs.py; here a tiny
CapsNet run (conftest.tiny_run) is classified through the real command.
"""
import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from conftest import ROOT

from capsjax import runs


def _predict(*args):
  return subprocess.run(
      [sys.executable, '-m', 'capsjax.predict', *args],
      capture_output=True, text=True, cwd=ROOT, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.mark.slow  # real processes
def test_json_and_reconstructions(tiny_run, tmp_path):
  workdir, _ = tiny_run('capsnet')
  run = runs.load(workdir)
  pixels = run.dataset.test.images[:2]
  files = []
  for k, image in enumerate(pixels):
    os.makedirs(tmp_path / str(k))
    files.append(str(tmp_path / str(k) / 'digit.png'))  # the same stem twice
    PIL.Image.fromarray(image[..., 0]).save(files[-1])
  out_dir = tmp_path / 'recon'
  proc = _predict(f'--workdir={workdir}', '--json',
                  f'--save_reconstructions={out_dir}', *files)
  assert proc.returncode == 0, proc.stderr
  result = json.loads(proc.stdout)
  expected = run.apply(pixels, reconstruct=True)
  for k, p in enumerate(result['predictions']):
    np.testing.assert_allclose(p['scores'], expected.scores[k], rtol=1e-5,
                               atol=1e-6)
    assert p['reconstruction'] == str(out_dir / ('digit.png' if k == 0
                                                 else 'digit_2.png'))
    written = np.asarray(PIL.Image.open(p['reconstruction']))
    np.testing.assert_allclose(written,
                               expected.reconstructions[k, ..., 0] * 255,
                               atol=1)


@pytest.mark.slow  # real processes
def test_text_output_names_each_image_and_its_class(tiny_run, tmp_path):
  workdir, _ = tiny_run('capsnet')
  image = runs.load(workdir).dataset.test.images[0]
  path = str(tmp_path / 'a.png')
  PIL.Image.fromarray(image[..., 0]).save(path)
  proc = _predict(f'--workdir={workdir}', path)
  assert proc.returncode == 0, proc.stderr
  result = runs.predict(workdir, [path])
  assert proc.stdout == runs.format_text(result)
  best = result['predictions'][0]['predicted']['class']
  assert f'{path}: {best}; top-2: ' in proc.stdout


@pytest.mark.slow  # real processes
def test_an_error_is_one_line(tmp_path):
  proc = _predict(f'--workdir={tmp_path / "missing"}', 'x.png')
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: image x.png does not exist'), proc.stderr
