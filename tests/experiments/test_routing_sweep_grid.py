"""experiments/routing_sweep.py --grid: a sweep over any config fields."""
import csv
import io
import json
import os

import pytest

from conftest import load_script
from conftest import load_config
from capsjax import errors
from capsjax import train




routing_sweep = load_script('routing_sweep')

TINY = {
    'batch_size': 8, 'eval_batch_size': 20, 'num_train_steps': 2,
    'log_every_steps': 2, 'eval_every_steps': 2, 'checkpoint_every_steps': 2,
    'dataset.holdout_per_class': 2,
    'model.conv1_channels': 8, 'model.primary_types': 2,
    'model.primary_dim': 4, 'model.digit_dim': 6,
    'model.decoder_hidden': (16, 32), 'model.conv_impl': 'xla',
}


def tiny_config():
  config = load_config('quickstart', **TINY)
  config.lock()  # As config_flags hands it to the script.
  return config


def test_parse_grid_types_values_like_the_config():
  grid = routing_sweep.parse_grid(tiny_config(), [
      'model.routing=dynamic, self_attention,dynamic',
      'model.routing_iters=1,3',
      'loss.reconstruction_weight=0,5e-4',
      'model.decoder_hidden=(16,32),(8, 8)',
  ])
  assert grid == {'model.routing': ['dynamic', 'self_attention'],
                  'model.routing_iters': [1, 3],
                  'loss.reconstruction_weight': [0.0, 0.0005],
                  'model.decoder_hidden': [(16, 32), (8, 8)]}
  assert type(grid['loss.reconstruction_weight'][0]) is float
  assert type(grid['model.routing_iters'][0]) is int


@pytest.mark.parametrize('spec,match', [
    ('model.routing_iters=1,two', "not a int"),
    ('model.nope=1', 'not in the config'),
    ('model=1', 'group of fields'),
    ('model.routing', 'FIELD=V1,V2'),
    ('seed=1,2', '--seeds'),
])
def test_parse_grid_errors_are_one_line_user_errors(spec, match):
  with pytest.raises(errors.ConfigError, match=match) as info:
    routing_sweep.parse_grid(tiny_config(), [spec])
  assert '\n' not in str(info.value)


def test_repeated_field_is_an_error():
  with pytest.raises(errors.ConfigError, match='twice'):
    routing_sweep.parse_grid(tiny_config(), [
        'model.routing_iters=1', 'model.routing_iters=3'])


def test_plan_and_run_configs():
  config = tiny_config()
  grid = {'model.routing': ['dynamic', 'self_attention'],
          'model.routing_iters': [1, 3]}
  runs = routing_sweep.plan_grid(config, grid, 2)
  assert len(runs) == 8 and len({r.name for r in runs}) == 8
  assert runs[0].name == 'model.routing=dynamic__model.routing_iters=1__seed0'
  assert [r.seed for r in runs] == [0] * 4 + [1] * 4
  cfg = routing_sweep.run_config(config, runs[7])
  assert (cfg.model.routing, cfg.model.routing_iters, cfg.seed) == (
      'self_attention', 3, 1)
  assert config.model.routing == 'dynamic'  # The base is not changed.
  tuple_run = routing_sweep.GridRun((('model.decoder_hidden', (8, 8)),), 0)
  assert '(' not in tuple_run.name and ' ' not in tuple_run.name


def test_a_bad_combination_fails_before_anything_is_written(tmp_path):
  grid = {'model.routing_iters': [1, 0]}
  with pytest.raises(errors.ConfigError, match='routing_iters'):
    routing_sweep.run_sweep(tiny_config(), str(tmp_path / 'sweep'),
                            grid=grid)
  assert not (tmp_path / 'sweep').exists()


def fake_run(sweep_dir, name, routing, iters, seed, error):
  """A finished run whose directory name says nothing of its values."""
  workdir = sweep_dir / name
  workdir.mkdir()
  config = tiny_config().to_dict()
  config['model']['routing'] = routing
  config['model']['routing_iters'] = iters
  config['seed'] = seed
  (workdir / 'config.json').write_text(json.dumps(config))
  (workdir / 'summary.json').write_text(json.dumps({
      'steps': 2, 'test_error_pct': error, 'test_accuracy': 1 - error / 100,
      'dataset': 'embedded:mnist_5k', 'train_images_per_s': 100.0}))


def test_rows_are_named_from_config_json(tmp_path):
  fake_run(tmp_path, 'a', 'self_attention', 1, 0, 3.0)
  fake_run(tmp_path, 'b', 'dynamic', 1, 0, 2.0)
  fake_run(tmp_path, 'c', 'dynamic', 1, 1, 4.0)
  fake_run(tmp_path, 'model.routing=dynamic__seed0', 'inverted_dot_product',
           1, 0, 5.0)
  (tmp_path / 'unfinished').mkdir()
  grid = {'model.routing': ['dynamic', 'self_attention',
                            'inverted_dot_product']}
  rows = routing_sweep.write_results(str(tmp_path), grid)
  assert [(r['run'], r['model.routing']) for r in rows] == [
      ('b', 'dynamic'), ('c', 'dynamic'), ('a', 'self_attention'),
      ('model.routing=dynamic__seed0', 'inverted_dot_product')]
  table = (tmp_path / 'results.md').read_text()
  assert ('| model.routing | Test error (%) | Seeds | Steps | '
          'Train images/s |') in table
  assert '| dynamic | 3.00 ± 1.41 | 2 | 2 | 100 |' in table
  assert '| self_attention | 3.00 ± – | 1 | 2 | 100 |' in table
  assert '| inverted_dot_product | 5.00 ± – | 1 | 2 | 100 |' in table
  assert table.count('\n| ') == 2 + 3
  rows_csv = list(csv.DictReader(io.StringIO(
      (tmp_path / 'results.csv').read_text())))
  assert [r['model.routing'] for r in rows_csv] == [
      'dynamic', 'dynamic', 'self_attention', 'inverted_dot_product']
  assert (tmp_path / 'test_error.png').stat().st_size > 0


@pytest.mark.slow  # trains or compiles a whole model
def test_grid_sweep_trains_skips_and_resumes(tmp_path, monkeypatch):
  grid = routing_sweep.parse_grid(
      tiny_config(), ['model.routing=dynamic,inverted_dot_product'])
  rows = routing_sweep.run_sweep(tiny_config(), str(tmp_path), grid=grid)
  assert [r['model.routing'] for r in rows] == ['dynamic',
                                               'inverted_dot_product']
  for r in rows:
    with open(tmp_path / r['run'] / 'config.json') as f:
      assert json.load(f)['model']['routing'] == r['model.routing']
  calls = []

  def fake_train(config, workdir):
    calls.append((os.path.basename(workdir), config.model.routing))
    return None, {'test_error_pct': 0.0}
  monkeypatch.setattr(train, 'train_and_evaluate', fake_train)
  routing_sweep.run_sweep(tiny_config(), str(tmp_path), grid=grid)
  assert not calls  # Both finished.
  os.remove(tmp_path / rows[1]['run'] / 'summary.json')
  routing_sweep.run_sweep(tiny_config(), str(tmp_path), grid=grid)
  assert calls == [(rows[1]['run'], 'inverted_dot_product')]
