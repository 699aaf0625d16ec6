"""A run's workdir: its file names, atomic writes, and making it writable.

  WORKDIR/config.json           the config of the latest run
  WORKDIR/checkpoints/N/        orbax checkpoints (`checkpoints`)
  WORKDIR/checkpoints_corrupt/  checkpoints that did not read back, moved aside
  WORKDIR/metrics.jsonl         train and test metrics, one JSON object a line
  WORKDIR/tensorboard/          the same metrics as TensorBoard event files
  WORKDIR/summary.json          the final test metrics and throughput

Every file here is written to a temporary name and renamed into place, so a
crash never leaves a half-written file behind, and a full disk leaves the
previous version in place (`errors.DiskFullError`, see `disk_full_error`). No
JAX: the multi-host wait is passed in by the caller.
"""
import errno
import json
import os
import shutil
from typing import Any, Callable, Optional

from capsjax import errors

CONFIG = 'config.json'
CHECKPOINTS = 'checkpoints'
METRICS = 'metrics.jsonl'
TENSORBOARD = 'tensorboard'
SUMMARY = 'summary.json'


def path(workdir: str, name: str) -> str:
  """`WORKDIR/name`."""
  return os.path.join(workdir, name)


def is_disk_full(error: Optional[BaseException]) -> bool:
  """Whether `error` or an exception it came from says the disk is full.

  Python raises OSError(ENOSPC) (or EDQUOT, over quota); tensorstore, which
  writes orbax's arrays, raises ValueError with the OS error in its text.
  """
  while error is not None:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC,
                                                      errno.EDQUOT):
      return True
    if 'No space left on device' in str(error) or 'quota exceeded' in str(
        error).lower():
      return True
    error = error.__cause__ or error.__context__
  return False


def _mib(num_bytes: float) -> str:
  return f'{num_bytes / 2**20:.1f} MiB'


def disk_full_error(directory: str, what: str,
                    needed_bytes: Optional[int] = None,
                    kept: str = 'the files written before are intact'
                    ) -> errors.DiskFullError:
  """The one-line error for a write of `what` under `directory` that failed
  for lack of space: the directory, the space needed and free, what is kept.
  """
  try:
    free = f'{_mib(shutil.disk_usage(directory).free)} free now'
  except OSError:
    free = 'free space unknown'
  needs = (f'needs about {_mib(needed_bytes)} free, {free}'
           if needed_bytes is not None else free)
  return errors.DiskFullError(
      f'no space left on the device of {directory} while writing {what} '
      f'({needs}); {kept}. Free space there and rerun the same command to '
      f'resume.')


def write_atomic(file_path: str, write: Callable[[str], None]) -> None:
  """Calls `write(tmp_path)`, then renames tmp_path to `file_path`.

  `write` writes the whole file at the path it is given; the suffix keeps the
  file's extension, so writers that infer a format from it (matplotlib,
  PIL) still work.

  Raises:
    errors.DiskFullError: the disk is full; the temporary file is removed
      and the previous `file_path`, if any, is untouched.
  """
  root, ext = os.path.splitext(file_path)
  tmp = f'{root}.tmp{ext}'
  try:
    write(tmp)
  except OSError as e:
    if not is_disk_full(e):
      raise
    if os.path.exists(tmp):
      os.remove(tmp)
    raise disk_full_error(os.path.dirname(os.path.abspath(file_path)),
                          os.path.basename(file_path)) from None
  os.replace(tmp, file_path)


def write_figure(file_path: str, fig, **savefig_kwargs) -> None:
  """Writes a matplotlib figure as PNG atomically, then closes it.

  The PNG carries no 'Software' metadata (the matplotlib version), so the same
  figure gives the same bytes on any machine.
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  savefig_kwargs.setdefault('metadata', {'Software': None})
  write_atomic(file_path, lambda tmp: fig.savefig(tmp, format='png',
                                                  **savefig_kwargs))
  plt.close(fig)


def write_text(file_path: str, text: str) -> None:
  """Writes `text` to `file_path` atomically."""

  def write(tmp):
    with open(tmp, 'w') as f:
      f.write(text)

  write_atomic(file_path, write)


def write_json(file_path: str, obj: Any) -> None:
  """Writes `obj` as indented, key-sorted JSON atomically."""
  write_text(file_path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


def read_json(file_path: str) -> Optional[Any]:
  """The JSON in `file_path`, or None if it is missing or unreadable."""
  try:
    with open(file_path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def prepare(workdir: str, *, is_leader: bool = True,
            wait: Callable[[str], None] = lambda name: None) -> str:
  """Creates `workdir` if needed and checks that it can be written.

  On several hosts sharing one workdir, only the leader (process 0) writes
  the probe file; the others wait for it (`wait(name)` is a barrier all
  processes call) and then check the directory exists.

  Returns:
    The absolute workdir.

  Raises:
    errors.ConfigError: the directory cannot be created or written.
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    if is_leader:
      os.makedirs(workdir, exist_ok=True)
      probe = os.path.join(workdir, '.write_test')
      with open(probe, 'w') as f:
        f.write('ok')
      os.remove(probe)
    failure = None
  except OSError as e:
    failure = e.strerror
  wait('capsjax_workdir_prepared')
  if failure is None and not os.path.isdir(workdir):
    failure = 'not visible to this process; is it on a shared file system?'
  if failure is not None:
    raise errors.ConfigError(f'cannot write to workdir {workdir} ({failure}); '
                             f'pass a writable --workdir.')
  return workdir
