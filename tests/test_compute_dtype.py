"""compute_dtype='auto': bfloat16 exactly where matmuls run it natively."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from capsjax import conv
from capsjax import cpu_runtime
from capsjax import errors
from capsjax import layers
from capsjax import models
from conftest import load_config

# /proc/cpuinfo 'flags' of the three kinds of x86 CPU (abridged).
AMX = {'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile', 'amx_int8'}
AMX_ONLY = {'avx2', 'avx512f', 'amx_bf16', 'amx_tile'}
AVX512_BF16 = {'avx2', 'avx512f', 'avx512_bf16', 'avx512_vnni'}
NEITHER = {'avx2', 'fma', 'avx512f', 'avx512_vnni'}


@pytest.fixture
def machine(monkeypatch):
  """Sets the backend and the CPU flags that resolve_compute_dtype sees."""
  def set_machine(backend, flags=()):
    monkeypatch.setattr(jax, 'default_backend', lambda: backend)
    monkeypatch.setattr(cpu_runtime, 'cpu_flags',
                        lambda *args: frozenset(flags))
  return set_machine


@pytest.mark.parametrize('backend, flags, want', [
    ('cpu', AMX, jnp.bfloat16),
    ('cpu', AMX_ONLY, jnp.bfloat16),
    ('cpu', AVX512_BF16, jnp.bfloat16),
    ('cpu', NEITHER, None),
    ('cpu', (), None),  # No /proc/cpuinfo (macOS, Windows).
    ('gpu', (), jnp.bfloat16),
    ('tpu', (), jnp.bfloat16),
])
def test_auto_picks_bfloat16_where_matmuls_are_native(machine, backend, flags,
                                                      want):
  machine(backend, flags)
  assert conv.resolve_compute_dtype('auto') == want


@pytest.mark.parametrize('flags', [AMX, NEITHER])
def test_explicit_dtypes_ignore_the_machine(machine, flags):
  machine('cpu', flags)
  assert conv.resolve_compute_dtype('float32') is None
  assert conv.resolve_compute_dtype('bfloat16') == jnp.bfloat16
  with pytest.raises(ValueError, match='compute_dtype must be one of'):
    conv.resolve_compute_dtype('float16')


@pytest.mark.parametrize('flags, like', [(AVX512_BF16, 'bfloat16'),
                                         (NEITHER, 'float32')])
def test_primary_caps_auto_computes_in_the_picked_dtype(machine, flags, like):
  machine('cpu', flags)
  x = jax.random.uniform(jax.random.key(0), (2, 12, 12, 5))
  outputs = {}
  for dtype in ('auto', 'float32', 'bfloat16'):
    module = layers.PrimaryCaps(num_types=3, dim=4, kernel_size=3,
                                conv_impl='slices', compute_dtype=dtype)
    variables = module.init(jax.random.key(1), x)
    outputs[dtype] = np.asarray(module.apply(variables, x))
  # bfloat16 inputs change the values visibly; 'auto' matches one exactly.
  assert not np.array_equal(outputs['float32'], outputs['bfloat16'])
  np.testing.assert_array_equal(outputs['auto'], outputs[like])


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile
bogomips\t: 5399.99

processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile
"""


def test_cpu_flags_reads_the_flags_line(tmp_path):
  path = tmp_path / 'cpuinfo'
  path.write_text(CPUINFO)
  assert cpu_runtime.cpu_flags(str(path)) == {
      'fpu', 'sse2', 'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile'}
  arm = tmp_path / 'arm'
  arm.write_text('processor\t: 0\nFeatures\t: fp asimd bf16\n')
  assert cpu_runtime.cpu_flags(str(arm)) == frozenset()
  assert cpu_runtime.cpu_flags(str(tmp_path / 'absent')) == frozenset()


def test_native_bf16_matmul_uses_cpu_flags(machine):
  machine('cpu', AMX_ONLY)
  assert cpu_runtime.native_bf16_matmul()
  machine('cpu', NEITHER)
  assert not cpu_runtime.native_bf16_matmul()


def test_config_accepts_auto_and_rejects_others():
  config = load_config('mnist', **{'model.compute_dtype': 'auto'})
  assert models.create_model(config.model, (28, 28, 1), 10).compute_dtype == (
      'auto')
  config.model.compute_dtype = 'float16'
  with pytest.raises(errors.ConfigError, match='compute_dtype'):
    models.create_model(config.model, (28, 28, 1), 10)
