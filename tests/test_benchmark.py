"""Tests for experiments/benchmark.py."""
import os
import runpy

import pytest

from capsjax import models
from conftest import load_config
from conftest import ROOT

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


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_measure_runs_the_real_steps(mode):
  config = load_config('mnist', **{'model.conv1_channels': 16,
                                   'model.primary_types': 4,
                                   'model.decoder_hidden': (16, 16)})
  row = benchmark['measure'](mode, 4, 2, steps=1, warmup=1, config=config)
  assert {'mode', 'batch', 'routing', 'images_per_s'} <= set(row)
  assert (row['mode'], row['batch'], row['routing']) == (mode, 4, 2)
  assert row['images_per_s'] == pytest.approx(4e3 / row['step_ms'])
  assert row['compile_s'] > 0 and row['peak_rss_mib'] > 0
  assert row['matmul_peak_gflop_per_s'] > 0
  assert row['fraction_of_matmul_peak'] == pytest.approx(
      row['model_gflop_per_s'] / row['matmul_peak_gflop_per_s'])


def test_combine_repeats_takes_the_median_run_and_pair_ratio():
  ours = [{'images_per_s': v, 'step_ms': 1e3 / v} for v in (100., 300., 200.)]
  torch = [{'images_per_s': v} for v in (40., 150., 200.)]
  row = benchmark['combine_repeats'](ours, torch)
  assert row['images_per_s'] == 200.0 and row['step_ms'] == 5.0
  assert row['repeats'] == 3 and row['torch_images_per_s'] == 150.0
  # Pair ratios 2.5, 2, 1: their median, not median(ours) / median(torch).
  assert row['speedup_vs_torch'] == 2.0
  assert (row['speedup_min'], row['speedup_max']) == (1.0, 2.5)
  alone = benchmark['combine_repeats'](ours[:1], [])
  assert alone['images_per_s'] == 100.0 and 'speedup_vs_torch' not in alone
  assert ours[0] == {'images_per_s': 100.0, 'step_ms': 10.0}  # Not mutated.
