"""A stage's parts, built once before its loop: the model, objective, plan,
optimiser, checkpoints, pipelines, jitted steps and writers, in `Stage`."""

import dataclasses
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import optax
from absl import logging
from clu import metric_writers

from roadflax.data import batching, caches, pipelines
from roadflax.datasets import unlabelled
from roadflax.models import objectives, optimizers, roadnet, steps
from roadflax.runs import checkpoints
from roadflax.training import health, pseudo_labels, reporting, sharding
from roadflax.training import stage_plan, stage_state


@dataclasses.dataclass(frozen=True)
class Stage:
  """What a stage's loop reads, built once by `setup_stage`."""

  name: str
  directory: str
  config: ml_collections.ConfigDict  # the whole run's
  dataset: Any
  model: roadnet.RoadNet
  objective: objectives.Objective
  plan: stage_plan.StagePlan
  schedule: optax.Schedule
  ckpts: checkpoints.StageCheckpoints
  metadata: dict[str, Any]  # saved with every checkpoint
  mesh: jax.sharding.Mesh
  process_batch_size: int  # this process's part of each global batch
  train_pipeline: batching.Pipeline
  val_pipeline: batching.Pipeline
  # The run's, shared by every stage's pipelines.
  memory_cache: caches.MemoryCache | None
  train_step: Callable[..., Any]
  eval_step: Callable[..., Any]
  writer: metric_writers.MetricWriter
  health_check: health.HealthCheck
  # Best checkpoint by validation, else the last (`stage_plan.selects_best`).
  selects_best: bool
  # What it trains on: the run's train split or data of its own
  # (`unlabelled.describe`), for summary.json.
  trained_on: dict[str, Any]
  pictures: reporting.PictureInputs
  started: float  # time.time() when set up

  @property
  def stage_config(self) -> ml_collections.ConfigDict:
    return self.config.stages[self.name]

  @property
  def global_batch_size(self) -> int:
    """Examples in one step, over all processes."""
    return self.stage_config.batch_size


def setup_stage(
    config: ml_collections.ConfigDict,
    workdir: str,
    stage_name: str,
    dataset: Any,
    run_info: dict[str, Any],
    *,
    memory_cache: caches.MemoryCache | None = None,
) -> tuple[Stage, steps.TrainState]:
  """The stage's parts and its train state, restored if it was interrupted."""
  stage_config = config.stages[stage_name]
  objective = _objective(stage_config, config.data, dataset)
  model = roadnet.create_model(config.model, len(dataset.class_names))
  mesh = sharding.data_mesh()
  process_batch_size = sharding.per_process_batch_size(
      stage_config.batch_size, f"stages.{stage_name}.batch_size"
  )
  own_data = unlabelled.stage_data(config.data, stage_config.data)
  if own_data is None:
    train_split = dataset.splits["train"]
    trained_on = {"split": "train", "images": len(train_split)}
  elif stage_config.pseudo_label_threshold:
    train_split, trained_on = pseudo_labels.training_split(
        config,
        workdir,
        stage_name,
        dataset,
        unlabelled.load_unlabelled(own_data),
        run_info,
    )
  else:
    train_split = unlabelled.load_unlabelled(own_data)
    trained_on = unlabelled.describe(own_data, train_split)
  plan = stage_plan.plan_stage(stage_config, len(train_split))
  trainable = objective.trees(config.model.head_input) - (
      {"encoder"} if stage_config.freeze_encoder else set()
  )
  schedule = optimizers.learning_rate_schedule(
      stage_config, plan.epoch_steps, plan.total_steps
  )
  tx = optimizers.create_optimizer(stage_config, schedule, frozenset(trainable))
  ema_trees = sorted(trainable) if stage_config.ema_decay else []
  stage_dir = os.path.join(workdir, stage_name)
  ckpts = checkpoints.StageCheckpoints(
      os.path.join(stage_dir, "checkpoints"), keep=config.keep_checkpoints
  )
  state = sharding.replicate(
      stage_state.initial_state(
          config, workdir, stage_name, model, tx, ckpts, run_info, ema_trees
      ),
      mesh,
  )
  writer = _writer(stage_dir, config, stage_name, fresh=int(state.step) == 0)
  val_pipeline = pipelines.pipeline_for(
      dataset.splits["val"], config.data, memory_cache=memory_cache
  )
  stage = Stage(
      name=stage_name,
      directory=stage_dir,
      config=config,
      dataset=dataset,
      model=model,
      objective=objective,
      plan=plan,
      schedule=schedule,
      ckpts=ckpts,
      mesh=mesh,
      metadata=dict(
          run_info,
          stage=stage_name,
          objective=objective.name,
          trained_trees=sorted(trainable),
          ema_trees=ema_trees,
          compute_dtype=model.dtype.name,
      ),
      process_batch_size=process_batch_size,
      train_pipeline=pipelines.pipeline_for(
          train_split, config.data, memory_cache=memory_cache
      ),
      val_pipeline=val_pipeline,
      memory_cache=memory_cache,
      train_step=steps.jit_train_step(
          model,
          objective,
          config.seed,
          stage_config.freeze_encoder,
          stage_config.accumulate_steps,
      ),
      eval_step=steps.jit_eval_step(model, objective, config.model.tta),
      writer=writer,
      health_check=health.from_config(
          config, stage_name, len(dataset.class_names), objective.classifies
      ),
      pictures=reporting.PictureInputs(
          model, objective, val_pipeline, config.data
      ),
      trained_on=trained_on,
      selects_best=stage_plan.selects_best(
          stage_config, len(dataset.splits["val"])
      ),
      started=time.time(),
  )
  _log_plan(stage)
  return stage, state


def _log_plan(stage: Stage) -> None:
  stage_config, plan = stage.stage_config, stage.plan
  logging.info(
      "stage %r (%s): %d steps in %d epochs of %d steps, batch %d in %d"
      " micro-batch(es), %s lr %g, training %s, computing in %s, EMA"
      " decay %g",
      stage.name,
      stage.objective.name,
      plan.total_steps,
      plan.passes,
      plan.steps_per_pass,
      stage.global_batch_size,
      stage_config.accumulate_steps,
      stage_config.optimizer,
      stage_config.learning_rate,
      ", ".join(stage.metadata["trained_trees"]),
      stage.metadata["compute_dtype"],
      stage_config.ema_decay,
  )
  if stage.trained_on.get("labels") == "ignored":
    logging.info(
        "stage %r trains on data of its own, labels ignored: %s",
        stage.name,
        stage.trained_on,
    )
  if stage_config.select == "auto" and not stage.selects_best:
    logging.warning(
        "stage %r: %d validation images are fewer than select_min_val_images"
        " %d, too few to tell checkpoints apart: it trains all %d steps and"
        " hands on its last weights, with no early stopping (select=best to"
        " keep the best by validation)",
        stage.name,
        len(stage.dataset.splits["val"]),
        stage_config.select_min_val_images,
        plan.total_steps,
    )
  if plan.stretched:
    logging.info(
        "stage %r: %d epochs of this train split are %d steps, below min_steps"
        " %d: the split is passed over %d times, each configured epoch is %.1f"
        " steps",
        stage.name,
        stage_config.epochs,
        stage_config.epochs * plan.steps_per_pass,
        stage_config.min_steps,
        plan.passes,
        plan.epoch_steps,
    )


def _writer(
    stage_dir: str,
    config: ml_collections.ConfigDict,
    stage_name: str,
    *,
    fresh: bool,
) -> metric_writers.MetricWriter:
  """The stage's TensorBoard writer (logging only on processes > 0), with
  the stage's hyperparameters when it starts afresh."""
  writer = metric_writers.create_default_writer(
      stage_dir, just_logging=jax.process_index() > 0, asynchronous=True
  )
  if fresh:
    writer.write_hparams(reporting.hparams(config, stage_name))
  return writer


def _objective(
    stage_config: ml_collections.ConfigDict,
    data: ml_collections.ConfigDict,
    dataset: Any,
) -> objectives.Objective:
  """The stage's objective; with `data.balance='class_weights'`, classification
  losses weighted by the inverse of the train split's class counts."""
  objective = objectives.objective_from_config(stage_config)
  if data.balance != "class_weights" or not objective.classifies:
    return objective
  weights = tuple(
      float(w)
      for w in batching.balancing_factors(
          dataset.splits["train"].class_counts(len(dataset.class_names))
      )
  )
  logging.info(
      "class weights: %s",
      ", ".join(
          f"{name} {w:.3f}" for name, w in zip(dataset.class_names, weights)
      ),
  )
  return dataclasses.replace(objective, class_weights=weights)
