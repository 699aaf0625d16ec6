"""Workdirs written by earlier capsjax versions still resume and predict.

tests/fixtures/workdir_v*/ are small finished runs committed as each version
wrote them (tests/fixtures/make_old_workdir.py regenerates the current
version's; tests/fixtures/README.md says how they were made). Every one must
resume training and classify an image with `python -m capsjax.predict`, or
fail with one line naming the version that wrote it.
"""
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import capsjax
from capsjax import errors
from capsjax import runs
from capsjax import train
from capsjax import workdir as workdir_lib
from conftest import ROOT

pytestmark = pytest.mark.slow  # old workdirs resumed and trained

FIXTURES = sorted(glob.glob(os.path.join(ROOT, 'tests', 'fixtures',
                                         'workdir_v*')))


def test_there_is_a_fixture_of_this_version():
  # A format change without a new fixture would go untested.
  assert os.path.join(ROOT, 'tests', 'fixtures',
                      f'workdir_v{capsjax.__version__}') in FIXTURES


@pytest.fixture(params=FIXTURES, ids=os.path.basename)
def old_workdir(request, tmp_path):
  """A copy of a fixture workdir (training writes into it)."""
  copy = tmp_path / os.path.basename(request.param)
  shutil.copytree(request.param, copy)
  return copy


def test_the_workdir_records_the_version_that_wrote_it(old_workdir):
  version = os.path.basename(old_workdir)[len('workdir_v'):]
  metas = glob.glob(str(old_workdir / 'checkpoints' / '*' / 'meta' / '*'))
  assert metas
  recorded = [json.load(open(path)).get('capsjax_version') for path in metas
              if path.endswith('metadata')]
  assert recorded == [version]
  summary = workdir_lib.read_json(old_workdir / 'summary.json')
  assert summary['capsjax_version'] == version


def test_an_old_workdir_resumes(old_workdir):
  config = runs.read_config(str(old_workdir))
  start = runs.load(str(old_workdir)).step
  config.num_train_steps = start + 2
  _, summary = train.train_and_evaluate(config, str(old_workdir))
  assert summary['steps'] == start + 2
  assert np.isfinite(summary['test_loss'])


def test_an_old_workdir_predicts_from_the_command_line(old_workdir, tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  run = runs.load(str(old_workdir))
  image = tmp_path / 'digit.png'
  Image.fromarray(run.dataset.test.images[0][..., 0]).save(image)
  result = subprocess.run(
      [sys.executable, '-m', 'capsjax.predict', f'--workdir={old_workdir}',
       '--json', str(image)], cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  predicted, = json.loads(result.stdout)['predictions']
  assert predicted['predicted']['class'] in range(10)


def rewrite_version(workdir, version):
  for path in glob.glob(str(workdir / 'checkpoints' / '*' / 'meta' /
                            'metadata')):
    with open(path) as f:
      meta = json.load(f)
    meta['capsjax_version'] = version
    with open(path, 'w') as f:
      json.dump(meta, f)


def test_a_checkpoint_another_version_wrote_that_does_not_fit_names_it(
    old_workdir):
  rewrite_version(old_workdir, '0.0.1')
  config = runs.read_config(str(old_workdir))
  config.model.digit_dim = 5  # As if that version had laid out the arrays so.
  config.num_train_steps = 100
  with pytest.raises(errors.VersionError) as e:
    train.train_and_evaluate(config, str(old_workdir))
  message = str(e.value)
  assert '\n' not in message
  assert 'written by capsjax 0.0.1, and this capsjax ' in message, message
  assert 'install capsjax==0.0.1' in message
  # Not taken for damage: nothing was moved aside.
  assert not (old_workdir / 'checkpoints_corrupt').exists()


def test_a_damaged_checkpoint_of_this_version_is_still_damage(old_workdir):
  rewrite_version(old_workdir, capsjax.__version__)
  for path in glob.glob(str(old_workdir / 'checkpoints' / '*' / 'state' /
                            '**' / 'd' / '*'), recursive=True):
    os.truncate(path, os.path.getsize(path) // 2)
  config = runs.read_config(str(old_workdir))
  config.num_train_steps = 100
  with pytest.raises(errors.CheckpointCorruptError):
    train.train_and_evaluate(config, str(old_workdir))
