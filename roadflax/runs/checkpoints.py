"""Orbax checkpoints of one stage: the latest few and the best, with metadata.

Each checkpoint holds `params`, `train` (optimiser state and step counter,
needed only to resume), `metadata` (JSON: what it takes to rebuild the model —
class names, image size, normalisation, model config — so that any job works
from the checkpoint directory alone) and, when the stage keeps a moving
average of its weights, `ema_params`: the averaged trees, which its metadata's
`ema_trees` names and which every use of the checkpoint reads in place of the
trained ones (`restore_params`). Orbax writes each step into a
temporary directory and renames it when complete, so a run killed at any
moment leaves either a whole checkpoint or none.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy

from roadflax.errors import UserError

_BEST_KEY = "best_score"  # in each checkpoint's metrics: higher is better


class StageCheckpoints:
  """Checkpoints of one stage in `directory` (WORKDIR/STAGE/checkpoints)."""

  def __init__(self, directory: str, *, keep: int = 2, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    if read_only and not os.path.isdir(self.directory):
      raise UserError(
          f"no checkpoints in {self.directory}: train this stage first"
      )
    policy = preservation_policy.AnyPreservationPolicy([
        preservation_policy.LatestN(n=max(keep, 1)),
        preservation_policy.BestN(
            get_metric_fn=lambda m: m[_BEST_KEY],
            n=1,
            keep_checkpoints_without_metrics=False,
        ),
    ])
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_names=("params", "train", "metadata", "ema_params"),
        options=ocp.CheckpointManagerOptions(
            best_fn=lambda m: m[_BEST_KEY],
            best_mode="max",
            preservation_policy=policy,
            cleanup_tmp_directories=True,
            read_only=read_only,
            create=not read_only,
        ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the best validation score (the latest if none was scored)."""
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(
      self,
      step: int,
      *,
      params: Any,
      train: Any,
      metadata: dict[str, Any],
      ema_params: Any | None = None,
      best_score: float | None = None,
  ) -> None:
    """Saves asynchronously; `best_score` (higher is better) ranks end-of-epoch
    checkpoints, mid-epoch ones have none and are kept only while latest."""
    items = {
        "params": ocp.args.StandardSave(params),
        "train": ocp.args.StandardSave(train),
        "metadata": ocp.args.JsonSave(metadata),
    }
    if ema_params is not None:
      items["ema_params"] = ocp.args.StandardSave(ema_params)
    self._manager.save(
        step,
        args=ocp.args.Composite(**items),
        metrics=None if best_score is None else {_BEST_KEY: float(best_score)},
        force=True,
    )

  def restore_metadata(self, step: int) -> dict[str, Any]:
    return self._manager.restore(
        step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
    )["metadata"]

  def restore(
      self,
      step: int,
      *,
      params: Any,
      train: Any | None = None,
      ema_params: Any | None = None,
  ) -> dict[str, Any]:
    """Restores `params` (and `train`, `ema_params` when given) shaped and
    sharded like the given abstract or concrete trees."""
    items = {"params": ocp.args.StandardRestore(_abstract(params))}
    for name, tree in (("train", train), ("ema_params", ema_params)):
      if tree is not None:
        items[name] = ocp.args.StandardRestore(_abstract(tree))
    try:
      return dict(self._manager.restore(step, args=ocp.args.Composite(**items)))
    except (ValueError, KeyError) as error:
      raise UserError(
          f"checkpoint {self.directory}/{step} does not match this model"
          " (another architecture, image size or class set?):"
          f" {str(error).splitlines()[0]}"
      ) from None

  def restore_params(self, step: int, params: Any) -> Any:
    """The parameters that `step` holds for use (validation, prediction,
    export, a later stage): the trained ones, with the averaged trees in
    their place when it holds an average. `params` as in `restore`."""
    trees = self.restore_metadata(step).get("ema_trees", [])
    restored = self.restore(
        step,
        params=params,
        ema_params={tree: params[tree] for tree in trees} if trees else None,
    )
    return {**restored["params"], **restored.get("ema_params", {})}

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def _abstract(tree: Any) -> Any:
  """What to restore into: each leaf's shape, dtype and sharding.

  A leaf without a sharding (from `jax.eval_shape`) is restored whole onto
  this process's first device, whatever devices the checkpoint was written
  from: a model trained on eight GPUs, or by several processes, loads on a
  laptop's CPU (`sharding.replicate` then spreads it over a mesh).
  """
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def target(leaf: Any) -> Any:
    struct = ocp.utils.to_shape_dtype_struct(
        leaf
    )  # Python scalars stay as they are.
    if isinstance(struct, jax.ShapeDtypeStruct) and struct.sharding is None:
      struct = jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=local)
    return struct

  return jax.tree_util.tree_map(target, tree)
