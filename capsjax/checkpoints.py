"""Every orbax call of capsjax, so that an orbax API change touches one file.

A checkpoint is one step directory under `WORKDIR/checkpoints/` with two items:
`state` (the TrainState pytree: step, params, optimizer state) and `meta` (JSON:
the seed, batch size and dataset that fix the data order, the model config,
and the time and images trained so far).
"""
import json
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """The checkpoint in the workdir does not fit the model the config builds."""


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


class Checkpointer:
  """Saves and restores `(state, meta)` in `directory`, keeping the newest few.

  Saving is asynchronous: `save` returns once the arrays are copied off the
  device, and the files are written in the background. A step directory
  appears only when it is complete, so an interrupted save never shadows the
  previous checkpoint.

  In a multi-host run every process calls `save` and `restore` (orbax
  coordinates them and writes each replicated array once).
  """

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore(self, step: int, target: Any,
              model_config: Optional[dict] = None, *,
              sharding: Optional[jax.sharding.Sharding] = None
              ) -> tuple[Any, dict]:
    """Restores `step` into the structure, shapes and dtypes of `target`.

    The arrays are placed by `sharding` (e.g. replicated over the current
    mesh), or else like `target`'s leaves; not as they were when saved, so a
    checkpoint written on N devices restores on any other number.

    Raises:
      CheckpointMismatchError: if an array's shape differs from `target`'s,
        naming the arrays and (given `model_config`) the model fields that
        changed since the checkpoint was written.
    """
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
      raise CheckpointMismatchError(
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
    return state, meta

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
