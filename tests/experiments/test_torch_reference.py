"""experiments/torch_reference.py builds and runs (only where torch is)."""
import json
import os
import runpy

from conftest import ROOT

import pytest

torch = pytest.importorskip(
    'torch', reason='the PyTorch reference needs torch: pip install '
    "-e '.[torch]' (the benchmark then compares against it)")

reference = runpy.run_path(
    os.path.join(ROOT, 'experiments', 'torch_reference.py'),
    run_name='torch_reference')


def test_network_has_the_papers_shapes():
  model = reference['CapsNet'](28, 1, 10, routing_iters=3)
  assert tuple(model.W.shape) == (1152, 10, 16, 8)
  cifar = reference['CapsNet'](32, 3, 100, routing_iters=1)
  assert tuple(cifar.W.shape) == (2048, 100, 16, 8)
  lengths, reconstructions = cifar(torch.rand(2, 3, 32, 32))
  assert tuple(lengths.shape) == (2, 100)
  assert tuple(reconstructions.shape) == (2, 32 * 32 * 3)
  assert bool(((lengths > 0) & (lengths < 1)).all())


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_one_train_step_changes_the_weights(dtype):
  torch.manual_seed(0)
  model = reference['CapsNet'](28, 1, 10, routing_iters=2)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  images, labels = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
  before = model.W.detach().clone()
  step = reference['make_step'](model, optimizer, images, labels, 'train',
                                dtype)
  loss = step()
  assert loss.dtype == torch.float32 and bool(torch.isfinite(loss))
  assert not torch.equal(before, model.W.detach())


def test_main_prints_one_json_row(capsys):
  reference['main'](['--mode=eval', '--batch=2', '--routing_iters=1',
                     '--steps=1', '--warmup=0'])
  row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert (row['framework'], row['mode'], row['batch'], row['dtype']) == (
      'torch', 'eval', 2, 'float32')
  assert row['images_per_s'] == pytest.approx(2e3 / row['step_ms'])


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_matmul_peak_is_a_rate(dtype):
  flops = reference['matmul_flops_per_s'](dtype, n=64, steps=3)
  assert 1e6 < flops < 1e15


def test_forms_and_devices():
  assert [reference['form_name'](d, c) for d in ('float32', 'bfloat16')
          for c in (False, True)] == ['float32', 'compiled_float32',
                                      'bfloat16', 'compiled_bfloat16']
  assert reference['resolve_device']('cpu').type == 'cpu'
  assert reference['resolve_device']('auto').type == (
      'cuda' if torch.cuda.is_available() else 'cpu')


@pytest.mark.skipif(torch.cuda.is_available(), reason='this torch has a GPU')
def test_asking_for_cuda_without_a_gpu_is_one_error(capsys):
  with pytest.raises(SystemExit) as excinfo:
    reference['main'](['--device=cuda'])
  assert excinfo.value.code == 2
  assert 'sees no CUDA GPU' in capsys.readouterr().err


@pytest.mark.slow  # torch.compile takes about a minute on 2 CPU cores.
def test_the_compiled_form_trains():
  row = reference['measure']('train', batch=2, routing_iters=1, steps=1,
                             warmup=1, image_size=25, compile_model=True)
  assert (row['form'], row['compile'], row['device']) == (
      'compiled_float32', True, 'cpu')
  assert row['images_per_s'] > 0
