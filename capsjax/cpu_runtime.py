"""Process settings that make XLA:CPU training faster; entry points call them.

`configure()` must run before JAX executes anything (importing jax is fine).
The CLI, the experiment scripts and the benchmark call it first thing; a
library user can call it too, or not. It changes nothing on GPU/TPU devices.

Why (the measurements are in docs/performance.md):

* XLA:CPU's default scheduler overlaps independent ops, which keeps more
  temporaries alive at once; the memory-optimised scheduler needs markedly
  less scratch per training step at the same speed per op.
* XLA allocates that scratch afresh for every step. glibc serves such large
  blocks with mmap and returns them with munmap, so every step faults in and
  zeroes hundreds of MB of new pages, in kernel time. With one malloc arena
  and mmap off for big blocks, glibc keeps the freed block and reuses it.
  Trimming is off as well: with a trim threshold below the scratch of a large
  batch, glibc hands the block back to the kernel after every step. The
  process keeps its peak heap, which the next step needs again anyway.

Both settings are guarded. The XLA flag is internal: it is set only when the
installed jaxlib knows it (an unknown XLA flag aborts every run), so a future
jaxlib that drops it runs untuned instead of failing. The malloc settings apply
only when JAX will run on the CPU, and they must come before JAX starts its
worker threads: glibc gives each thread that allocates its own arena, and an
arena other than the main one serves every block over 64 MiB with mmap and
returns it with munmap, whatever mallopt says later. XLA's YNNPACK fusions
allocate their u_hat-sized buffers in those threads, so tuning after the
backend has started leaves most of the page faults in every training step.
`configure()` therefore tunes malloc at once when no GPU or TPU can be picked
(`will_run_on_cpu`); otherwise `tune_malloc_for_cpu`, once the backend is
known, does what can still be done.

Set CAPSJAX_CPU_TUNING=0 to leave the process as it is.
"""
import ctypes
import functools
import glob
import importlib.metadata
import importlib.util
import mmap
import os
import pkgutil
import sys

_SCHEDULER_FLAG = 'xla_cpu_enable_concurrency_optimized_scheduler'

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_malloc_tuned = False  # Set once `_tune_glibc_malloc` has succeeded.


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
  """Sets the XLA flag above, and tunes malloc now if JAX will run on the CPU.

  Must run before JAX initialises a backend. Idempotent. Returns what it
  changed, for the log.
  """
  if not _enabled():
    return []
  changed = _set_scheduler_flag()
  if will_run_on_cpu():
    changed += tune_malloc_for_cpu('cpu')
  return changed


def _set_scheduler_flag() -> list[str]:
  flags = os.environ.get('XLA_FLAGS', '')
  if _SCHEDULER_FLAG in flags:  # The user's own setting wins.
    return []
  if not xla_knows_flag(_SCHEDULER_FLAG):
    return []
  os.environ['XLA_FLAGS'] = f'{flags} --{_SCHEDULER_FLAG}=false'.strip()
  return [f'XLA_FLAGS --{_SCHEDULER_FLAG}=false']


def will_run_on_cpu() -> bool:
  """Whether JAX's backend will be the CPU, known before JAX starts it.

  Yes if `jax_platforms` (or JAX_PLATFORMS) lists 'cpu' first; otherwise yes
  unless a GPU or TPU plugin is installed (`accelerator_plugins`), because JAX
  falls back to the CPU only when it has nothing else.
  """
  platforms = _requested_platforms() or ''
  if platforms.strip():
    return platforms.split(',')[0].strip().lower() == 'cpu'
  return not accelerator_plugins()


def _requested_platforms():
  """`jax_platforms` as set by JAX_PLATFORMS or jax.config (None: unset)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.config.jax_platforms


def accelerator_plugins() -> list[str]:
  """Installed packages that give JAX a GPU or TPU backend, by module name.

  The places JAX itself looks: modules of the `jax_plugins` namespace package
  and `jax_plugins` entry points (CUDA, ROCm and other PJRT plugins), and
  libtpu. Nothing is imported.
  """
  found = set()
  spec = importlib.util.find_spec('jax_plugins')
  if spec is not None and spec.submodule_search_locations:
    found.update(info.name for info in pkgutil.iter_modules(
        spec.submodule_search_locations))
  found.update(point.value
               for point in importlib.metadata.entry_points(group='jax_plugins'))
  if importlib.util.find_spec('libtpu') is not None:
    found.add('libtpu')
  return sorted(found)


def tune_malloc_for_cpu(backend: str) -> list[str]:
  """glibc malloc: one arena, no mmap for large blocks, no trimming.

  Only when `backend` (`jax.default_backend()`) is 'cpu', and once; returns
  what it changed, for the log. Called before JAX starts (by `configure`) it
  covers every thread; called later, only the threads that have not
  allocated yet.
  """
  global _malloc_tuned
  if not _enabled() or backend != 'cpu' or _malloc_tuned:
    return []
  if not _tune_glibc_malloc():
    return []
  _malloc_tuned = True
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
