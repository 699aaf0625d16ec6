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

Set CAPSJAX_CPU_TUNING=0 to leave the process as it is.
"""
import ctypes
import os
import sys

_SCHEDULER_FLAG = 'xla_cpu_enable_concurrency_optimized_scheduler'

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


def configure() -> list[str]:
  """Applies the settings above; returns what it changed, for the log."""
  if os.environ.get('CAPSJAX_CPU_TUNING', '1') == '0':
    return []
  changed = []
  flags = os.environ.get('XLA_FLAGS', '')
  if _SCHEDULER_FLAG not in flags:  # The user's own setting wins.
    os.environ['XLA_FLAGS'] = f'{flags} --{_SCHEDULER_FLAG}=false'.strip()
  if f'--{_SCHEDULER_FLAG}=false' in os.environ['XLA_FLAGS']:
    changed.append(f'XLA_FLAGS --{_SCHEDULER_FLAG}=false')
  if _tune_glibc_malloc():
    changed.append(
        'glibc malloc: one arena, no mmap for large blocks, no trimming')
  return changed


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
