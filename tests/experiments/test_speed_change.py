"""experiments/speed_change.py: the speed block of docs/performance.md is
rendered from its records, medians of paired rounds."""
import json

import pytest

from conftest import block_between
from conftest import load_script

speed_change = load_script('speed_change')


def row(dtype, mode, images_per_s, torch_f32, torch_bf16, peak, step_ms=None,
        profile=None):
  out = {'compute_dtype': dtype, 'mode': mode, 'images_per_s': images_per_s,
         'fraction_of_matmul_peak': peak, 'batch': 128,
         'model_gflop_per_step': 64.0, 'matmul_peak_gflop_per_s': 400.0,
         'step_ms': step_ms or 128_000 / images_per_s}
  if torch_f32:
    out.update(torch_float32_images_per_s=torch_f32,
               torch_bfloat16_images_per_s=torch_bf16,
               speedup_vs_torch_float32=images_per_s / torch_f32,
               torch_best_images_per_s=max(torch_f32, torch_bf16),
               speedup_vs_torch_best=images_per_s / max(torch_f32, torch_bf16))
  if profile:
    out['profile'] = {'by_part_ms': profile, 'top_ops_ms': {}}
  return out


def record():
  runs = []
  # Three rounds; the after/before ratios are 2.0, 1.5, 3.0 (median 2.0),
  # and the torch ratios of the after side 4.0, 2.0, 1.0 (median 2.0).
  for r, (before, after, torch) in enumerate([(100, 200, 50), (120, 180, 90),
                                              (50, 150, 150)]):
    runs.append({'round': r, 'side': 'before',
                 'row': row('bfloat16', 'eval', before, torch, torch / 2, 0.25)})
    runs.append({'round': r, 'side': 'after',
                 'row': row('bfloat16', 'eval', after, torch, torch / 2, 0.5)})
  profiles = [
      {'side': 'before', 'row': row('bfloat16', 'eval', 100, None, None, 0.2,
                                    profile={'digit_caps': 90.0, 'conv1': 0.5})},
      {'side': 'after', 'row': row('bfloat16', 'eval', 200, None, None, 0.4,
                                   profile={'digit_caps': 20.0})}]
  return {'name': 'layout', 'command': 'speed_change.py run --name=layout',
          'versions': {'jax': '0.10.2', 'torch': '2.13.0'},
          'commits': {'before': 'aaaaaaa', 'after': 'bbbbbbb'},
          'cpu': 'Some CPU, family 1 model 2, 2 CPUs, avx512_bf16',
          'date': '2026-12-07', 'wall_s': 1500, 'runs': runs,
          'profiles': profiles}


def test_the_table_gives_medians_of_the_paired_ratios():
  text = speed_change.record_markdown(record())
  assert '### layout: aaaaaaa -> bbbbbbb' in text
  assert 'Some CPU' in text and 'jax 0.10.2, torch 2.13.0' in text
  line, = [l for l in text.splitlines() if l.startswith('| bfloat16 | eval')]
  cells = [c.strip() for c in line.strip('|').split('|')]
  # before 100/120/50 -> median 100; after 200/180/150 -> 180.
  assert cells[2:5] == ['100.0', '180.0', '2.00x (1.50-3.00)']
  assert cells[5:9] == ['90.0', '45.0', '2.00x (1.00-4.00)',
                        '2.00x (1.00-4.00)']
  assert cells[9] == '25% -> 50%'
  assert cells[10] == '800'  # 128 images per 64 GFLOP at 400 GFLOP/s.
  # The goals of the step that the record has rows for: the bound is the
  # matmul-bound 800 images/s over torch at its best, median of 800/50,
  # 800/90, 800/150.
  assert ('| eval, bfloat16: >= 2.0x torch at its best | 2.00x | 8.89x | '
          'yes |') in text
  assert '| eval, bfloat16: >= 35% of the matmul peak | 50% | 100% | yes |' in text
  assert 'train, bfloat16' not in text and 'float32:' not in text
  # The profile rows: parts under 1 ms on both sides are left out.
  assert '| digit_caps | 90.0 | 20.0 |' in text and 'conv1' not in text


def test_render_rewrites_only_the_block(tmp_path):
  records = tmp_path / 'speed'
  records.mkdir()
  (records / 'layout.json').write_text(json.dumps(record()))
  page = tmp_path / 'performance.md'
  page.write_text(f'# P\n\n{speed_change.SPEED_BEGIN}\nold\n'
                  f'{speed_change.SPEED_END}\n\nafter\n')
  speed_change.render(str(records), str(page))
  text = page.read_text()
  assert 'old' not in text and text.endswith(f'{speed_change.SPEED_END}\n\nafter\n')
  assert '### layout' in text
  speed_change.render(str(records), str(page))
  assert page.read_text() == text


def test_a_page_without_the_markers_is_a_one_line_error(tmp_path):
  page = tmp_path / 'performance.md'
  page.write_text('# P\n')
  with pytest.raises(SystemExit, match='no .* lines; put them where'):
    speed_change.render(str(tmp_path), str(page))


def test_the_performance_page_shows_the_recorded_speed_of_this_checkout():
  block = block_between(speed_change.PAGE, speed_change.SPEED_BEGIN,
                        speed_change.SPEED_END)
  assert block == '\n' + speed_change.block_markdown(
      speed_change.load_records(speed_change.RECORDS)), (
          'docs/performance.md is not the speed records\' rendering: run '
          'python experiments/speed_change.py render')
