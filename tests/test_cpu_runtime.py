"""Tests for capsjax.cpu_runtime: the guarded XLA flag and malloc settings.

Every test leaves the process as it found it: the environment through
monkeypatch, and glibc's mallopt is never called for real in-process.
"""
import os
import subprocess
import sys
import types

import pytest

from capsjax import cpu_runtime

FLAG = 'xla_cpu_enable_concurrency_optimized_scheduler'
SETTING = f'--{FLAG}=false'


@pytest.fixture
def env(monkeypatch):
  """Tuning on, no XLA_FLAGS, malloc untouched so far, and an accelerator
  backend ahead (so `configure` leaves malloc alone unless a test says the CPU
  is next); restored by monkeypatch afterwards."""
  monkeypatch.delenv('CAPSJAX_CPU_TUNING', raising=False)
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  monkeypatch.setattr(cpu_runtime, '_malloc_tuned', False)
  monkeypatch.setattr(cpu_runtime, 'will_run_on_cpu', lambda: False)
  return monkeypatch


@pytest.fixture
def xla_knows(env):
  """Sets what `xla_knows_flag` answers; records the names it was asked."""
  asked = []

  def answer(knows):
    def fake(name):
      asked.append(name)
      return knows
    env.setattr(cpu_runtime, 'xla_knows_flag', fake)
    return asked

  return answer


def test_the_flag_is_added_once_after_the_users_flags(env, xla_knows):
  asked = xla_knows(True)
  env.setenv('XLA_FLAGS', '--xla_dump_to=/tmp/x')
  changed = cpu_runtime.configure()
  assert os.environ['XLA_FLAGS'] == f'--xla_dump_to=/tmp/x {SETTING}'
  assert changed == [f'XLA_FLAGS {SETTING}']
  assert asked == [FLAG]
  assert cpu_runtime.configure() == []  # Idempotent: not twice.
  assert os.environ['XLA_FLAGS'] == f'--xla_dump_to=/tmp/x {SETTING}'


def test_a_flag_the_installed_xla_does_not_know_is_not_set(env, xla_knows):
  # An unknown XLA flag aborts every run; a jaxlib without it runs untuned.
  asked = xla_knows(False)
  assert cpu_runtime.configure() == []
  assert 'XLA_FLAGS' not in os.environ
  assert asked == [FLAG]
  env.setenv('XLA_FLAGS', '--xla_dump_to=/tmp/x')
  assert cpu_runtime.configure() == []
  assert os.environ['XLA_FLAGS'] == '--xla_dump_to=/tmp/x'


@pytest.mark.parametrize('value', ['true', 'false'])
def test_the_users_own_setting_wins(env, xla_knows, value):
  xla_knows(True)
  user = f'--{FLAG}={value}'
  env.setenv('XLA_FLAGS', user)
  assert cpu_runtime.configure() == []
  assert os.environ['XLA_FLAGS'] == user


def test_tuning_off_changes_nothing(env, xla_knows):
  asked = xla_knows(True)
  env.setenv('CAPSJAX_CPU_TUNING', '0')
  env.setenv('XLA_FLAGS', '')
  assert cpu_runtime.configure() == []
  assert os.environ['XLA_FLAGS'] == ''
  assert not asked
  calls = []
  env.setattr(cpu_runtime, '_tune_glibc_malloc',
              lambda: calls.append(1) or True)
  assert cpu_runtime.tune_malloc_for_cpu('cpu') == []
  assert not calls


@pytest.fixture
def malloc_calls(env):
  """Replaces glibc tuning by a recorder; returns the list of calls."""
  calls = []
  env.setattr(cpu_runtime, '_tune_glibc_malloc',
              lambda: calls.append('tuned') or True)
  return calls


@pytest.mark.parametrize('backend', ['gpu', 'tpu', 'cuda', 'rocm'])
def test_malloc_is_left_alone_on_accelerators(malloc_calls, backend):
  assert cpu_runtime.tune_malloc_for_cpu(backend) == []
  assert not malloc_calls


def test_malloc_is_tuned_on_the_cpu(malloc_calls):
  changed = cpu_runtime.tune_malloc_for_cpu('cpu')
  assert malloc_calls == ['tuned']
  assert len(changed) == 1 and changed[0].startswith('glibc malloc')


def test_malloc_is_tuned_once(malloc_calls):
  assert cpu_runtime.tune_malloc_for_cpu('cpu')
  assert cpu_runtime.tune_malloc_for_cpu('cpu') == []
  assert malloc_calls == ['tuned']


def test_a_failed_tuning_is_not_reported_and_may_be_retried(env):
  results = iter([False, True])
  env.setattr(cpu_runtime, '_tune_glibc_malloc', lambda: next(results))
  assert cpu_runtime.tune_malloc_for_cpu('cpu') == []
  assert cpu_runtime.tune_malloc_for_cpu('cpu')


def test_configure_tunes_malloc_before_jax_starts_when_the_cpu_is_next(
    env, malloc_calls, xla_knows):
  xla_knows(True)
  env.setattr(cpu_runtime, 'will_run_on_cpu', lambda: True)
  changed = cpu_runtime.configure()
  assert malloc_calls == ['tuned']
  assert changed == [f'XLA_FLAGS {SETTING}',
                     'glibc malloc: one arena, no mmap for large blocks, '
                     'no trimming']


def test_configure_leaves_malloc_alone_when_an_accelerator_is_next(
    malloc_calls, xla_knows):
  xla_knows(True)
  assert cpu_runtime.configure() == [f'XLA_FLAGS {SETTING}']
  assert not malloc_calls


@pytest.fixture
def platforms(monkeypatch):
  """Sets jax_platforms and the installed accelerator plugins."""
  def set_(platforms, plugins=()):
    monkeypatch.setattr(cpu_runtime, '_requested_platforms', lambda: platforms)
    monkeypatch.setattr(cpu_runtime, 'accelerator_plugins',
                        lambda: list(plugins))
  return set_


@pytest.mark.parametrize('setting, plugins, cpu', [
    ('cpu', ['jax_cuda13_plugin'], True),    # Asked for: the CPU.
    ('CPU,cuda', [], True),
    ('cuda', [], False),                     # Asked for: something else.
    ('tpu,cpu', [], False),
    (None, [], True),                        # JAX's choice: CPU is all there is.
    ('', [], True),
    (None, ['jax_cuda13_plugin'], False),    # JAX's choice: the plugin's.
    (None, ['libtpu'], False),
])
def test_will_run_on_cpu(platforms, setting, plugins, cpu):
  platforms(setting, plugins)
  assert cpu_runtime.will_run_on_cpu() is cpu


def test_accelerator_plugins_are_found_where_jax_looks(monkeypatch, tmp_path):
  assert 'jax_cuda13_plugin' not in cpu_runtime.accelerator_plugins()
  # A module of the jax_plugins namespace package, as a CUDA plugin installs.
  (tmp_path / 'jax_plugins' / 'xpu_fake_plugin').mkdir(parents=True)
  (tmp_path / 'jax_plugins' / 'xpu_fake_plugin' / '__init__.py').write_text('')
  monkeypatch.syspath_prepend(str(tmp_path))
  # And an entry point, as other PJRT plugins advertise themselves.
  point = types.SimpleNamespace(value='other_fake_plugin')
  monkeypatch.setattr(cpu_runtime.importlib.metadata, 'entry_points',
                      lambda group: [point] if group == 'jax_plugins' else [])
  # And libtpu, which JAX loads for TPUs.
  (tmp_path / 'libtpu').mkdir()
  (tmp_path / 'libtpu' / '__init__.py').write_text('')
  found = cpu_runtime.accelerator_plugins()
  assert {'xpu_fake_plugin', 'other_fake_plugin', 'libtpu'} <= set(found)


_FAULTS = """
import resource, sys
from capsjax import cpu_runtime
if sys.argv[1] == 'configure':
  cpu_runtime.configure()
import jax, jax.numpy as jnp
if sys.argv[1] == 'after_start':
  jax.devices()
  cpu_runtime.tune_malloc_for_cpu(jax.default_backend())
step = jax.jit(lambda x, w: jnp.sum(x @ w))  # A 32 MiB temporary per call.
x, w = jnp.ones((2048, 4096)), jnp.ones((4096, 4096))
for _ in range(2):
  step(x, w).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
  step(x, w).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
"""


@pytest.mark.slow  # page faults counted in fresh processes
@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='glibc malloc tuning is Linux-only')
def test_configure_keeps_big_temporaries_out_of_fresh_pages():
  """For real, in fresh processes: page faults per call of a jitted matmul.

  Tuned by `configure` before JAX starts, XLA's threads reuse the freed
  block; tuned only after the backend started (the old order), they keep
  mapping and faulting in fresh pages (~16k faults per call here).
  """
  def faults(how):
    env = dict(os.environ, JAX_PLATFORMS='cpu', CAPSJAX_CPU_TUNING='1')
    env.pop('XLA_FLAGS', None)
    out = subprocess.run([sys.executable, '-c', _FAULTS, how], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])

  untuned = faults('after_start')
  if untuned < 4000:
    pytest.skip(f'this jaxlib/glibc faults only {untuned} pages per call '
                'untuned: nothing for the tuning to show')
  assert faults('configure') < untuned / 4


def test_glibc_tuning_calls_mallopt_with_the_three_settings(env):
  # The ctypes call itself, against a fake libc: the real mallopt would
  # change this pytest process for every later test.
  calls = []

  class FakeLibc:
    def mallopt(self, param, value):
      calls.append((param, value))
      return 1

  env.setattr(cpu_runtime.sys, 'platform', 'linux')
  env.setattr(cpu_runtime.ctypes, 'CDLL', lambda name: FakeLibc())
  assert cpu_runtime._tune_glibc_malloc() is True
  assert calls == [(cpu_runtime._M_ARENA_MAX, 1), (cpu_runtime._M_MMAP_MAX, 0),
                   (cpu_runtime._M_TRIM_THRESHOLD, -1)]


def test_glibc_tuning_without_glibc_does_nothing(env):
  def no_libc(name):
    raise OSError(f'{name}: cannot open shared object file')

  env.setattr(cpu_runtime.sys, 'platform', 'linux')
  env.setattr(cpu_runtime.ctypes, 'CDLL', no_libc)
  assert cpu_runtime._tune_glibc_malloc() is False
  env.setattr(cpu_runtime.sys, 'platform', 'darwin')
  env.setattr(cpu_runtime.ctypes, 'CDLL', pytest.fail)
  assert cpu_runtime._tune_glibc_malloc() is False


def test_xla_knows_the_real_scheduler_flag_and_not_a_made_up_one():
  assert cpu_runtime.xla_knows_flag(FLAG)
  assert not cpu_runtime.xla_knows_flag('xla_cpu_capsjax_no_such_flag_f00')
