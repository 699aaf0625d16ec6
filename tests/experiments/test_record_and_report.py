"""Recorded runs (experiments/record.py) and the results page (report.py).

The renderer is tested on small synthetic records; the recorder on a tiny
CapsNet trained a few steps on the embedded sample, interrupted and resumed.
"""
import copy
import json
import os
import re

import pytest

import conftest
from capsjax import checkpoints
from capsjax import data
from capsjax import validation

record = conftest.load_script('record')
report = conftest.load_script('report')

# A number standing alone (not inside a word such as 40x40 or a hash).
_NUMBER = re.compile(r'(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w])')


def synthetic(name, table, row, accuracy, reference=None, steps=400):
  evaluations = [{'step': s, 'epoch': s * 64 / 4000, 'accuracy': a,
                  'error_pct': 100 * (1 - a), 'loss': 0.31}
                 for s, a in ((steps // 2, accuracy - 0.0417), (steps,
                                                                 accuracy))]
  return {
      'format': 1, 'name': name, 'table': table, 'row': row,
      'scale': 'twice the data of the paper', 'reference': reference,
      'command': f'python experiments/record.py run {name}',
      'args': ['--config=configs/quickstart.py'],
      'config': {'batch_size': 64},
      'invocations': [{
          'commit': 'abcdefabcdef0123', 'dirty': False,
          'cpu_model': 'Imaginary CPU 7B13', 'cpu_cores': 3,
          'backend': 'cpu', 'device_kind': 'cpu', 'device_count': 1,
          'jax': '0.10.2', 'capsjax': '0.1.0', 'python': '3.11.2'}],
      'summary': {'test_accuracy': accuracy, 'test_error_pct':
                  100 * (1 - accuracy), 'test_loss': 0.3, 'steps': steps,
                  'num_params': 6_804_470, 'train_images_per_s': 123.456,
                  'wall_s': 987.6, 'train_examples': 4000,
                  'dataset': 'embedded:mnist_5k', 'test_examples': 1000},
      'evaluations': evaluations,
  }


def write_records(directory, records):
  os.makedirs(directory, exist_ok=True)
  for r in records:
    with open(os.path.join(directory, f'{r["name"]}.json'), 'w') as f:
      json.dump(r, f)


@pytest.fixture
def records():
  paper = {'label': 'The paper', 'metric': 'test_error_pct', 'value': 5.2,
           'source': 'Section 6'}
  return [
      synthetic('b_capsnet', 'Table B', 'CapsNet', 0.9781, paper),
      synthetic('a_cnn', 'Table A', 'CNN', 0.9612, steps=300),
      synthetic('a_capsnet', 'Table A', 'CapsNet', 0.9655),
  ]


README_TEXT = (f'# capsjax\n\n{report.README_BEGIN}\nold table\n'
               f'{report.README_END}\n\nmore\n')


def render(tmp_path, records, out='out'):
  write_records(tmp_path / out / 'records', records)
  page = tmp_path / out / 'docs' / 'results.md'
  readme = tmp_path / out / 'README.md'
  readme.write_text(README_TEXT)
  paths = report.render(str(tmp_path / out / 'records'), str(page),
                        str(readme))
  return page.read_text(), {os.path.relpath(p, tmp_path / out):
                            open(p, 'rb').read() for p in paths}


def test_two_renders_of_the_same_records_are_identical(tmp_path, records):
  page, files = render(tmp_path, records, 'one')
  # Written in another order: the page must not depend on it.
  page_again, files_again = render(tmp_path, records[::-1], 'two')
  assert sorted(files) == ['README.md', 'docs/results.md',
                           'docs/results/table-a.png',
                           'docs/results/table-b.png']
  assert files == files_again
  assert page.index('## Table A') < page.index('## Table B')
  assert page.index('| CapsNet | 96.55') < page.index('| CNN | 96.12')


def numbers_of(records):
  """Every number of the records, in each format the page shows."""
  shown = set()

  def collect(value):
    if isinstance(value, dict):
      for v in value.values():
        collect(v)
    elif isinstance(value, list):
      for v in value:
        collect(v)
    elif isinstance(value, str):
      shown.update(_NUMBER.findall(value))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      # The page's formats: as is, thousands, percent of a fraction, minutes.
      shown.update({str(value), f'{value:,}', f'{value:.2f}',
                    f'{100 * value:.2f}', f'{value:.1f}',
                    f'{value / 60:.1f}'})
  collect(records)
  return shown


def test_every_number_on_the_page_comes_from_a_record(tmp_path, records):
  page, _ = render(tmp_path, records)
  numbers = _NUMBER.findall(page)
  assert '96.55' in numbers and '6,804,470' in numbers and '16.5' in numbers
  # Besides the records' own numbers: their count and total wall time.
  assert 'The 3 records took 0.8 hours of wall time in all' in page
  assert [n for n in numbers
          if n not in numbers_of(records) | {'3', '0.8'}] == []


def test_the_readme_table_is_rendered_between_its_markers(tmp_path, records):
  render(tmp_path, records)
  text = (tmp_path / 'out' / 'README.md').read_text()
  before, rest = text.split(report.README_BEGIN)
  block, after = rest.split(report.README_END)
  assert (before, after) == ('# capsjax\n\n', '\n\nmore\n')
  assert 'old table' not in block
  assert block.count('\n| Table A |') == 2 and '| Table B |' in block
  numbers = _NUMBER.findall(block)
  assert '96.55' in numbers and '97.81' in numbers
  assert [n for n in numbers if n not in numbers_of(records)] == []


def test_a_run_on_a_gpu_names_the_gpu(tmp_path, records):
  records[0]['invocations'][0].update(backend='gpu', device_kind='NVIDIA H200',
                                      commit=None, dirty=None)
  page, _ = render(tmp_path, records)
  assert '1 x NVIDIA H200 on Imaginary CPU 7B13, 3 cores, gpu / `no git`' in (
      page)
  block = (tmp_path / 'out' / 'README.md').read_text()
  assert '| NVIDIA H200 (gpu) |' in block
  assert '| Imaginary CPU 7B13 (cpu) |' in block


def test_a_tree_without_git_records_the_commit_it_is_told(monkeypatch):
  monkeypatch.setattr(record, '_git', lambda *args: None)
  monkeypatch.setenv('CAPSJAX_COMMIT', 'f' * 40)
  env = record.environment()
  assert (env['commit'], env['dirty']) == ('f' * 40, None)


def test_a_readme_without_the_markers_is_a_one_line_error(tmp_path, records):
  with pytest.raises(report.errors.DataError) as excinfo:
    report.replace_readme_block('# capsjax\n', report.readme_markdown(records))
  assert '\n' not in str(excinfo.value)
  assert report.README_BEGIN in str(excinfo.value)


def test_the_readme_shows_the_recorded_runs_of_this_checkout():
  block = conftest.block_between(report.README, report.README_BEGIN,
                                 report.README_END)
  assert block == '\n' + report.readme_markdown(
      report.load_records(report.RESULTS_DIR)), (
          'README.md is not the records\' rendering: run python '
          'experiments/report.py')


def test_a_number_changed_in_a_record_changes_the_page(tmp_path, records):
  page, files = render(tmp_path, records, 'before')
  changed = copy.deepcopy(records)
  changed[2]['summary']['train_images_per_s'] = 45.6
  changed[2]['evaluations'][0]['accuracy'] = 0.5
  page_after, files_after = render(tmp_path, changed, 'after')
  assert '123.5' in page and '45.6' in page_after
  assert page_after == page.replace('| 123.5 | 16.5 |\n| CNN',
                                    '| 45.6 | 16.5 |\n| CNN')
  # Its figure follows its evaluations; the other table's does not change.
  assert files['docs/results/table-a.png'] != files_after[
      'docs/results/table-a.png']
  assert files['docs/results/table-b.png'] == files_after[
      'docs/results/table-b.png']


def test_published_numbers_are_labelled_with_their_source(tmp_path, records):
  page, _ = render(tmp_path, records)
  assert '| 5.20% error (The paper) |' in page
  assert '- The paper: Section 6' in page
  table_a = page[page.index('## Table A'):page.index('## Table B')]
  assert 'Published numbers' not in table_a


def test_figures_of_tables_no_longer_recorded_are_removed(tmp_path, records):
  render(tmp_path, records)
  os.remove(tmp_path / 'out' / 'records' / 'b_capsnet.json')
  page, files = render(tmp_path, records[1:])
  assert 'Table B' not in page
  assert not (tmp_path / 'out' / 'docs' / 'results' / 'table-b.png').exists()


def test_a_record_without_a_needed_field_is_a_one_line_error(tmp_path,
                                                            records):
  del records[0]['summary']['wall_s']
  write_records(tmp_path, records)
  with pytest.raises(report.errors.DataError) as excinfo:
    report.load_records(str(tmp_path))
  conftest.assert_one_line_data_error(excinfo, 'b_capsnet.json',
                                      'summary.wall_s', 'record.py run')


def test_no_records_is_a_page_that_says_so(tmp_path):
  page = tmp_path / 'results.md'
  report.render(str(tmp_path / 'none'), str(page))
  assert 'No runs have been recorded yet.' in page.read_text()


def test_every_planned_experiment_builds_a_valid_config():
  plan = record.load_plan()
  assert {'fashion_capsnet_10ep', 'fashion_dynamic1', 'fashion_dynamic3',
          'fashion_self_attention', 'fashion_inverted_dot_product2',
          'fashion_efficient_capsnet', 'fashion_matrix_capsnet_em',
          'fashion_baseline_cnn', 'multimnist_capsnet',
          'multimnist_baseline_cnn', 'affine_capsnet',
          'affine_baseline_cnn'} <= set(plan)
  models = set()
  for name, entry in plan.items():
    if entry.get('kind') == report.AFFINE:
      assert set(entry['runs']) <= set(plan), name
      for key in ('clean_accuracy', 'affine_accuracy'):
        assert set(entry['reference'][key]) == set(entry['runs']), name
      continue
    config = record.parse_config(entry['args'])
    validation.check_config(config)
    models.add((config.model.name, config.model.routing,
                config.model.routing_iters))
    assert entry['table'] and entry['row'] and entry['scale'], name
    if entry['reference']:
      assert {'label', 'metric', 'value', 'source'} <= set(entry['reference'])
  assert {('capsnet', 'dynamic', 1), ('capsnet', 'dynamic', 3),
          ('capsnet', 'self_attention', 1),
          ('capsnet', 'inverted_dot_product', 2),
          ('efficient_capsnet', 'self_attention', 1),
          ('matrix_capsnet_em', 'em', 3)} <= models
  # The paper's Table 1 on Fashion-MNIST: every cell of routing iterations
  # x reconstruction loss, each alike otherwise.
  cells = {}
  for name in record.table_names('fashion_models', plan,
                                 record.load_tables()):
    config = record.parse_config(plan[name]['args'])
    if (config.model.name == 'capsnet' and config.model.routing == 'dynamic'
        and config.model.readout == 'length'):
      cell = (config.model.routing_iters,
              config.loss.reconstruction_weight > 0)
      config.model.routing_iters = 3
      config.loss.reconstruction_weight = 0.0005
      cells[cell] = config.to_json()
  assert set(cells) == {(1, False), (1, True), (3, False), (3, True)}
  assert len(set(cells.values())) == 1
  fashion = record.parse_config(plan['fashion_capsnet_10ep']['args'])
  assert fashion.dataset.random_flip and fashion.dataset.source == 'idx'
  assert fashion.num_train_steps * fashion.batch_size // 60_000 == 10


def test_the_fashion_models_fit_its_images():
  # Fashion-MNIST's images have the embedded digits' shape, 28x28x1.
  dataset = None
  for arg in ('', ':efficient_capsnet', ':matrix_capsnet_em'):
    config = record.parse_config([
        f'--config=configs/fashion_mnist.py{arg}',
        '--config.dataset.source=embedded', '--config.dataset.name=mnist_5k'])
    dataset = dataset or data.load(config.dataset)
    validation.check_data(config, dataset)


def affine_record(name='affine_pair', table='Table C'):
  runs = ('c_capsnet', 'c_cnn')
  return {
      'format': 1, 'kind': report.AFFINE, 'name': name, 'table': table,
      'scale': 'a generated set', 'command':
      f'python experiments/record.py run {name}',
      'reference': {'label': 'The paper', 'source': 'Section 5.2',
                    'clean_accuracy': {'c_capsnet': 0.9923, 'c_cnn': 0.9922},
                    'affine_accuracy': {'c_capsnet': 0.79, 'c_cnn': 0.66}},
      'invocations': synthetic('x', 'x', 'x', 0.5)['invocations'],
      'wall_s': 123.0,
      'rows': [{'run': run, 'row': row, 'model': model, 'steps': steps,
                'clean_accuracy': clean, 'affine_accuracy': affine,
                'clean_examples': 1000, 'affine_examples': 1000}
               for run, row, model, steps, clean, affine in zip(
                   runs, ('CapsNet', 'CNN'), ('capsnet', 'baseline_cnn'),
                   (875, 250), (0.9473, 0.9481), (0.6134, 0.5517))],
  }


def test_an_affine_record_is_a_section_of_its_own(tmp_path, records):
  affine = affine_record()
  page, files = render(tmp_path, records + [affine])
  section = page[page.index('## Table C'):]
  assert '| CapsNet | 875 | 94.73 | 61.34 | 99.23 / 79.00 (The paper) |' in (
      section)
  assert '| CNN | 250 | 94.81 | 55.17 | 99.22 / 66.00 (The paper) |' in section
  assert 'docs/results/table-c.png' not in files  # no curve of its own
  numbers = _NUMBER.findall(page)
  # Its wall time counts in the page's total: 3 x 987.6 s + 123 s.
  assert 'The 4 records took 0.9 hours' in page
  assert [n for n in numbers
          if n not in numbers_of(records + [affine]) | {'4', '0.9'}] == []
  block = files['README.md'].decode()
  assert '| Table C | CapsNet, on the affine set | 61.34 | 79.00% accuracy' in (
      block)
  changed = copy.deepcopy(affine)
  changed['rows'][1]['affine_accuracy'] = 0.4
  assert '| 40.00 |' in render(tmp_path, records + [changed], 'again')[0]


def test_an_affine_record_needs_its_runs_finished(tmp_path):
  plan = record.load_plan()
  with pytest.raises(record.errors.ConfigError) as excinfo:
    record.record_affine('affine_matched', plan['affine_matched'], plan,
                         str(tmp_path / 'workdirs'), str(tmp_path / 'out'))
  assert 'record.py run affine_capsnet' in str(excinfo.value)
  assert not (tmp_path / 'out').exists()


def test_an_affine_record_holds_the_rows_of_the_evaluation(tmp_path,
                                                           monkeypatch):
  plan = record.load_plan()
  for run in plan['affine_matched']['runs']:
    (tmp_path / 'w' / run).mkdir(parents=True)
    (tmp_path / 'w' / run / 'summary.json').write_text('{}')
  calls = []

  class Script:

    @staticmethod
    def evaluate(workdirs, out, match_clean):
      calls.append((workdirs, out, match_clean))
      return [{'model': f'm{i}', 'workdir': w, 'steps': 10 * i,
               'clean_accuracy': 0.9, 'affine_accuracy': 0.5 + i / 10,
               'clean_examples': 1000, 'affine_examples': 1000}
              for i, w in enumerate(workdirs)]

  monkeypatch.setattr(record, '_script', lambda name: Script)
  entry = record.record_affine('affine_matched', plan['affine_matched'],
                               plan, str(tmp_path / 'w'),
                               str(tmp_path / 'out'))
  assert calls == [([str(tmp_path / 'w' / 'affine_capsnet'),
                     str(tmp_path / 'w' / 'affine_baseline_cnn')],
                    str(tmp_path / 'w' / 'affine_matched'), True)]
  assert [(r['run'], r['steps'], r['affine_accuracy'])
          for r in entry['rows']] == [('affine_capsnet', 0, 0.5),
                                      ('affine_baseline_cnn', 10, 0.6)]
  assert entry['rows'][0]['row'] == plan['affine_capsnet']['row']
  with open(tmp_path / 'out' / 'affine_matched.json') as f:
    assert json.load(f) == entry
  assert report.load_records(str(tmp_path / 'out')) == [entry]


def test_a_table_key_names_every_run_of_its_tables_in_plan_order():
  plan, tables = record.load_plan(), record.load_tables()
  assert record.table_names('fashion_models', plan, tables) == [
      'fashion_dynamic1', 'fashion_dynamic3', 'fashion_dynamic1_norecon',
      'fashion_dynamic3_norecon', 'fashion_self_attention',
      'fashion_inverted_dot_product2', 'fashion_inverted_dot_product2_linear',
      'fashion_efficient_capsnet',
      'fashion_matrix_capsnet_em', 'fashion_baseline_cnn']
  # The matched test comes after the two runs it tests.
  assert record.table_names('affine', plan, tables) == [
      'affine_capsnet', 'affine_baseline_cnn', 'affine_matched']
  # Every experiment is in one table key.
  named = [n for key in tables for n in record.table_names(key, plan, tables)]
  assert sorted(named) == sorted(plan)
  with pytest.raises(record.errors.ConfigError, match='fashion_models'):
    record.table_names('fashion', plan, tables)


def test_an_unknown_experiment_names_the_choices():
  with pytest.raises(record.errors.ConfigError, match='fashion_dynamic1'):
    record.experiment('fashion_dynamic4')


# The small CapsNet, cheapest to compile: one routing iteration, no decoder.
TINY_ARGS = ['--config=configs/quickstart.py'] + [
    f'--config.{k}={v}'.replace(' ', '') for k, v in
    {**conftest.SMALL_MODEL, **conftest.SMALL_RUN,
     'model.routing_iters': 1, 'model.conv_impl': 'xla',
     'loss.reconstruction_weight': 0.0}.items()]


@pytest.mark.slow  # trains or compiles a whole model
def test_an_interrupted_run_resumes_and_is_recorded_once(tmp_path,
                                                         monkeypatch):
  entry = {'table': 'Tiny', 'row': 'tiny CapsNet', 'args': TINY_ARGS,
           'scale': 'tiny', 'reference': None}
  workdir, results = str(tmp_path / 'work'), str(tmp_path / 'results')
  save = checkpoints.Checkpointer.save

  def save_then_stop(self, step, state, meta):
    save(self, step, state, meta)
    if step == 2:
      raise KeyboardInterrupt

  monkeypatch.setattr(checkpoints.Checkpointer, 'save', save_then_stop)
  with pytest.raises(KeyboardInterrupt):
    record.record('tiny', entry, workdir, results)
  assert not os.path.exists(results)
  monkeypatch.setattr(checkpoints.Checkpointer, 'save', save)

  first = record.record('tiny', entry, workdir, results)
  path = os.path.join(results, 'tiny.json')
  with open(path) as f:
    assert json.load(f) == first
  assert [e['step'] for e in first['evaluations']] == [2, 4]
  assert [e['epoch'] for e in first['evaluations']] == [2 * 8 / 4000,
                                                        4 * 8 / 4000]
  final = first['evaluations'][-1]
  assert final['accuracy'] == first['summary']['test_accuracy']
  assert first['summary']['steps'] == 4
  assert first['summary']['num_params'] > 0
  assert first['summary']['train_examples'] == 4000
  assert first['config']['model']['conv1_channels'] == 8
  assert first['args'] == TINY_ARGS
  assert first['command'] == 'python experiments/record.py run tiny'
  # Both invocations ran here: one environment.
  [env] = first['invocations']
  assert env['cpu_model'] and env['cpu_cores'] >= 1
  assert env['backend'] == 'cpu' and env['jax']
  assert len(env['commit']) == 40 and isinstance(env['dirty'], bool)

  # Again: nothing is trained and the same record is written.
  before = open(path, 'rb').read()
  os.remove(path)
  monkeypatch.setattr(record.train, 'train_and_evaluate', None)
  again = record.record('tiny', entry, workdir, results)
  assert again == first
  assert open(path, 'rb').read() == before


def test_a_table_of_one_evaluation_per_run_gets_bars(tmp_path, records,
                                                      monkeypatch):
  figures = {}
  monkeypatch.setattr(report.workdir_lib, 'write_figure',
                      lambda path, fig: figures.update({path: fig}))
  single = [dict(r, evaluations=r['evaluations'][-1:]) for r in records]
  report.plot('Table A', single[1:], str(tmp_path / 'bars.png'))
  report.plot('Table A', records[1:], str(tmp_path / 'curves.png'))
  bars = figures[str(tmp_path / 'bars.png')].axes[0]
  # One bar per run, in the table's order, as long as its test accuracy.
  assert [p.get_width() for p in bars.patches] == pytest.approx(
      [100 * r['summary']['test_accuracy'] for r in single[1:]])
  assert [t.get_text() for t in bars.get_yticklabels()] == ['CNN', 'CapsNet']
  assert not figures[str(tmp_path / 'curves.png')].axes[0].patches
  page = report.page_markdown(single)
  assert '![Test accuracy after training: Table A]' in page
  assert '![Test accuracy per epoch: Table A]' in report.page_markdown(records)
