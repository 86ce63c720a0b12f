"""A stage's train state and its checkpoints.

Where the state starts: fresh parameters, with the trees an earlier stage
trained when `init_from` names one, or the stage's own latest checkpoint when
it was interrupted. What each checkpoint keeps of it: the parameters, the
moving average of the trained trees when one is kept, and the step and
optimiser state that resuming at the exact batch needs. And the stop on a
non-finite loss, which leaves the last good checkpoint in place.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging

from roadflax.errors import UserError
from roadflax.models import roadnet, steps
from roadflax.runs import checkpoints, workdirs


def initial_params(
    config: ml_collections.ConfigDict,
    workdir: str,
    stage_name: str,
    model: roadnet.RoadNet,
    run_info: dict[str, Any],
) -> Any:
  """Fresh parameters, with the trees an earlier stage trained taken from its
  best checkpoint when `init_from` names one."""
  params, source_dir, trees = _start(
      config, workdir, stage_name, model, run_info
  )
  if source_dir is not None:
    logging.info(
        "stage %r starts from %s of %s",
        stage_name,
        ", ".join(trees),
        source_dir,
    )
  return params


def classifier_start(
    config: ml_collections.ConfigDict,
    workdir: str,
    stage_name: str,
    model: roadnet.RoadNet,
    run_info: dict[str, Any],
) -> tuple[str, Any] | None:
  """(stage directory, parameters) of the classifier a stage starts from,
  when its `init_from` names a stage that trained a head (a classifier,
  here or in another workdir: a fine-tune); else None."""
  init_from = config.stages[stage_name].init_from
  if not init_from:
    return None
  source_dir = workdirs.resolve_stage_dir(init_from, workdir)
  if "head" not in workdirs.best_trained_trees(source_dir):
    return None  # a pre-training stage: nothing to score before
  params, _, _ = _start(config, workdir, stage_name, model, run_info)
  return source_dir, params


def _start(
    config: ml_collections.ConfigDict,
    workdir: str,
    stage_name: str,
    model: roadnet.RoadNet,
    run_info: dict[str, Any],
) -> tuple[Any, str | None, list[str]]:
  """(the parameters a stage starts from, the stage directory they come
  from or None, the trees taken from it)."""
  rng = jax.random.fold_in(
      jax.random.key(config.seed), config.stage_order.index(stage_name)
  )
  params = roadnet.init_params(model, rng, config.data.image_size)
  init_from = config.stages[stage_name].init_from
  if not init_from:
    return params, None, []
  source_dir = workdirs.resolve_stage_dir(init_from, workdir)
  restored, metadata, _ = workdirs.restore_best(source_dir, run_info, params)
  trees = metadata["trained_trees"]
  return {**params, **{t: restored[t] for t in trees}}, source_dir, trees


def initial_state(
    config: ml_collections.ConfigDict,
    workdir: str,
    stage_name: str,
    model: roadnet.RoadNet,
    tx: optax.GradientTransformation,
    ckpts: checkpoints.StageCheckpoints,
    run_info: dict[str, Any],
    ema_trees: list[str],
) -> steps.TrainState:
  """The state at `initial_params`, or at the stage's latest checkpoint; with
  `stages.NAME.ema_decay` > 0 it keeps a moving average of `ema_trees`."""
  state = steps.create_train_state(
      model,
      initial_params(config, workdir, stage_name, model, run_info),
      tx,
      ema_decay=config.stages[stage_name].ema_decay,
      ema_trees=ema_trees,
  )
  step = ckpts.latest_step()
  if step is None:
    return state
  metadata = ckpts.restore_metadata(step)
  workdirs.check_compatible(metadata, run_info, ckpts.directory)
  saved_trees = metadata.get("ema_trees", [])
  restored = ckpts.restore(
      step,
      params=state.params,
      train=_train_items(state),
      ema_params={t: state.params[t] for t in saved_trees} or None,
  )
  params = restored["params"]
  ema_params = None
  if state.ema_params is not None:
    # A tree the checkpoint has no average of (the average was switched on
    # since) starts its average here, as a copy (buffers are donated).
    saved = restored.get("ema_params", {})
    ema_params = {
        t: (
            saved[t]
            if t in saved
            else jax.tree_util.tree_map(jnp.copy, params[t])
        )
        for t in state.ema_params
    }
  state = state.replace(
      params=params,
      step=restored["train"]["step"],
      opt_state=restored["train"]["opt_state"],
      ema_params=ema_params,
  )
  logging.info("stage %r: resuming from step %d", stage_name, int(state.step))
  return state


def save(
    ckpts: checkpoints.StageCheckpoints,
    step: int,
    state: steps.TrainState,
    metadata: dict[str, Any],
    best_score: float | None = None,
) -> None:
  """Checkpoints `state` at `step` (see `StageCheckpoints.save`)."""
  ckpts.save(
      step,
      params=state.params,
      train=_train_items(state),
      metadata=metadata,
      ema_params=state.ema_params,
      best_score=best_score,
  )


def _train_items(state: steps.TrainState) -> dict[str, Any]:
  """What resumption needs beyond the parameters."""
  return {"step": state.step, "opt_state": state.opt_state}


def check_finite(
    state: steps.TrainState,
    stage_name: str,
    ckpts: checkpoints.StageCheckpoints,
) -> None:
  """Raises a UserError if the loss of any step so far was not finite."""
  bad_step = int(state.nonfinite_step)
  if bad_step >= 0:
    ckpts.wait()
    last = ckpts.latest_step()
    kept = (
        f"the last good checkpoint is step {last} in {ckpts.directory}"
        if last
        else "no checkpoint was written"
    )
    raise UserError(
        f"stage {stage_name!r}: the loss became non-finite at step"
        f" {bad_step + 1}; training stopped and {kept}; lower the learning rate"
        " or add grad_clip_norm"
    )
