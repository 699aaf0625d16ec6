"""experiments/gpu_check.py: the GPU script's stages, limits and goals (on
the CPU; the stages' own scripts have their own tests)."""
import json
import sys

import pytest

import conftest

gpu_check = conftest.load_script('gpu_check')


def test_the_stages_run_the_goals_first_and_torch_compile_at_batch_128():
  plan = gpu_check.stages('/out', '/data/fashion')
  assert [s['name'] for s in plan] == ['device', 'fashion', 'bench128',
                                       'tests', 'bench512']
  # The goals' stages fit the budget whole; the rest get what is left.
  assert sum(s['limit_s'] for s in plan[:3]) <= gpu_check.DEFAULT_BUDGET_S
  by_name = {s['name']: s for s in plan}
  run = by_name['fashion']['cmd']
  assert run[1:4] == ['experiments/record.py', 'run',
                      'gpu_fashion_capsnet_10ep']
  assert '--config.dataset.directory=/data/fashion' in run
  assert '--config.num_train_steps=2' not in run  # The full 10 epochs.
  bench = by_name['bench128']['cmd']
  assert {'--batch=128', '--routing_iters=3',
          '--compute_dtype=float32,bfloat16',
          '--torch_forms=float32,bfloat16,compiled_bfloat16'} <= set(bench)
  assert '--batch=512' in by_name['bench512']['cmd']
  assert by_name['tests']['env'] == {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}
  assert by_name['tests']['cmd'][-4:] == ['-m', 'not slow', '-n', '8']
  smoke = {s['name']: s for s in gpu_check.stages('/out', '/d', smoke=True)}
  assert '--config.num_train_steps=2' in smoke['fashion']['cmd']
  assert '--batch=2' in smoke['bench128']['cmd']


def test_a_stage_out_of_time_is_killed_and_reported(tmp_path):
  stage = {'name': 'slow', 'cmd': [sys.executable, '-c',
                                   'print("started", flush=True)\n'
                                   'import time; time.sleep(60)']}
  result = gpu_check.run_stage(stage, str(tmp_path), limit_s=2)
  assert result['timed_out'] and result['returncode'] != 0
  assert result['wall_s'] < 30
  assert result['tail'] == ['started']
  assert (tmp_path / 'slow.log').read_text() == 'started\n'


def test_stages_past_the_budget_are_skipped_and_all_is_summarized(
    tmp_path, monkeypatch, capsys):
  row = {'batch': 128, 'mode': 'train', 'compute_dtype': 'bfloat16',
         'images_per_s': 1000.0,
         'speedup_vs_torch_float32': 2.5, 'speedup_vs_torch_best': 0.9}

  def stages(out, fashion_dir, smoke=False):
    del out, fashion_dir, smoke
    return [
        {'name': 'device', 'limit_s': 30, 'cmd': [
            sys.executable, '-c', 'print(\'{"backend": "gpu"}\')']},
        {'name': 'bench128', 'limit_s': 30, 'cmd': [
            sys.executable, '-c', f'print({json.dumps(json.dumps(row))})']},
        {'name': 'tests', 'limit_s': 30, 'cmd': [
            sys.executable, '-c', 'import time; time.sleep(3); exit(1)']},
        {'name': 'bench512', 'limit_s': 30, 'cmd': [sys.executable, '-V']},
    ]

  monkeypatch.setattr(gpu_check, 'stages', stages)
  monkeypatch.setattr(gpu_check, 'MIN_STAGE_S', 5)
  monkeypatch.setenv('CAPSJAX_COMMIT', 'c0ffee')
  status = gpu_check.main(['run', f'--out={tmp_path}', '--budget_s=7'])
  assert status == 1  # The tests stage failed.
  summary = json.loads((tmp_path / 'gpu_check.json').read_text())
  assert summary['device'] == {'backend': 'gpu'}
  assert summary['commit'] == 'c0ffee'
  stages_run = {s['name']: s for s in summary['stages']}
  assert stages_run['tests']['returncode'] == 1
  assert 'skipped' in stages_run['bench512']
  assert [json.loads(l) for l in open(tmp_path / 'bench128.jsonl')] == [row]
  assert summary['rows'] == [row] and summary['kind'] == 'gpu_check'
  assert summary['command'] == ('python experiments/gpu_check.py run '
                                f'--out={tmp_path} --budget_s=7')
  goals = {g['goal']: g for g in summary['goals']}
  assert goals['train, bfloat16, batch 128: x torch eager float32']['met']
  assert not goals['train, bfloat16, batch 128: x torch at its best']['met']
  assert goals['Fashion-MNIST epoch (60,000 training images), s'][
      'value'] is None
  assert 'goal 10 epochs: test accuracy >= 0.91: not measured' in (
      capsys.readouterr().out)


def test_the_epoch_goal_is_computed_from_the_record():
  record = {'summary': {'train_images_per_s': 30_000.0,
                        'test_accuracy': 0.912, 'wall_s': 119.0}}
  goals = {g['goal']: g for g in gpu_check.goals(record, [])}
  epoch = goals['Fashion-MNIST epoch (60,000 training images), s']
  assert (epoch['value'], epoch['met']) == (2.0, True)
  assert goals['10 epochs: test accuracy']['met']
  assert goals['10 epochs: wall time with compilation, s']['met']
  record['summary'].update(train_images_per_s=15_000.0, test_accuracy=0.9)
  goals = {g['goal']: g for g in gpu_check.goals(record, [])}
  assert not goals['Fashion-MNIST epoch (60,000 training images), s']['met']
  assert not goals['10 epochs: test accuracy']['met']


def test_an_unknown_stage_is_one_error(tmp_path, capsys):
  with pytest.raises(SystemExit) as excinfo:
    gpu_check.main(['run', f'--out={tmp_path}', '--only=fashion,nope'])
  assert excinfo.value.code == 2
  assert '--only has nope; choose from device' in capsys.readouterr().err


def _record():
  row = {'mode': 'train', 'batch': 128, 'compute_dtype': 'bfloat16',
         'images_per_s': 23456.7, 'step_ms': 5.4567,
         'torch_float32_images_per_s': 9876.5,
         'torch_compiled_bfloat16_images_per_s': 19876.5,
         'speedup_vs_torch_float32': 2.375, 'speedup_vs_torch_best': 1.18}
  return {'format': 1, 'kind': 'gpu_check', 'command': 'python '
          'experiments/gpu_check.py run --out=/x', 'commit': 'abcdef1234567',
          'date': '2027-01-02', 'wall_s': 432.0,
          'device': {'device_kind': 'NVIDIA H200', 'jax': '0.11.2',
                     'torch': '2.11.0', 'nvidia_smi': 'NVIDIA H200, 143771 MiB'},
          'stages': [{'name': 'fashion', 'returncode': 0, 'timed_out': False,
                      'wall_s': 98.2, 'limit_s': 240},
                     {'name': 'bench512', 'skipped': '12 s left'}],
          'rows': [row],
          'goals': gpu_check.goals({'summary': {
              'train_images_per_s': 25000.0, 'test_accuracy': 0.9123,
              'wall_s': 98.0}}, [row])}


def test_render_writes_the_records_between_the_markers(tmp_path):
  records = tmp_path / 'records'
  records.mkdir()
  (records / 'h200.json').write_text(json.dumps(_record()))
  page = tmp_path / 'page.md'
  page.write_text(f'# Page\n{gpu_check.GPU_BEGIN}\nold\n{gpu_check.GPU_END}'
                  f'\nrest\n')
  gpu_check.main(['render', f'--records={records}', f'--page={page}'])
  text = page.read_text()
  assert text.startswith(f'# Page\n{gpu_check.GPU_BEGIN}\n### NVIDIA H200, '
                         '2027-01-02')
  assert text.endswith(f'{gpu_check.GPU_END}\nrest\n') and 'old' not in text
  assert ('| train | 128 | bfloat16 | 23456.7 | 5.46 | 9876.5 | - | 19876.5 |'
          ' 2.38x | 1.18x |') in text
  assert ('| Fashion-MNIST epoch (60,000 training images), s | <= 3 | 2.4 | '
          'yes |') in text
  assert '| 10 epochs: test accuracy | >= 0.91 | 0.912 | yes |' in text
  assert '| bench512 | skipped (12 s left) | - | - |' in text
  assert '`abcdef1234`; 7.2 min of wall time' in text
  gpu_check.main(['render', f'--records={records}', f'--page={page}'])
  assert page.read_text() == text  # Twice: the same page.


def test_the_performance_page_shows_the_gpu_records_of_this_checkout():
  expected = gpu_check.block_markdown(gpu_check.load_records(
      gpu_check.RECORDS))
  assert conftest.block_between(gpu_check.PAGE, gpu_check.GPU_BEGIN,
                                gpu_check.GPU_END) == f'\n{expected}'
