"""experiments/routing_sweep.py and experiments/visualize.py on a tiny CapsNet.

The scripts' functions run in-process on the embedded MNIST sample with a
shrunk model; one test runs the sweep's command line as a user would.
"""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

from absl import flags
import matplotlib.image
import numpy as np
import pytest

from capsjax import errors
from capsjax import layers
from capsjax import losses
from capsjax import runs
from capsjax import train
from conftest import load_script
from conftest import load_config
from conftest import ROOT




routing_sweep = load_script('routing_sweep')
visualize = load_script('visualize')

# The tiny model as --config.FIELD=VALUE overrides of configs/quickstart.py,
# so that the command-line test trains exactly what the in-process tests do.
TINY = {
    'batch_size': 8,
    'eval_batch_size': 20,
    'num_train_steps': 2,
    'log_every_steps': 2,
    'eval_every_steps': 2,
    'checkpoint_every_steps': 2,
    'dataset.holdout_per_class': 5,  # 50 test digits
    'model.conv1_channels': 8,
    'model.primary_types': 2,
    'model.primary_dim': 4,
    'model.decoder_hidden': (16, 32),
    # XLA's convolution compiles in a third of the time of the sliced one.
    'model.conv_impl': 'xla',
    # model.digit_dim stays 16: Figure 4 has one row per dimension.
}


def tiny_config():
  config = load_config('quickstart', **TINY)
  config.lock()  # As config_flags hands it to the scripts.
  return config


# The two runs of the module's sweep directory, as (iters, recon) arguments.
SWEEP_ON = ([2], [True])   # 2 routing iterations, reconstruction on
SWEEP_OFF = ([1], [False])  # 1 routing iteration, reconstruction off


def sweep(sweep_dir, iters_and_recon, config=None):
  iters, recon = iters_and_recon
  return routing_sweep.run_sweep(config or tiny_config(), str(sweep_dir),
                                 iters=iters, recon=recon, num_seeds=1)


@pytest.fixture(scope='module')
def sweep_dir(tmp_path_factory):
  """Two finished runs, the second added by a later sweep of another cell.

  Two runs, not a 2 x 2 grid, to keep the tests fast (each run compiles its
  own model); the table of a full grid is tested on made-up rows.
  """
  path = tmp_path_factory.mktemp('sweep')
  sweep(path, SWEEP_ON)
  sweep(path, SWEEP_OFF)
  return path


def read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def png_size(path):
  assert os.path.getsize(path) > 0
  image = matplotlib.image.imread(path)
  return image.shape[:2]


# ---------------------------------------------------------------- sweep --


@pytest.mark.parametrize('text,expected', [('1,3', [1, 3]), ('2', [2]),
                                           (' 5, 2 ,5', [5, 2])])
def test_parse_iters(text, expected):
  assert routing_sweep.parse_iters(text) == expected


@pytest.mark.parametrize('text', ['0', '1,x', '', '1,,3', '-1', '2.5'])
def test_bad_iters_is_a_one_line_error(text):
  with pytest.raises(errors.ConfigError) as e:
    routing_sweep.parse_iters(text)
  assert '\n' not in str(e.value)
  assert str(e.value).startswith(
      f'--routing_iters must be comma-separated ints >= 1, got {text!r}')
  assert '--routing_iters=1,3' in str(e.value)


@pytest.mark.parametrize('text,expected', [('on,off', [True, False]),
                                           ('OFF', [False]),
                                           ('on, on', [True])])
def test_parse_recon(text, expected):
  assert routing_sweep.parse_recon(text) == expected


@pytest.mark.parametrize('text', ['yes', 'on,maybe', ''])
def test_bad_recon_is_a_one_line_error(text):
  with pytest.raises(errors.ConfigError, match=r'--recon must be on, off or '
                     r'on,off, got .*; e\.g\. --recon=on,off\.$'):
    routing_sweep.parse_recon(text)


@pytest.mark.parametrize('value', [0, -2, True, 1.5])
def test_bad_seeds_is_a_one_line_error(value):
  with pytest.raises(errors.ConfigError, match=r'--seeds must be an int >= 1'):
    routing_sweep.check_seeds(value)
  assert routing_sweep.check_seeds(3) == 3


def test_plan_and_run_configs():
  config = tiny_config()
  config.seed = 5
  runs = routing_sweep.plan(config, [1, 3], [True, False], 2)
  assert sorted(run.name for run in runs) == sorted(
      f'iters{i}_recon-{r}_seed{s}' for i in (1, 3) for r in ('on', 'off')
      for s in (5, 6))
  # Seed-major: the first four runs fill every cell once.
  assert {run.seed for run in runs[:4]} == {5}

  on = routing_sweep.run_config(config, routing_sweep.Run(1, True, 6))
  off = routing_sweep.run_config(config, routing_sweep.Run(1, False, 5))
  assert (on.model.routing_iters, on.loss.reconstruction_weight, on.seed) == (
      1, 0.0005, 6)
  assert (off.loss.reconstruction_weight, off.seed) == (0.0, 5)
  # The base config is left alone.
  assert (config.model.routing_iters, config.loss.reconstruction_weight,
          config.seed) == (3, 0.0005, 5)

  config.loss.reconstruction_weight = 0.002
  on = routing_sweep.run_config(config, routing_sweep.Run(1, True, 5))
  assert on.loss.reconstruction_weight == 0.002
  config.loss.reconstruction_weight = 0.0  # on = the paper's weight
  on = routing_sweep.run_config(config, routing_sweep.Run(1, True, 5))
  assert on.loss.reconstruction_weight == 0.0005


def test_config_changes_name_the_fields_that_differ():
  config = tiny_config()
  saved = json.loads(json.dumps(config.to_dict()))  # as config.json holds it
  assert routing_sweep.config_changes(saved, config) == []
  saved['learning_rate'] = 0.01
  saved['num_train_steps'] = 1  # raising it extends a run: not a change
  assert routing_sweep.config_changes(saved, config) == [
      'learning_rate: 0.01 -> 0.001']


def row(iters, recon, seed, error, steps=100):
  return {'run': f'iters{iters}_recon-{recon}_seed{seed}',
          'routing_iters': iters, 'reconstruction': recon, 'seed': seed,
          'test_error_pct': error, 'steps': steps, 'dataset': 'tfds:mnist'}


def test_table_1_is_mean_and_sample_std_over_seeds():
  rows = [row(3, 'on', 0, 0.5), row(1, 'off', 0, 1.0), row(1, 'off', 1, 2.0),
          row(1, 'off', 2, 4.0, steps=200), row(1, 'on', 0, 3.0)]
  table = [line for line in routing_sweep.results_markdown(rows).splitlines()
           if line.startswith('| ') and line[2].isdigit()]
  # mean(1, 2, 4) = 2.33; sample std = sqrt(((1-7/3)^2 + (2-7/3)^2 +
  # (4-7/3)^2) / 2) = 1.53. Ordered as the paper: iterations, then no/yes.
  assert table == ['| 1 | no | 2.33 ± 1.53 | 3 | 100, 200 |',
                   '| 1 | yes | 3.00 ± – | 1 | 100 |',
                   '| 3 | yes | 0.50 ± – | 1 | 100 |']


@pytest.mark.slow  # trains or compiles a whole model
def test_sweep_writes_one_row_per_run_table_1_and_a_plot(sweep_dir):
  rows = read_csv(sweep_dir / 'results.csv')
  assert {'run', 'routing_iters', 'reconstruction', 'seed', 'test_error_pct',
          'steps'} <= set(rows[0])
  # Both sweeps' runs: the results are rebuilt from every run present.
  assert [(r['routing_iters'], r['reconstruction'], r['seed'])
          for r in rows] == [('1', 'off', '0'), ('2', 'on', '0')]
  table = (sweep_dir / 'results.md').read_text()
  for r in rows:
    workdir = sweep_dir / r['run']
    with open(workdir / 'summary.json') as f:
      summary = json.load(f)
    with open(workdir / 'config.json') as f:
      config = json.load(f)
    assert float(r['test_error_pct']) == pytest.approx(
        summary['test_error_pct'])
    assert int(r['steps']) == summary['steps'] == 2
    assert config['model']['routing_iters'] == int(r['routing_iters'])
    assert config['loss']['reconstruction_weight'] == (
        0.0005 if r['reconstruction'] == 'on' else 0.0)
    recon = 'yes' if r['reconstruction'] == 'on' else 'no'
    assert (f'| {r["routing_iters"]} | {recon} | '
            f'{summary["test_error_pct"]:.2f} ± – | 1 | 2 |') in table
  assert table.count('\n| ') == 2 + 2  # header, rule and the two cells
  assert png_size(sweep_dir / 'test_error.png') == (350, 500)


@pytest.mark.slow  # trains or compiles a whole model
def test_rerun_skips_finished_runs_and_retrains_the_rest(
    sweep_dir, tmp_path, monkeypatch):
  copy = tmp_path / 'sweep'
  shutil.copytree(sweep_dir, copy)
  results = (copy / 'results.csv').read_text()
  calls = []

  def fake_train(config, workdir):
    calls.append((os.path.basename(workdir), config.num_train_steps))
    return None, {'test_error_pct': 0.0}

  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  sweep(copy, SWEEP_ON)
  sweep(copy, SWEEP_OFF)
  assert not calls  # both finished: nothing loaded or trained
  assert (copy / 'results.csv').read_text() == results

  # The full grid: only the two missing runs are trained.
  sweep(copy, ([1, 2], [True, False]))
  assert sorted(calls) == [('iters1_recon-on_seed0', 2),
                           ('iters2_recon-off_seed0', 2)]

  # A run without its summary (interrupted) goes back to train_and_evaluate,
  # which resumes it from its checkpoint; unfinished runs are not reported.
  calls.clear()
  os.remove(copy / 'iters2_recon-on_seed0' / 'summary.json')
  rows = sweep(copy, SWEEP_ON)
  assert calls == [('iters2_recon-on_seed0', 2)]
  assert [r['run'] for r in rows] == ['iters1_recon-off_seed0']
  assert len(read_csv(copy / 'results.csv')) == 1

  # More steps than the finished run has: it is continued.
  calls.clear()
  config = tiny_config()
  config.num_train_steps = 3
  sweep(copy, SWEEP_OFF, config)
  assert calls == [('iters1_recon-off_seed0', 3)]


@pytest.mark.slow  # trains or compiles a whole model
def test_sweep_command_line(sweep_dir, tmp_path):
  # The one subprocess: flags, --config.FIELD overrides and the exit status.
  copy = tmp_path / 'sweep'
  shutil.copytree(sweep_dir, copy)
  table = (copy / 'results.md').read_text()
  os.remove(copy / 'results.md')
  overrides = [f'--config.{k}={v}' for k, v in TINY.items()]
  result = subprocess.run(
      [sys.executable, 'experiments/routing_sweep.py',
       '--config=configs/quickstart.py', f'--sweep_dir={copy}',
       '--routing_iters=2', '--recon=on', '--seeds=1', *overrides],
      cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  # The run was found finished with the same config (so the overrides
  # reached it), and the results of both runs were rewritten and printed.
  assert result.stderr.count('finished earlier') == 1, result.stderr[-3000:]
  assert 'different config' not in result.stderr
  assert (copy / 'results.md').read_text() == table
  assert table in result.stdout


# ------------------------------------------------------------ visualize --


EXPECTED_PNG_SIZES = {  # (height, width) in pixels
    'reconstructions': (180, 600),
    'dimension_perturbations': (550, 1000),
    'couplings': (450, 900),
    'capsule_lengths': (400, 1000),
    'confusion_matrix': (500, 550),
}


@pytest.mark.slow  # trains or compiles a whole model
def test_visualize_writes_the_five_figures(sweep_dir, tmp_path):
  paths = visualize.visualize(str(sweep_dir / 'iters2_recon-on_seed0'),
                              str(tmp_path / 'figures'))
  assert sorted(os.listdir(tmp_path / 'figures')) == sorted(
      f'{name}.png' for name in EXPECTED_PNG_SIZES)
  for name, size in EXPECTED_PNG_SIZES.items():
    assert paths[name] == str(tmp_path / 'figures' / f'{name}.png')
    assert png_size(paths[name]) == size, name


@pytest.mark.slow  # trains or compiles a whole model
def test_visualize_without_reconstruction_skips_the_decoder_figures(
    sweep_dir, tmp_path, caplog):
  caplog.set_level('INFO')
  workdir = tmp_path / 'run'
  shutil.copytree(sweep_dir / 'iters1_recon-off_seed0', workdir)
  visualize.visualize(str(workdir))  # default --out: WORKDIR/figures
  assert sorted(os.listdir(workdir / 'figures')) == [
      'capsule_lengths.png', 'confusion_matrix.png', 'couplings.png']
  assert 'decoder is untrained' in caplog.text


@pytest.mark.slow  # trains or compiles a whole model
def test_loaded_run_reproduces_its_test_loss(sweep_dir):
  # Without reconstruction the test loss is the mean margin loss, so the
  # restored parameters and the model must be exactly the trained ones.
  workdir = sweep_dir / 'iters1_recon-off_seed0'
  run = runs.load(str(workdir))
  with open(workdir / 'summary.json') as f:
    summary = json.load(f)
  assert run.step == 2 and run.model.routing_iters == 1
  lengths = visualize.scores_of_test_split(run)
  labels = run.dataset.test.labels
  assert lengths.shape == (50, 10)
  assert np.mean(losses.margin_loss(lengths, labels)) == pytest.approx(
      summary['test_loss'], rel=1e-5)
  counts = visualize.confusion_matrix(labels, lengths.argmax(-1), 10)
  assert counts.sum() == 50 and (counts.sum(1) == 5).all()  # 5 per class
  assert 100 * (1 - np.trace(counts) / 50) == pytest.approx(
      summary['test_error_pct'])


def test_perturbation_batch_changes_one_dimension_by_each_delta():
  capsules = np.random.default_rng(0).normal(size=(10, 16)).astype(np.float32)
  batch = visualize.perturbation_batch(capsules, select=3)
  deltas = np.linspace(-0.25, 0.25, 11)
  assert batch.shape == (16, 11, 10, 16)
  for d in range(16):
    for k, delta in enumerate(deltas):
      expected = capsules.copy()
      expected[3, d] += delta
      np.testing.assert_allclose(batch[d, k], expected, atol=1e-6)


@pytest.mark.slow  # trains or compiles a whole model
def test_figure_4_grid_is_16_dimensions_by_11_decoded_images(sweep_dir):
  run = runs.load(str(sweep_dir / 'iters2_recon-on_seed0'))
  out = visualize.forward(run, run.dataset.test.images[:1])
  predicted = int(out.lengths[0].argmax())
  grid = visualize.dimension_grid(run, out.capsules[0], predicted)
  assert grid.shape == (16, 11, 28, 28, 1)
  # Shift 0 (column 5) decodes the unperturbed capsule: the model's own
  # reconstruction, masked by the predicted class.
  for d in range(16):
    np.testing.assert_allclose(grid[d, 5], out.reconstructions[0], atol=1e-5)
  # Every other shift changes the decoded image.
  change = np.abs(grid - grid[:, 5:6]).max(axis=(2, 3, 4))
  assert (np.delete(change, 5, axis=1) > 1e-6).all()
  # After 2 steps the capsules are tiny (lengths ~3e-4), so the mask hardly
  # matters above; capsules of length ~0.5 check that row d, column k decodes
  # capsule `select` with dimension d shifted by DELTAS[k], masked by `select`.
  capsules = np.random.default_rng(1).normal(
      scale=0.12, size=(10, 16)).astype(np.float32)
  decoder = layers.Decoder((28, 28, 1), (16, 32))
  for select in (4, 7):
    grid = visualize.dimension_grid(run, capsules, select)
    for d, k in ((0, 0), (9, 5), (15, 10)):
      shifted = capsules.copy()
      shifted[select, d] += visualize.DELTAS[k]
      expected = decoder.apply({'params': run.params['decoder']},
                               shifted[None], np.array([select]))
      np.testing.assert_allclose(grid[d, k], expected[0], atol=1e-6)


def test_workdir_without_config_or_checkpoint_is_a_one_line_error(tmp_path):
  with pytest.raises(errors.ConfigError, match='does not exist'):
    runs.load(str(tmp_path / 'missing'))
  with pytest.raises(errors.ConfigError) as e:
    visualize.visualize(str(tmp_path))
  assert 'has no config.json' in str(e.value) and '\n' not in str(e.value)
  (tmp_path / 'config.json').write_text(json.dumps(tiny_config().to_dict()))
  with pytest.raises(errors.ConfigError) as e:
    visualize.visualize(str(tmp_path))
  assert 'has no checkpoint yet' in str(e.value) and '\n' not in str(e.value)
  assert '--workdir=' in str(e.value)
  assert not (tmp_path / 'checkpoints').exists()
  assert not (tmp_path / 'figures').exists()


def test_docs_sweep_command_and_gallery():
  with open(os.path.join(ROOT, 'docs', 'experiments.md')) as f:
    page = f.read()
  section = page.split('## Sweep routing iterations (Table 1)\n')[1]
  command = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
  assert command.startswith('python experiments/routing_sweep.py ')
  defined = flags.FlagValues()
  routing_sweep.define_flags(defined)
  for flag in re.findall(r'--(\w+)[.=]', command):
    assert flag in defined, flag
  gallery = page.split('## Gallery\n')[1].split('\n## ', 1)[0]
  shown = re.findall(r'\(gallery/(\w+)\.png\)', gallery)
  assert sorted(shown) == sorted(EXPECTED_PNG_SIZES)
  for name in shown:
    path = os.path.join(ROOT, 'docs', 'gallery', f'{name}.png')
    assert png_size(path) == EXPECTED_PNG_SIZES[name], name
    assert os.path.getsize(path) < 80_000, name
