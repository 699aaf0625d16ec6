"""Process settings that make XLA:CPU training faster; entry points call them.

`configure()` must run before JAX executes anything (importing jax is fine).
The CLI, the experiment scripts and the benchmark call it first thing; a
library user can call it too, or not. It changes nothing on GPU/TPU devices.

Why, measured on a 2-core EPYC (train step, paper's CapsNet, batch 128):

* XLA:CPU's default scheduler overlaps independent ops, which keeps more
  temporaries alive at once: its step needs 560 MiB of scratch, the
  memory-optimised scheduler 368 MiB, at the same speed per op.
* XLA allocates that scratch afresh for every step. glibc serves such large
  blocks with mmap and returns them with munmap, so every step faults in and
  zeroes hundreds of MB of new pages: 150-200k page faults and 0.3-0.45 s of
  kernel time per step. With one malloc arena and mmap off for big blocks,
  glibc keeps the freed block and reuses it: sys time falls to ~15 ms/step.
  Trimming is off as well: at batch 512 the scratch is 1.6 GiB, and with a
  1 GiB trim threshold glibc handed it back to the kernel after every step
  (~400k page faults, 2-3 s of kernel time per step; 86-110 img/s against
  106-164 img/s untrimmed). The process keeps its peak heap, which the next
  step needs again anyway.

Both settings are guarded. The XLA flag is internal: it is set only when the
installed jaxlib knows it (an unknown XLA flag aborts every run), so a future
jaxlib that drops it runs untuned instead of failing. The malloc settings apply
only once JAX's backend is the CPU (`tune_malloc_for_cpu`, called after the
backend is known), so a GPU or TPU process keeps glibc's defaults.

Set CAPSJAX_CPU_TUNING=0 to leave the process as it is.
"""
import ctypes
import functools
import glob
import importlib.util
import mmap
import os
import sys

_SCHEDULER_FLAG = 'xla_cpu_enable_concurrency_optimized_scheduler'

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def _enabled() -> bool:
  return os.environ.get('CAPSJAX_CPU_TUNING', '1') != '0'


@functools.cache
def xla_knows_flag(name: str) -> bool:
  """Whether the installed jaxlib's XLA defines the flag `name`.

  XLA registers its flags by name in its shared libraries, so the name is in
  their bytes; reading the (page-cached) libraries takes milliseconds.
  """
  spec = importlib.util.find_spec('jaxlib')
  if spec is None or not spec.submodule_search_locations:
    return False
  needle = name.encode()
  for directory in spec.submodule_search_locations:
    libraries = glob.glob(os.path.join(directory, '**', '*.so*'),
                          recursive=True)
    # The one that holds XLA first; the rest only if it moved.
    libraries.sort(key=lambda p: 'jax_common' not in os.path.basename(p))
    for library in libraries:
      try:
        with open(library, 'rb') as f, mmap.mmap(
            f.fileno(), 0, access=mmap.ACCESS_READ) as data:
          if data.find(needle) >= 0:
            return True
      except (OSError, ValueError):  # Unreadable or empty: not this one.
        continue
  return False


# CPU flags (Linux /proc/cpuinfo names) of a native bfloat16 matmul: Intel's
# AMX tiles, and the AVX512 BF16 dot-product instructions (Intel Cooper Lake+,
# AMD Zen 4+). Without them XLA emulates bfloat16 matmuls through float32,
# slower than float32 itself.
BF16_MATMUL_FLAGS = ('amx_bf16', 'avx512_bf16')


@functools.cache
def cpu_flags(cpuinfo: str = '/proc/cpuinfo') -> frozenset[str]:
  """The feature flags of this machine's CPU, from Linux's /proc/cpuinfo.

  The one place capsjax reads CPU facts; tests replace it. Empty where
  /proc/cpuinfo does not exist (macOS, Windows) or lists no x86 'flags' line
  (ARM lists 'Features'; 'auto' then stays float32).
  """
  try:
    with open(cpuinfo, encoding='utf-8', errors='replace') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'flags':
          return frozenset(value.split())
  except OSError:
    pass
  return frozenset()


def native_bf16_matmul() -> bool:
  """Whether the CPU multiplies bfloat16 matrices natively (AMX or AVX512)."""
  flags = cpu_flags()
  return any(flag in flags for flag in BF16_MATMUL_FLAGS)


def configure() -> list[str]:
  """Sets the XLA flag above; returns what it changed, for the log.

  Must run before JAX initialises a backend. Idempotent.
  """
  if not _enabled():
    return []
  flags = os.environ.get('XLA_FLAGS', '')
  if _SCHEDULER_FLAG in flags:  # The user's own setting wins.
    return []
  if not xla_knows_flag(_SCHEDULER_FLAG):
    return []
  os.environ['XLA_FLAGS'] = f'{flags} --{_SCHEDULER_FLAG}=false'.strip()
  return [f'XLA_FLAGS --{_SCHEDULER_FLAG}=false']


def tune_malloc_for_cpu(backend: str) -> list[str]:
  """glibc malloc: one arena, no mmap for large blocks, no trimming.

  Only when `backend` (`jax.default_backend()`) is 'cpu'; returns what it
  changed, for the log.
  """
  if not _enabled() or backend != 'cpu':
    return []
  if not _tune_glibc_malloc():
    return []
  return ['glibc malloc: one arena, no mmap for large blocks, no trimming']


def _tune_glibc_malloc() -> bool:
  if not sys.platform.startswith('linux'):
    return False
  try:
    libc = ctypes.CDLL('libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # Not glibc (e.g. musl): nothing to do.
    return False
  # Freed memory stays in the process: -1 turns trimming off (glibc's
  # mallopt(3)).
  return bool(mallopt(_M_ARENA_MAX, 1) and mallopt(_M_MMAP_MAX, 0) and
              mallopt(_M_TRIM_THRESHOLD, -1))
