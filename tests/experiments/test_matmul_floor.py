"""experiments/matmul_floor.py: PrimaryCaps' convolution timed beside its own
matmuls, and the block of docs/performance.md rendered from the records."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

import conftest

matmul_floor = conftest.load_script('matmul_floor')


def test_the_variants_compute_the_convolution_they_are_timed_against():
  fns = matmul_floor.variants(batch=4, chunk=2, dtype=jnp.float32)
  conv, conv_args = fns['conv']
  chunks, chunk_args = fns['chunks']
  np.testing.assert_allclose(chunks(*chunk_args), conv(*conv_args),
                             rtol=1e-5, atol=1e-5)
  # The matmuls alone: the nine kernel rows' [B*36, 2304] @ [2304, 256].
  matmuls, (patches, w_rows) = fns['matmuls']
  assert len(patches) == len(w_rows) == 9
  assert patches[0].shape == (4 * 36, 9 * 256) and w_rows[0].shape == (2304, 256)
  np.testing.assert_allclose(
      matmuls(patches, w_rows),
      np.einsum('rmk,rko->mo', np.stack(patches), np.stack(w_rows)),
      rtol=1e-4, atol=1e-3)


def test_a_chunk_that_does_not_divide_the_batch_is_one_error():
  with pytest.raises(SystemExit, match='--batch=6 is not a multiple of '
                     '--chunk=4'):
    matmul_floor.variants(batch=6, chunk=4, dtype=jnp.float32)


def synthetic_record():
  return {'format': 1, 'kind': 'matmul_floor', 'name': 'some_cpu',
          'command': 'python experiments/matmul_floor.py run',
          'date': '2026-12-07', 'cpu': 'Some CPU, family 1 model 2',
          'environment': {'jax': '0.10.2', 'commit': 'abcdef0123456'},
          'wall_s': 120.0, 'batch': 128, 'chunk': 16, 'conv_gflop': 50.0,
          'peak_gflop': 20.0,
          'times_ms': {'bfloat16': {'conv': [200, 100, 400],
                                    'matmuls': [80, 130, 90],
                                    'chunks': [1, 2, 6],
                                    'peak': [50, 40, 90]}}}


def test_the_table_gives_medians_of_the_rounds():
  text = matmul_floor.record_markdown(synthetic_record())
  assert '### some_cpu' in text and 'Some CPU' in text
  assert 'commit `abcdef0123`' in text and '3 alternating rounds' in text
  # Medians: conv 200, matmuls 90, chunks 2, peak 50 ms; 50 GFLOP in 90 ms
  # is 556 GFLOP/s, 20 GFLOP in 50 ms 400 GFLOP/s.
  assert '| bfloat16 | 200.0 | 90.0 | 110.0 | 556 | 400 | 139% | 2.0 |' in text


def test_render_rewrites_only_the_block_and_twice_gives_the_same_page(
    tmp_path):
  records = tmp_path / 'floor'
  records.mkdir()
  (records / 'some_cpu.json').write_text(json.dumps(synthetic_record()))
  page = tmp_path / 'performance.md'
  page.write_text(f'before\n{matmul_floor.FLOOR_BEGIN}\nold\n'
                  f'{matmul_floor.FLOOR_END}\nafter\n')
  matmul_floor.render(str(records), str(page))
  text = page.read_text()
  assert text.startswith('before\n') and text.endswith('after\n')
  assert 'old' not in text and '| bfloat16 | 200.0 |' in text
  matmul_floor.render(str(records), str(page))
  assert page.read_text() == text


def test_the_performance_page_shows_the_floor_records_of_this_checkout():
  expected = matmul_floor.block_markdown(
      matmul_floor.speed_change.load_records(matmul_floor.RECORDS))
  assert conftest.block_between(
      matmul_floor.speed_change.PAGE, matmul_floor.FLOOR_BEGIN,
      matmul_floor.FLOOR_END) == f'\n{expected}'
