"""Every orbax call of capsjax, so that an orbax API change touches one file.

A checkpoint is one step directory under `WORKDIR/checkpoints/` with two items:
`state` (the TrainState pytree: step, params, optimizer state) and `meta` (JSON:
the seed, batch size and dataset that fix the data order, the model config,
the time and images trained so far, and the capsjax version that wrote it).
A checkpoint another version wrote that does not restore raises
`errors.VersionError` naming that version, rather than being taken for
damage.

A save writes `N.orbax-checkpoint-tmp/` and renames it to `N/` only when every
file is written, so a process killed mid-save leaves no `N/`; the leftover
temporary directory is removed the next time the workdir is opened. `meta`
also holds a CRC-32 of the state's arrays: orbax notices truncated files and
damaged indexes, but a flipped byte in the array data restores silently. A
step directory that does not read back intact is moved to
`checkpoints_corrupt/` and the next older checkpoint is used instead
(`Checkpointer.restore_latest`). A save that fails for lack of space leaves
only its temporary directory, so the previous checkpoint stays the latest,
and raises `errors.DiskFullError`.
"""
import contextlib
import json
import logging as std_logging
import os
import shutil
import time
import zlib
from typing import Any, Optional

from absl import logging
import capsjax
import jax
import numpy as np
import orbax.checkpoint as ocp

from capsjax import errors
from capsjax import parallel
from capsjax import workdir as workdir_lib

# The keys of the state's checksum and of the writer's version in `meta`.
_CHECKSUM = 'state_crc32'
_VERSION = 'capsjax_version'


def _checksum(state: Any) -> int:
  """CRC-32 of every leaf of `state`, in tree order."""
  crc = 0
  for leaf in jax.tree.leaves(jax.device_get(state)):
    array = np.asarray(leaf)
    if array.ndim:
      crc = zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8),
                       crc)
    else:
      # By value: the step is an int32 array when saved, a Python int (int64
      # to numpy) once restored.
      crc = zlib.crc32(repr(array.item()).encode(), crc)
  return crc


def _directory_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, files in os.walk(path) for name in files)


def _one_line(error: BaseException) -> str:
  text = ' '.join(str(error).split())
  # tensorstore appends its whole JSON spec; the reason comes before it.
  text = text.split(' [tensorstore_spec=')[0]
  if len(text) > 300:
    # Both ends: where it failed, and (tensorstore's last clause) why.
    text = f'{text[:150]} ... {text[-140:]}'
  return f'{type(error).__name__}: {text}'


def _key_name(key) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _shapes(tree) -> dict[str, tuple]:
  # orbax's metadata stores dataclasses and named tuples as dicts and lists,
  # so paths are compared by their key names only: 'opt_state/0/mu/...'.
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(_key_name(k) for k in path): tuple(np.shape(leaf))
          for path, leaf in flat}


def _describe_config_change(saved: dict, current: dict) -> str:
  changed = [f'model.{k}: {saved.get(k)!r} in the checkpoint, '
             f'{current.get(k)!r} now'
             for k in sorted(set(saved) | set(current))
             if saved.get(k) != current.get(k)]
  return '; '.join(changed) if changed else 'no model field differs'


class _DropUnretrievedDiskFullErrors(std_logging.Filter):
  """Drops asyncio's "exception was never retrieved" tracebacks of a full
  disk: tensorstore fails every fragment of the save, orbax retrieves one
  and `Checkpointer` reports it in one line; the others would be logged as
  tracebacks when their futures are collected."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not ('never retrieved' in record.getMessage()
                and workdir_lib.is_disk_full(error))


_ASYNCIO_FILTER = _DropUnretrievedDiskFullErrors()


class Checkpointer:
  """Saves and restores `(state, meta)` in `directory`, keeping the newest few.

  Saving is asynchronous: `save` returns once the arrays are copied off the
  device, and the files are written in the background. A step directory
  appears only when it is complete, so an interrupted save never shadows the
  previous checkpoint.

  In a multi-host run every process calls `save` and `restore` (orbax
  coordinates them and writes each replicated array once), and process 0
  alone moves a damaged checkpoint aside while the others wait for it.
  """

  def __init__(self, directory: str, max_to_keep: Optional[int] = 2):
    self.directory = os.path.abspath(directory)
    self._is_leader = jax.process_index() == 0
    self._saving = None  # (step, bytes of its arrays) of the last save.
    # Damaged checkpoints go next to, not into, the directory orbax scans.
    self.corrupt_directory = self.directory + '_corrupt'
    std_logging.getLogger('asyncio').addFilter(_ASYNCIO_FILTER)  # idempotent
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            # Removes the `N.orbax-checkpoint-tmp` of a save that was killed.
            cleanup_tmp_directories=True),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """The steps of the checkpoints on disk, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts saving `(state, meta)` as `step`.

    Raises:
      errors.DiskFullError: this or the previous (asynchronous) save ran out
        of space; the newest complete checkpoint is intact.
    """
    meta = dict(meta, **{_CHECKSUM: _checksum(state),
                         _VERSION: capsjax.__version__})
    # orbax's save waits for the previous one anyway; waiting here first
    # makes a failure of that one name its own step.
    self.wait_until_finished()
    with self._disk_full_errors():
      self._saving = step, sum(getattr(leaf, 'nbytes', 8)
                               for leaf in jax.tree.leaves(state))
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  @contextlib.contextmanager
  def _disk_full_errors(self):
    """Turns orbax's error for a full disk into `errors.DiskFullError`."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      # tensorstore raises ValueError, the metadata writes OSError.
      if not workdir_lib.is_disk_full(e):
        raise
      step, num_bytes = self._saving or (None, None)
      latest = self._manager.latest_step()
      if latest is not None and latest != step:
        # The complete one on disk: arrays are stored compressed.
        num_bytes = _directory_bytes(os.path.join(self.directory,
                                                  str(latest)))
      kept = (f'checkpoint {latest} is intact and a rerun resumes from it'
              if latest is not None and latest != step else
              'no checkpoint was complete before it')
      raise workdir_lib.disk_full_error(
          self.directory, f'checkpoint {step}', num_bytes, kept) from None

  def restore(self, step: int, target: Any,
              model_config: Optional[dict] = None, *,
              sharding: Optional[jax.sharding.Sharding] = None
              ) -> tuple[Any, dict]:
    """Restores `step` into the structure, shapes and dtypes of `target`.

    The arrays are placed by `sharding` (e.g. replicated over the current
    mesh), or else like `target`'s leaves; not as they were when saved, so a
    checkpoint written on N devices restores on any other number.

    Raises:
      errors.CheckpointMismatchError: if an array's shape differs from `target`'s,
        naming the arrays and (given `model_config`) the model fields that
        changed since the checkpoint was written.
      errors.CheckpointCorruptError: if the restored arrays do not match the
        checksum saved with them.
      errors.VersionError: another capsjax version wrote the checkpoint and
        it does not restore (for any of the reasons above, or another).
    """
    try:
      return self._restore(step, target, model_config, sharding)
    except Exception as e:  # pylint: disable=broad-except
      written_by = self._written_by(step)
      if written_by in (None, capsjax.__version__):
        raise
      raise errors.VersionError(
          f'the checkpoint {os.path.join(self.directory, str(step))} was '
          f'written by capsjax {written_by}, and this capsjax '
          f'{capsjax.__version__} cannot restore it ({_one_line(e)}); '
          f'install capsjax=={written_by} to use it, or pass a new '
          f'--workdir.') from None

  def _written_by(self, step: int) -> Optional[str]:
    """The capsjax version in `step`'s meta; None if the meta does not read."""
    try:
      meta = self._manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))['meta']
    except Exception:  # pylint: disable=broad-except
      return None
    # Versions were recorded from 0.1.0 on, the only version before.
    return meta.get(_VERSION, '0.1.0')

  def _restore(self, step, target, model_config, sharding):
    path = os.path.join(self.directory, str(step))
    saved = _shapes(self._manager.item_metadata(step)['state'].tree)
    wanted = _shapes(target)
    diff = [f'{k} {saved.get(k)} -> {wanted.get(k)}'
            for k in sorted(set(saved) | set(wanted))
            if saved.get(k) != wanted.get(k)]
    meta = self._manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
    if diff:
      changes = ''
      if model_config is not None:
        # Through JSON, as the saved copy went: tuples become lists.
        current = json.loads(json.dumps(model_config))
        changes = ' (' + _describe_config_change(meta.get('model', {}),
                                                 current) + ')'
      raise errors.CheckpointMismatchError(
          f'the checkpoint {path} does not fit the configured model{changes}: '
          f'{", ".join(diff[:3])}{" ..." if len(diff) > 3 else ""}; use a new '
          f'--workdir for a different model, or drop the override.')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    if sharding is not None:
      abstract = jax.tree.map(
          lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding,
                                         weak_type=a.weak_type), abstract)
    state = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))['state']
    meta.pop(_VERSION, None)
    saved_checksum = meta.pop(_CHECKSUM, None)  # None: saved before checksums
    if saved_checksum is not None and _checksum(state) != saved_checksum:
      raise errors.CheckpointCorruptError(
          f'the checkpoint {path} is damaged: its arrays do not match the '
          f'CRC-32 saved with them; restore it from a backup or delete it.')
    return state, meta

  def restore_latest(
      self, target: Any, model_config: Optional[dict] = None,
      sharding: Optional[jax.sharding.Sharding] = None
  ) -> Optional[tuple[int, Any, dict]]:
    """Restores the newest checkpoint that reads back: `(step, state, meta)`.

    `model_config` and `sharding` are passed on to `restore`.

    A newer checkpoint that fails to read is moved to
    `<directory>_corrupt/<step>-<time>` (nothing is deleted) with a warning
    naming it, so that the run continues from the older one and can save that
    step again.

    Returns:
      None if there is no checkpoint.

    Raises:
      errors.CheckpointMismatchError: a checkpoint that reads but does not fit
        `target`; a config problem, not damage, so nothing falls back.
      errors.VersionError: the newest checkpoint is another version's and
        does not restore; not damage either.
      errors.CheckpointCorruptError: there are checkpoints but none reads; they are
        left where they are.
    """
    failures = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        state, meta = self.restore(step, target, model_config,
                                   sharding=sharding)
      except (errors.CheckpointMismatchError, errors.VersionError):
        raise
      except Exception as e:  # pylint: disable=broad-except
        # orbax and tensorstore raise ValueError, OSError, JSONDecodeError,
        # KeyError, ... for damaged files; any failure to read is damage.
        failures.append((step, e))
        continue
      if failures:
        if self._is_leader:
          for bad_step, error in failures:
            self._move_aside(bad_step, error, step)
        parallel.wait_for_all_processes('capsjax_corrupt_checkpoints_moved')
        self._manager.reload()  # It still lists the moved steps.
      return step, state, meta
    if failures:
      listed = '; '.join(f'step {s}: {_one_line(e)}' for s, e in failures)
      raise errors.CheckpointCorruptError(
          f'no checkpoint in {self.directory} reads back intact ({listed}); '
          f'move that directory away to train from scratch, or pass a new '
          f'--workdir.')
    return None

  def _move_aside(self, step: int, error: Exception, fallback: int) -> None:
    source = os.path.join(self.directory, str(step))
    os.makedirs(self.corrupt_directory, exist_ok=True)
    base = os.path.join(self.corrupt_directory,
                        f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
    target, copy = base, 1
    while os.path.exists(target):
      copy += 1
      target = f'{base}.{copy}'
    shutil.move(source, target)
    logging.warning(
        'Checkpoint %s does not read back intact (%s); moved it to %s and '
        'resuming from the previous checkpoint, step %d.', source,
        _one_line(error), target, fallback)

  def wait_until_finished(self) -> None:
    """Blocks until the last save is on disk.

    Raises:
      errors.DiskFullError: as `save`.
    """
    with self._disk_full_errors():
      self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
