"""Tests for capsjax.cpu_runtime: the guarded XLA flag and malloc settings.

Every test leaves the process as it found it: the environment through
monkeypatch, and glibc's mallopt is never called for real in-process.
"""
import os

import pytest

from capsjax import cpu_runtime

FLAG = 'xla_cpu_enable_concurrency_optimized_scheduler'
SETTING = f'--{FLAG}=false'


@pytest.fixture
def env(monkeypatch):
  """Tuning on, no XLA_FLAGS; restored by monkeypatch afterwards."""
  monkeypatch.delenv('CAPSJAX_CPU_TUNING', raising=False)
  monkeypatch.delenv('XLA_FLAGS', raising=False)
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
