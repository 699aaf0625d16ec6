"""Data parallelism with JAX's SPMD machinery, over all devices of all hosts.

A 1-D mesh over `jax.devices()` with one axis, 'data', of type `Auto`: batches
are sharded along their first axis (`jax.P('data')`), the TrainState is
replicated (`jax.P()`), and XLA, free to choose every intermediate sharding,
inserts the gradient all-reduce. Each host builds only its own rows of every
global batch (see `data.batching.train_batch`); `global_batch` joins them
into one `jax.Array`. On one device all of this is a no-op.

The shardings are `jax.NamedSharding`s, which carry their mesh, so no
`jax.set_mesh` context is needed around the jitted steps or `global_batch`;
there is no per-device code, hence no `jax.shard_map`.

Several hosts: call `initialize_distributed` before any other JAX call;
every host then runs the same program.
"""
from collections.abc import Callable
from typing import Any, Optional

import jax
from jax.experimental import multihost_utils
from jax.sharding import AxisType
from jax.sharding import Mesh
import numpy as np

DATA_AXIS = 'data'


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> None:
  """Connects this process to the others of a multi-host run.

  Must run before any other JAX call. Arguments left `None` are detected by
  JAX on Slurm, Open MPI, Kubernetes and Cloud TPU; JAX itself reads only
  `JAX_COORDINATOR_ADDRESS` from the environment.
  """
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id)


def wait_for_all_processes(name: str) -> None:
  """A barrier across the processes of a multi-host run; a no-op on one."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
  """True if `flag` is True on any process; on several, every one must call.

  A blocking all-gather of one bool, so the processes agree on the value at
  the same point of the program (e.g. the step a stop request takes effect).
  """
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def create_mesh(devices: Optional[list[jax.Device]] = None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all, all hosts).

  Devices are ordered by host, so host `p` of `P` holds the contiguous rows
  `[p * B / P, (p + 1) * B / P)` of a global batch of `B`, which is what
  `data.train_batch(..., process_index=p, process_count=P)` builds.
  """
  devices = jax.devices() if devices is None else devices
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  # Not `jax.make_mesh(..., devices=devices)`: it reorders the devices it is
  # given (by id on GPU, along the physical torus on TPU), which can
  # interleave hosts. `Auto`, not `make_mesh`'s default `Explicit`, which
  # makes the batch sharding part of every intermediate's type (and so
  # refuses conv.py's reshapes of the sharded batch): the model code leaves
  # intermediate shardings and the gradient all-reduce to XLA.
  return Mesh(np.array(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> jax.NamedSharding:
  """Arrays split along their first (batch) axis over the devices."""
  return jax.NamedSharding(mesh, jax.P(DATA_AXIS))


def replicated(mesh: Mesh) -> jax.NamedSharding:
  """A full copy of the array on every device."""
  return jax.NamedSharding(mesh, jax.P())


def divisibility_error(name: str, value: int, mesh: Mesh) -> Optional[str]:
  """Why `value` cannot be split evenly over the mesh, or None if it can."""
  num_devices = mesh.devices.size
  if value % num_devices == 0:
    return None
  suggestion = max(num_devices, value - value % num_devices)
  return (f'{name} {value} is not divisible by the {num_devices} devices; use '
          f'a multiple of {num_devices} such as {suggestion} '
          f'(--config.{name}={suggestion}).')


def describe(mesh: Mesh, batch_size: int) -> str:
  num_devices = mesh.devices.size
  num_hosts = len({d.process_index for d in mesh.devices.flat})
  platform = mesh.devices.flat[0].platform
  return (f'Training on {num_devices} device{"s" * (num_devices != 1)} '
          f'({platform}) across {num_hosts} host{"s" * (num_hosts != 1)}; '
          f'global batch {batch_size}, {batch_size // num_devices} per device.')


def init_replicated(init_fn: Callable[[], Any], mesh: Mesh) -> Any:
  """`init_fn()` computed directly into a copy on every device.

  Every host runs the same deterministic `init_fn`, so no values are sent
  between hosts.
  """
  return jax.jit(init_fn, out_shardings=replicated(mesh))()


def global_batch(local_batch: dict[str, np.ndarray],
                 mesh: Mesh) -> dict[str, jax.Array]:
  """This host's rows of a batch -> the global batch, sharded over 'data'.

  Args:
    local_batch: numpy arrays of `B / process_count` rows each: this host's
      contiguous slice of the global batch.
    mesh: from `create_mesh`.

  Returns:
    The same keys, each a `jax.Array` of `B` rows split over the devices.
  """
  return jax.make_array_from_process_local_data(batch_sharding(mesh),
                                                local_batch)


def jit_train_step(train_step: Callable, mesh: Mesh) -> Callable:
  """`train_step(state, batch) -> (state, metrics)`, jitted for the mesh.

  The state is replicated and donated, the batch sharded along 'data'; the
  new state and the (scalar) metrics come back replicated.
  """
  return jax.jit(train_step,
                 in_shardings=(replicated(mesh), batch_sharding(mesh)),
                 out_shardings=replicated(mesh), donate_argnums=0)


def jit_eval_step(eval_step: Callable, mesh: Mesh) -> Callable:
  """`eval_step(state, batch) -> sums`, jitted for the mesh (sums replicated)."""
  return jax.jit(eval_step,
                 in_shardings=(replicated(mesh), batch_sharding(mesh)),
                 out_shardings=replicated(mesh))
