"""Data parallelism: one mesh axis over every device of every process, and
joining the processes of a multi-host run.

Parameters and optimiser state are replicated; each batch is split along its
first axis. The same code runs on one CPU, one GPU, or many hosts (each
process feeds its own slice of the global batch).
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from roadflax.errors import UserError

DATA_AXIS = "data"


def join_processes(
    coordinator: str, num_processes: int | None, process_id: int | None
) -> None:
  """Makes this process one of a multi-process run (`jax.distributed`).

  Every process runs the same command with its own `process_id`; all then see
  every device of every process, and each feeds its own part of each batch.
  `coordinator` is process 0's HOST:PORT, or "auto" where JAX finds the
  processes itself (Cloud TPU, SLURM, Open MPI).
  """
  if coordinator != "auto" and (num_processes is None or process_id is None):
    raise UserError(
        f"--coordinator={coordinator} needs --num_processes=N and "
        "--process_id=I (0 to N-1, a different one for each process)"
    )
  # CPU devices of several processes need a collectives library; GPUs and
  # TPUs bring their own.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    if coordinator == "auto":
      jax.distributed.initialize()
    else:
      jax.distributed.initialize(
          coordinator, num_processes=num_processes, process_id=process_id
      )
  except (RuntimeError, ValueError) as error:
    reason = (
        str(error).strip().splitlines()[0]
        if str(error).strip()
        else type(error).__name__
    )
    raise UserError(
        f"cannot join the processes at --coordinator={coordinator}: {reason}"
    ) from None


def data_mesh() -> jax.sharding.Mesh:
  """Auto axis type: XLA propagates the batch sharding through the model, so
  model code never names a sharding."""
  return jax.make_mesh(
      (jax.device_count(),),
      (DATA_AXIS,),
      axis_types=(jax.sharding.AxisType.Auto,),
  )


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """A copy of `tree` on every device of `mesh`, from this process's values.

  Built shard by shard from host memory rather than by `jax.device_put`: with
  several processes, arrays restored from a checkpoint sit on one local
  device, and moving them across hosts is not what is wanted (every process
  holds the same values already).
  """
  sharding = NamedSharding(mesh, PartitionSpec())

  def put(leaf: Any) -> jax.Array:
    value = np.asarray(leaf)
    return jax.make_array_from_callback(
        value.shape, sharding, lambda index: value[index]
    )

  return jax.tree_util.tree_map(put, tree)


def shard_batch(
    batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh
) -> dict[str, jax.Array]:
  """This process's part of a global batch -> global arrays split over devices."""
  sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  return {
      name: jax.make_array_from_process_local_data(sharding, value)
      for name, value in batch.items()
  }


def check_batch_size(global_batch_size: int, key: str) -> None:
  """Raises a UserError naming config `key` unless the batch splits evenly
  over all devices."""
  devices = jax.device_count()
  if global_batch_size % devices:
    raise UserError(
        f"--config.{key}={global_batch_size} is not a multiple of the "
        f"{devices} devices a batch is split over; set a multiple of {devices}"
    )


def per_process_batch_size(global_batch_size: int, key: str) -> int:
  """This process's share of a global batch (see `check_batch_size`)."""
  check_batch_size(global_batch_size, key)
  return global_batch_size // jax.process_count()
