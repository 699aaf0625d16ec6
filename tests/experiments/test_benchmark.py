"""Tests for experiments/benchmark.py (capsjax.cpu_runtime: test_cpu_runtime.py)."""
import json
import math
import os
import runpy
import subprocess
import sys

import pytest

from conftest import ROOT

from capsjax import cpu_runtime
from capsjax import models

benchmark = runpy.run_path(os.path.join(ROOT, 'experiments', 'benchmark.py'),
                           run_name='benchmark')


def test_model_flops_of_the_paper_network():
  model = models.CapsNet()
  # Multiply-adds per image, counted by hand from the paper's layer sizes.
  conv1 = 20 * 20 * 9 * 9 * 1 * 256
  primary = 6 * 6 * 9 * 9 * 256 * 256
  u_hat = 1152 * 10 * 16 * 8
  routing = 1152 * 10 * 16 * (2 * 3 - 1)
  decoder = 160 * 512 + 512 * 1024 + 1024 * 784
  forward = conv1 + primary + u_hat + routing + decoder
  assert benchmark['model_flops'](model, 4, train=False) == 2 * 4 * forward
  train = 2 * conv1 + 3 * (forward - conv1)
  assert benchmark['model_flops'](model, 4, train=True) == 2 * 4 * train
  assert 1.1e9 < benchmark['model_flops'](model, 1, train=True) < 1.3e9


@pytest.mark.slow  # trains or compiles a whole model
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_measure_runs_the_real_steps(mode):
  config = runpy.run_path(os.path.join(ROOT, 'configs', 'mnist.py'))[
      'get_config']()
  config.model.conv1_channels = 16
  config.model.primary_types = 4
  config.model.decoder_hidden = (16, 16)
  row = benchmark['measure'](mode, 4, 2, steps=1, warmup=1, config=config)
  assert {'mode', 'batch', 'routing_iters', 'images_per_s'} <= set(row)
  assert (row['mode'], row['batch'], row['routing_iters']) == (mode, 4, 2)
  assert (row['model'], row['routing'], row['size']) == (
      'capsnet', 'dynamic', 'mnist')
  assert row['images_per_s'] == pytest.approx(4e3 / row['step_ms'])
  assert row['compile_s'] > 0 and row['peak_rss_mib'] > 0
  assert row['matmul_peak_gflop_per_s'] > 0
  assert row['fraction_of_matmul_peak'] == pytest.approx(
      row['model_gflop_per_s'] / row['matmul_peak_gflop_per_s'])


def test_combine_repeats_takes_the_median_run_and_pair_ratio():
  ours = [{'images_per_s': v, 'step_ms': 1e3 / v} for v in (100., 300., 200.)]
  torch32 = [{'images_per_s': v} for v in (40., 150., 200.)]
  row = benchmark['combine_repeats'](ours, {'float32': torch32})
  assert row['images_per_s'] == 200.0 and row['step_ms'] == 5.0
  assert row['repeats'] == 3 and row['torch_float32_images_per_s'] == 150.0
  # Pair ratios 2.5, 2, 1: their median, not median(ours) / median(torch).
  assert row['speedup_vs_torch_float32'] == 2.0
  assert (row['speedup_vs_torch_float32_min'],
          row['speedup_vs_torch_float32_max']) == (1.0, 2.5)
  # With float32 only, torch at its best is torch float32.
  assert row['speedup_vs_torch_best'] == 2.0
  alone = benchmark['combine_repeats'](ours[:1], {})
  assert alone['images_per_s'] == 100.0
  assert not any(k.startswith('speedup') for k in alone)
  assert ours[0] == {'images_per_s': 100.0, 'step_ms': 10.0}  # Not mutated.


def test_torch_at_its_best_is_the_faster_dtype_of_each_repeat():
  ours = [{'images_per_s': v} for v in (100., 120., 90.)]
  torch = {'float32': [{'images_per_s': v} for v in (50., 40., 60.)],
           'bfloat16': [{'images_per_s': v} for v in (25., 80., 45.)]}
  row = benchmark['combine_repeats'](ours, torch)
  # Best per repeat: 50 (f32), 80 (bf16), 60 (f32); ratios 2, 1.5, 1.5.
  assert row['torch_best_images_per_s'] == 60.0
  assert row['speedup_vs_torch_best'] == 1.5
  assert (row['speedup_vs_torch_best_min'],
          row['speedup_vs_torch_best_max']) == (1.5, 2.0)
  # Against float32 alone: 2, 3, 1.5.
  assert row['speedup_vs_torch_float32'] == 2.0
  assert row['speedup_vs_torch_bfloat16'] == 2.0  # 4, 1.5, 2.
  assert row['torch_bfloat16_images_per_s'] == 45.0


def test_torch_matmul_peak_is_reported_beside_ours(capsys):
  # The "XLA's float32 matmul is as fast as torch's" condition of the speed
  # target, reproducible from a checkout: both peaks in the same table.
  ours = [{'images_per_s': v, 'matmul_peak_gflop_per_s': 450., 'mode': 'train',
           'device': 'cpu:cpu', 'num_devices': 1, 'compute_dtype': 'float32',
           'matmul_dtype': 'float32'} for v in (100., 120., 90.)]
  torch = {'float32': [{'images_per_s': 50., 'matmul_peak_gflop_per_s': v}
                       for v in (200., 180., 220.)],
           'bfloat16': [{'images_per_s': 60.} for _ in range(3)]}
  row = benchmark['combine_repeats'](ours, torch)
  assert row['torch_float32_matmul_peak_gflop_per_s'] == 200.0
  assert 'torch_bfloat16_matmul_peak_gflop_per_s' not in row  # Not measured.
  benchmark['_print_table']([row], 'header')
  footer = capsys.readouterr().out.splitlines()[-1]
  assert footer == 'PyTorch dense matmul peak (GFLOP/s): float32 200'


def test_torch_runs_by_default_when_importable():
  python = benchmark['torch_python']
  found = lambda name: object() if name == 'torch' else None
  missing = lambda name: None
  assert python(None, find_spec=found) == benchmark['sys'].executable
  assert python(None, find_spec=missing) is None
  assert python('/opt/t/bin/python', find_spec=missing) == '/opt/t/bin/python'
  assert python('/opt/t/bin/python', enabled=False, find_spec=found) is None


def test_torch_command_describes_the_same_network():
  cmd = benchmark['torch_command']('py', 'ref.py', 'cifar100', 'eval', 64, 3,
                                   'bfloat16', 4, 1)
  assert cmd == ['py', 'ref.py', '--mode=eval', '--batch=64',
                 '--routing_iters=3', '--steps=4', '--warmup=1',
                 '--dtype=bfloat16', '--image_size=32', '--channels=3',
                 '--num_classes=100']
  assert '--image_size=28' in benchmark['torch_command'](
      'py', 'ref.py', 'mnist', 'train', 8, 1, 'float32', 1, 1)


def test_torch_command_of_a_compiled_form():
  cmd = benchmark['torch_command']('py', 'ref.py', 'mnist', 'train', 8, 3,
                                   'compiled_bfloat16', 4, 2)
  assert '--dtype=bfloat16' in cmd and cmd[-1] == '--compile'
  assert '--compile' not in benchmark['torch_command'](
      'py', 'ref.py', 'mnist', 'train', 8, 3, 'float32', 4, 2)


def test_torch_runs_are_shared_by_rows_torch_does_not_vary():
  runs = benchmark['combinations'](['capsnet'], ['dynamic'], ['mnist'],
                                   ['train'], [8, 16], [3], ['full'],
                                   ['float32', 'bfloat16'])
  assert [(r['batch_size'], r['compute_dtype']) for r in runs] == [
      (8, 'float32'), (8, 'bfloat16'), (16, 'float32'), (16, 'bfloat16')]
  torch_calls = []

  def ours(**run):
    return {'images_per_s': 100.0 if run['compute_dtype'] == 'float32'
            else 300.0}

  def torch(size, mode, batch_size, routing_iters, form):
    torch_calls.append((batch_size, form))
    return {'images_per_s': {'float32': 50.0, 'compiled_bfloat16': 150.0}[
        form] * (1 + len(torch_calls) / 100)}

  rows = list(benchmark['measure_rows'](runs, 2, ['float32',
                                                  'compiled_bfloat16'],
                                        ours, torch))
  # Each (batch, form, repeat) once, not once per compute dtype.
  assert sorted(torch_calls) == sorted(
      [(b, f) for b in (8, 16) for f in ('float32', 'compiled_bfloat16')] * 2)
  f32, bf16 = rows[:2]
  assert f32['torch_float32_images_per_s'] == bf16[
      'torch_float32_images_per_s']
  assert bf16['speedup_vs_torch_best'] == pytest.approx(
      300 / bf16['torch_compiled_bfloat16_images_per_s'], rel=0.02)
  assert 'torch_best_images_per_s' not in list(benchmark['measure_rows'](
      runs[:1], 1, ['float32'], ours, None))[0]


def test_compiled_memory_counts_scratch_arguments_and_new_outputs():
  class Analysis:
    temp_size_in_bytes = 3 * 2**20
    argument_size_in_bytes = 2 * 2**20
    output_size_in_bytes = 2 * 2**20
    alias_size_in_bytes = 1 * 2**20  # One output reuses a donated argument.

  class Compiled:
    def memory_analysis(self):
      return Analysis()

  assert benchmark['compiled_memory'](Compiled()) == {
      'compiled_temp_mib': 3.0, 'compiled_argument_mib': 2.0,
      'compiled_peak_mib': 6.0}


def test_cpu_facts_name_the_bf16_flags(monkeypatch):
  monkeypatch.setattr(cpu_runtime, 'cpu_flags',
                      lambda *a: frozenset({'avx2', 'amx_bf16'}))
  facts = benchmark['cpu_facts']()
  assert facts['cpu_bf16_flags'] == ['amx_bf16']
  assert facts['cpu_model']  # /proc/cpuinfo's model name, or 'unknown'.


@pytest.mark.slow  # trains or compiles a whole model
def test_measure_memory_only_compiles_without_timing():
  config = runpy.run_path(os.path.join(ROOT, 'configs', 'mnist.py'))[
      'get_config']()
  config.model.conv1_channels = 8
  config.model.primary_types = 2
  config.model.decoder_hidden = (8, 8)
  row = benchmark['measure']('train', 4, 2, size='cifar100',
                             routing_memory='chunked', routing_chunk=16,
                             memory_only=True, config=config)
  assert (row['size'], row['routing_memory'], row['routing_chunk']) == (
      'cifar100', 'chunked', 16)
  assert row['compiled_peak_mib'] >= row['compiled_temp_mib'] > 0
  assert 'images_per_s' not in row


def test_op_parts_name_the_module_and_the_backward_pass():
  hlo = '\n'.join([
      '  %ynn_fusion = f32[8]{0} fusion(%a), metadata={op_name="jit(train_step)'
      '/jvp(CapsNet)/primary_caps/while/body/dot_general" stack_frame_id=3}',
      '  ROOT %dot.2 = f32[8]{0} dot(%a, %b), metadata={op_name="jit(train_step)'
      '/transpose(jvp(CapsNet))/digit_caps/dot_general"}',
      '  %add.1 = f32[8]{0} add(%a, %b), metadata={op_name="jit(train_step)/add"}',
      '  %max.3 = f32[8]{0} maximum(%a, %b), metadata={op_name="jit(eval_step)'
      '/CapsNet/jit(relu)/max"}',
      '  %sel.5 = f32[8]{0} select(%p, %a, %b), metadata={op_name="jit(train_'
      'step)/transpose(jvp(CapsNet))/select_n"}',
      '  %copy.4 = f32[8]{0} copy(%a)',
      '  %gather_fusion = bf16[8]{0} fusion(%a), kind=kLoop, calls=%fused.9',
      '}',
      '',
      '%fused.9 (param_0: bf16[8]) -> bf16[8] {',
      '  %param_0 = bf16[8]{0} parameter(0)',
      '  ROOT %gather.1 = bf16[8]{0} gather(%param_0), metadata={op_name="jit('
      'train_step)/jvp(CapsNet)/primary_caps/while/body/jit(_take)/gather"}',
      '}',
  ])
  assert benchmark['op_parts'](hlo) == {
      'ynn_fusion': 'primary_caps', 'dot.2': 'digit_caps (grad)',
      'add.1': 'rest', 'max.3': 'CapsNet', 'sel.5': 'CapsNet (grad)',
      'gather_fusion': 'primary_caps', 'gather.1': 'primary_caps'}


@pytest.mark.slow  # trains or compiles a whole model
def test_profile_splits_the_real_step_by_model_part(capsys):
  mode = 'train'  # Forward and backward parts.
  config = runpy.run_path(os.path.join(ROOT, 'configs', 'mnist.py'))[
      'get_config']()
  config.model.conv1_channels = 16
  config.model.primary_types = 4
  config.model.decoder_hidden = (16, 16)
  row = benchmark['measure'](mode, 4, 2, steps=1, warmup=1, config=config,
                             profile=True)
  parts = row['profile']['by_part_ms']
  expected = {'conv1', 'primary_caps', 'digit_caps', 'primary_caps (grad)',
              'digit_caps (grad)', 'rest'}
  assert expected <= set(parts), parts
  assert all(ms >= 0 for ms in parts.values())
  assert 0 < sum(parts.values()) < 10 * row['step_ms']
  assert len(row['profile']['top_ops_ms']) <= 12
  benchmark['_print_table']([row], 'header')
  assert 'XLA op time per step' in capsys.readouterr().out


def test_self_attention_flops_do_not_grow_with_iterations():
  dynamic = models.CapsNet(routing_iters=3)
  attention = models.CapsNet(routing='self_attention', routing_iters=3)
  once = models.CapsNet(routing='self_attention', routing_iters=1)
  flops = lambda m: benchmark['model_flops'](m, 1, train=False)
  # One weighted sum and one agreement (2 MACs per u_hat entry), not 2r - 1.
  assert flops(dynamic) - flops(attention) == 2 * 1152 * 10 * 16 * (5 - 2)
  assert flops(attention) == flops(once)


@pytest.mark.parametrize('name', list(models.MODELS))
def test_each_model_is_timed_with_the_config_its_entry_names(name):
  assert benchmark['load_config'](name).model.name == name


def _tiny_efficient_capsnet():
  config = benchmark['load_config']('efficient_capsnet')
  config.model.conv_channels = (4, 4, 4, 8)
  config.model.primary_dim = 4
  config.model.digit_dim = 4
  config.model.decoder_hidden = (8, 8)
  return config


@pytest.mark.slow  # trains or compiles a whole model
def test_measure_other_models_count_flops_with_xla():
  config = _tiny_efficient_capsnet()
  row = benchmark['measure']('eval', 2, 1, steps=1, warmup=0, config=config)
  assert (row['model'], row['routing']) == ('efficient_capsnet',
                                            'self_attention')
  # The CapsNet-only fields do not apply; the matmuls run in float32.
  assert (row['compute_dtype'], row['routing_memory'], row['matmul_dtype']) == (
      '-', '-', 'float32')
  assert 0 < row['model_gflop_per_step'] < math.inf
  assert row['model_gflop_per_s'] == pytest.approx(
      row['model_gflop_per_step'] * 1e3 / row['step_ms'])


@pytest.mark.slow  # trains or compiles a whole model
def test_measure_routing_replaces_the_configs():
  config = _tiny_efficient_capsnet()
  row = benchmark['measure']('train', 2, 2, routing='dynamic',
                             memory_only=True, config=config)
  assert (row['model'], row['routing'], row['routing_iters']) == (
      'efficient_capsnet', 'dynamic', 2)


def test_combinations_cover_models_routings_and_sizes():
  runs = benchmark['combinations'](
      ['capsnet', 'efficient_capsnet'], [], ['mnist', 'cifar10'], ['train'],
      [8], [1], ['full', 'chunked'],
      default_routing={'capsnet': 'dynamic',
                       'efficient_capsnet': 'self_attention'}.get)
  keys = [(r['model_name'], r['algorithm'], r['size'], r['routing_memory'])
          for r in runs]
  # Each model's own routing; the routing memory only varies for CapsNet.
  assert keys == [('capsnet', 'dynamic', 'mnist', 'full'),
                  ('capsnet', 'dynamic', 'mnist', 'chunked'),
                  ('capsnet', 'dynamic', 'cifar10', 'full'),
                  ('capsnet', 'dynamic', 'cifar10', 'chunked'),
                  ('efficient_capsnet', 'self_attention', 'mnist', 'full'),
                  ('efficient_capsnet', 'self_attention', 'cifar10', 'full')]
  runs = benchmark['combinations'](
      ['capsnet'], ['dynamic', 'self_attention'], ['mnist'], ['eval'], [8],
      [1, 3], ['chunked'])
  # Chunked routing memory exists for dynamic routing only.
  assert [(r['algorithm'], r['routing_iters']) for r in runs] == [
      ('dynamic', 1), ('dynamic', 3)]
  # compute dtypes vary innermost, for every model.
  assert [r['compute_dtype'] for r in benchmark['combinations'](
      ['efficient_capsnet'], ['dynamic'], ['mnist'], ['eval'], [8], [1],
      ['full'], ['float32', 'auto'])] == ['float32', 'auto']
  assert benchmark['combinations'](['efficient_capsnet'], [], ['mnist'],
                                   ['eval'], [8], [1], ['full'])[0][
                                       'algorithm'] == 'self_attention'


def test_torch_reference_only_beside_the_papers_capsnet():
  note = benchmark['torch_skip_note']
  assert note('capsnet', 'dynamic') is None
  assert note('capsnet', None) is None
  assert 'efficient_capsnet' in note('efficient_capsnet', 'dynamic')
  assert 'self_attention' in note('capsnet', 'self_attention')


def _cli(*args):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'benchmark.py'),
       *args], capture_output=True, text=True, cwd=ROOT,
      env={**os.environ, 'PYTHONPATH': ROOT}, check=False)


@pytest.mark.slow  # real processes
def test_cli_routing_is_the_algorithm_and_model_the_registry_name():
  proc = _cli('--routing=3', '--notorch')
  assert proc.returncode == 1
  assert 'error: --routing has 3; choose from dynamic' in proc.stderr
  assert '--routing_iters' in proc.stderr
  proc = _cli('--model=mnist', '--notorch')
  assert proc.returncode == 1
  assert 'error: --model has mnist; choose from capsnet' in proc.stderr


@pytest.mark.slow  # real processes
def test_cli_runs_each_model_and_routing_in_a_child():
  proc = _cli('--model=efficient_capsnet', '--routing=dynamic',
              '--size=cifar10', '--mode=eval', '--batch=2',
              '--routing_iters=1', '--memory_only', '--json')
  assert proc.returncode == 0, proc.stderr
  rows = [json.loads(l) for l in proc.stdout.splitlines()][1:]
  assert [(r['model'], r['routing'], r['size'], r['batch']) for r in rows] == [
      ('efficient_capsnet', 'dynamic', 'cifar10', 2)]
  # A model whose routing is its own (EM), named by its config.
  proc = _cli('--model=matrix_capsnet_em', '--mode=eval', '--batch=2',
              '--routing_iters=1', '--memory_only', '--json')
  assert proc.returncode == 0, proc.stderr
  rows = [json.loads(l) for l in proc.stdout.splitlines()][1:]
  assert [(r['model'], r['routing']) for r in rows] == [
      ('matrix_capsnet_em', 'em')]
