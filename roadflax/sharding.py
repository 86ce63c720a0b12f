"""Data parallelism: one mesh axis over every device of every process.

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


def data_mesh() -> jax.sharding.Mesh:
  """Auto axis type: XLA propagates the batch sharding through the model, so
  model code never names a sharding."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """This process's part of a global batch -> global arrays split over devices."""
  sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  return {name: jax.make_array_from_process_local_data(sharding, value)
          for name, value in batch.items()}


def check_batch_size(global_batch_size: int, key: str) -> None:
  """Raises a UserError naming config `key` unless the batch splits evenly
  over all devices."""
  devices = jax.device_count()
  if global_batch_size % devices:
    raise UserError(f"--config.{key}={global_batch_size} is not a multiple of the "
                    f"{devices} devices a batch is split over; set a multiple of {devices}")


def per_process_batch_size(global_batch_size: int, key: str) -> int:
  """This process's share of a global batch (see `check_batch_size`)."""
  check_batch_size(global_batch_size, key)
  return global_batch_size // jax.process_count()
