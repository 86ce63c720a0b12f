"""The training driver: every stage of a config, in order, resuming what is unfinished.

A stage is one objective trained to completion in `WORKDIR/STAGE/`:
TensorBoard events, `checkpoints/` (latest few and best by validation), and on
completion `summary.json` (and for classifiers the test `report.json`/`.md`).
A completed stage is skipped when the same command runs again; an interrupted
one resumes from its latest checkpoint at the exact batch where it stopped.
"""

import dataclasses
import os
import time
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from tqdm import tqdm

from roadflax.data import input_pipeline
from roadflax.datasets import sources
from roadflax.runs import checkpoints
from roadflax.training import configuration, evaluate
from roadflax.models import objectives, optimizers, roadnet, steps
from roadflax.results import reports
from roadflax.training import health, sharding, stage_plan
from roadflax.results import visuals
from roadflax.runs import workdirs
from roadflax.errors import UserError
from roadflax.files import atomic_write_json


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runs every stage of `config` in `workdir`."""
  configuration.check_config(config)
  logging.info("JAX %s on %d process(es), devices: %s", jax.__version__,
               jax.process_count(), jax.devices())
  logging.info("config (also in %s):\n%s", os.path.join(workdir, workdirs.CONFIG_FILE), config)
  dataset = sources.load_dataset(config.data)
  run_info = workdirs.prepare(workdir, config, dataset.class_names)
  sources.log_class_counts(dataset)
  for stage_name in config.stage_order:
    train_stage(config, workdir, stage_name, dataset, run_info)


def train_stage(config: ml_collections.ConfigDict, workdir: str, stage_name: str,
                dataset: Any, run_info: dict[str, Any]) -> None:
  """Trains one stage to completion (or skips it if it is complete)."""
  stage_config = config.stages[stage_name]
  stage_dir = os.path.join(workdir, stage_name)
  if workdirs.stage_complete(stage_dir):
    logging.info("stage %r is complete in %s: skipped", stage_name, stage_dir)
    return
  objective = _objective(stage_config, config.data, dataset)
  model = roadnet.create_model(config.model, len(dataset.class_names))
  mesh = sharding.data_mesh()
  batch_size = sharding.per_process_batch_size(stage_config.batch_size,
                                               f"stages.{stage_name}.batch_size")
  train_split, val_split = dataset.splits["train"], dataset.splits["val"]
  plan = stage_plan.plan_stage(stage_config, len(train_split))
  steps_per_epoch, total_steps, num_epochs = plan.steps_per_pass, plan.total_steps, plan.passes

  trainable = objective.trees(config.model.head_input) - (
      {"encoder"} if stage_config.freeze_encoder else set())
  schedule = optimizers.learning_rate_schedule(stage_config, plan.epoch_steps, total_steps)
  tx = optimizers.create_optimizer(stage_config, schedule, frozenset(trainable))
  metadata = dict(run_info, stage=stage_name, objective=objective.name,
                  trained_trees=sorted(trainable))

  ckpts = checkpoints.StageCheckpoints(os.path.join(stage_dir, "checkpoints"),
                                       keep=config.keep_checkpoints)
  params = _initial_params(config, workdir, stage_name, model, run_info)
  state = steps.create_train_state(model, params, tx)
  if ckpts.latest_step() is not None:
    state = _restore_state(ckpts, state, run_info)
    logging.info("stage %r: resuming from step %d", stage_name, int(state.step))
  state = sharding.replicate(state, mesh)
  start_step = int(state.step)

  writer = metric_writers.create_default_writer(
      stage_dir, just_logging=jax.process_index() > 0, asynchronous=True)
  if start_step == 0:
    writer.write_hparams(_flat_hparams(config, stage_name))
  train_step = steps.jit_train_step(model, objective, config.seed, stage_config.freeze_encoder)
  eval_step = steps.jit_eval_step(model, objective)
  train_pipeline = input_pipeline.pipeline_for(train_split, config.data)
  val_pipeline = input_pipeline.pipeline_for(val_split, config.data)
  best_metric, best_mode = objective.best_metric
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=total_steps, writer=writer, every_secs=None,
      every_steps=config.log_every_steps)

  pictures = _PictureInputs(model, objective, val_pipeline, config.data)
  step = start_step
  stage_start, step_loop_seconds = time.time(), 0.0
  logging.info("stage %r (%s): %d steps in %d epochs of %d steps, batch %d, %s lr %g, training %s",
               stage_name, objective.name, total_steps, num_epochs, steps_per_epoch,
               stage_config.batch_size, stage_config.optimizer,
               stage_config.learning_rate, ", ".join(sorted(trainable)))
  if plan.stretched:
    logging.info("stage %r: %d epochs of this train split are %d steps, below min_steps %d: "
                 "the split is passed over %d times, each configured epoch is %.1f steps",
                 stage_name, stage_config.epochs, stage_config.epochs * steps_per_epoch,
                 stage_config.min_steps, num_epochs, plan.epoch_steps)
  health_check = health.from_config(config, stage_name, len(dataset.class_names),
                                    objective.classifies)
  for epoch in range(start_step // steps_per_epoch, num_epochs):
    if stage_plan.should_stop_early(stage_config, plan, step, ckpts.best_step()):
      tqdm.write(f"{stage_name}: stopped early at step {step} of {total_steps}: validation "
                 f"{best_metric} has not improved for {stage_config.early_stopping_patience} "
                 f"epochs, since step {ckpts.best_step()}")
      break
    epoch_start, epoch_start_step = time.time(), step
    epoch_end = min((epoch + 1) * steps_per_epoch, total_steps)
    batches = train_pipeline.train_batches(
        batch_size=batch_size, seed=config.seed, epoch=epoch,
        skip_batches=step - epoch * steps_per_epoch)
    train_metrics, epoch_metrics = None, None
    progress = tqdm(total=epoch_end - epoch * steps_per_epoch, initial=step - epoch * steps_per_epoch,
                    desc=f"{stage_name} {epoch + 1}/{num_epochs}", unit="step", leave=False,
                    disable=jax.process_index() > 0, dynamic_ncols=True)
    for batch in _take(batches, epoch_end - step):
      state, batch_metrics = train_step(state, sharding.shard_batch(batch, mesh))
      step += 1
      train_metrics = batch_metrics if train_metrics is None else train_metrics.merge(batch_metrics)
      progress.update()
      report_progress(step)
      if step % config.log_every_steps == 0 or step == epoch_end:
        _check_finite(state, stage_name, ckpts)
        computed = train_metrics.compute()
        for warning in health_check.update(step, computed):
          logging.warning("%s", warning)
          tqdm.write(warning)
        values = {f"train_{k}": v for k, v in computed.items()}
        values["learning_rate"] = schedule(step - 1)
        writer.write_scalars(step, values)
        elapsed = time.time() - epoch_start
        progress.set_postfix(_postfix(values, (step - epoch_start_step) * stage_config.batch_size / elapsed))
        epoch_metrics = train_metrics if epoch_metrics is None else epoch_metrics.merge(train_metrics)
        train_metrics = None
      if (config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0
          and step != epoch_end):
        _check_finite(state, stage_name, ckpts)
        ckpts.save(step, params=state.params, train=_train_items(state), metadata=metadata)
    progress.close()
    step_loop_seconds += time.time() - epoch_start

    result = evaluate.evaluate_split(state.params, val_pipeline, eval_step,
                                     batch_size=config.eval_batch_size, mesh=mesh)
    writer.write_scalars(step, {f"val_{k}": v for k, v in result.metrics.items()})
    _write_pictures(writer, step, state.params, result, dataset.class_names, pictures)
    score = result.metrics[best_metric] * (1 if best_mode == "max" else -1)
    ckpts.save(step, params=state.params, train=_train_items(state), metadata=metadata,
               best_score=score)
    seconds = time.time() - epoch_start
    images = (step - epoch_start_step) * stage_config.batch_size
    train_values = epoch_metrics.compute() if epoch_metrics is not None else {}
    tqdm.write(_epoch_line(stage_name, epoch, num_epochs, train_values, result.metrics,
                           images / max(seconds, 1e-9), seconds))
  writer.flush()
  ckpts.wait()

  best_step = ckpts.best_step()
  summary = {
      "stage": stage_name, "objective": objective.name, "total_steps": total_steps,
      "steps_trained": step,
      "epochs": num_epochs, "best_step": best_step, "best_metric": best_metric,
      # Of this run only: a resumed stage counts the part it trained.
      "seconds": round(time.time() - stage_start, 1),
      "train_images_per_second": round(
          (step - start_step) * stage_config.batch_size / max(step_loop_seconds, 1e-9), 1),
      "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
  }
  if objective.classifies:
    best_params = ckpts.restore(best_step, params=state.params)["params"]
    report = evaluate.write_test_report(
        best_params, model, dataset, config, stage_dir, stage_name=stage_name,
        checkpoint_step=best_step, mesh=mesh, writer=writer)
    summary["test_accuracy"] = report["accuracy"]
  ckpts.close()
  writer.close()
  if jax.process_index() == 0:
    atomic_write_json(os.path.join(stage_dir, workdirs.SUMMARY_FILE), summary)
  logging.info("stage %r complete: best step %s", stage_name, best_step)


class _PictureInputs:
  """A fixed handful of validation images, reconstructed each epoch."""

  def __init__(self, model: roadnet.RoadNet, objective: objectives.Objective,
               pipeline: input_pipeline.SplitPipeline, data: ml_collections.ConfigDict,
               count: int = 8):
    self.images = None
    self.mean, self.std = data.mean, data.std
    if objective.reconstructs and jax.process_index() == 0:
      batch = next(pipeline.eval_batches(batch_size=count))
      self.images = batch["image"][batch["mask"]]
      self.reconstruct = steps.jit_reconstruct_step(model)


def _write_pictures(writer: metric_writers.MetricWriter, step: int, params: Any,
                    result: evaluate.EvalResult, class_names: tuple[str, ...],
                    pictures: _PictureInputs) -> None:
  """Confusion matrix and per-class precision/recall, or reconstructions."""
  if result.confusion is not None:
    writer.write_images(step, {"val_confusion_matrix": visuals.confusion_image(
        result.confusion, class_names, f"validation, step {step}")[None]})
    per_class = reports.classification_report(
        result.confusion, class_names, checkpoint_step=step)["per_class"]
    writer.write_scalars(step, {f"val_{metric}/{name}": values[metric]
                                for name, values in per_class.items()
                                for metric in ("precision", "recall")})
  if pictures.images is not None:
    reconstructions = np.asarray(pictures.reconstruct(params, pictures.images))
    writer.write_images(step, {"val_reconstructions": visuals.reconstruction_grid(
        pictures.images, reconstructions, pictures.mean, pictures.std)[None]})


def _take(iterator: Iterator[Any], count: int) -> Iterator[Any]:
  for _, item in zip(range(count), iterator):
    yield item


def _train_items(state: steps.TrainState) -> dict[str, Any]:
  """What resumption needs beyond the parameters."""
  return {"step": state.step, "opt_state": state.opt_state}


def _restore_state(ckpts: checkpoints.StageCheckpoints, state: steps.TrainState,
                   run_info: dict[str, Any]) -> steps.TrainState:
  step = ckpts.latest_step()
  workdirs.check_compatible(ckpts.restore_metadata(step), run_info, ckpts.directory)
  restored = ckpts.restore(step, params=state.params, train=_train_items(state))
  return state.replace(params=restored["params"], step=restored["train"]["step"],
                       opt_state=restored["train"]["opt_state"])


def _objective(stage_config: ml_collections.ConfigDict, data: ml_collections.ConfigDict,
               dataset: Any) -> objectives.Objective:
  """The stage's objective; with `data.balance='class_weights'`, classification
  losses weighted by the inverse of the train split's class counts."""
  objective = objectives.objective_from_config(stage_config)
  if data.balance != "class_weights" or not objective.classifies:
    return objective
  weights = tuple(float(w) for w in input_pipeline.balancing_factors(
      dataset.splits["train"].class_counts(len(dataset.class_names))))
  logging.info("class weights: %s", ", ".join(
      f"{name} {w:.3f}" for name, w in zip(dataset.class_names, weights)))
  return dataclasses.replace(objective, class_weights=weights)


def _initial_params(config: ml_collections.ConfigDict, workdir: str, stage_name: str,
                    model: roadnet.RoadNet, run_info: dict[str, Any]) -> Any:
  """Fresh parameters, with the trees an earlier stage trained taken from its
  best checkpoint when `init_from` names one."""
  rng = jax.random.fold_in(jax.random.key(config.seed), config.stage_order.index(stage_name))
  params = roadnet.init_params(model, rng, config.data.image_size)
  init_from = config.stages[stage_name].init_from
  if not init_from:
    return params
  source_dir = workdirs.resolve_stage_dir(init_from, workdir)
  source = checkpoints.StageCheckpoints(os.path.join(source_dir, "checkpoints"), read_only=True)
  step = source.best_step()
  if step is None:
    raise UserError(f"init_from {init_from!r}: no checkpoint in {source.directory}")
  source_metadata = source.restore_metadata(step)
  workdirs.check_compatible(source_metadata, run_info, source.directory)
  trees = source_metadata["trained_trees"]
  restored = source.restore(step, params=params)["params"]
  source.close()
  logging.info("stage %r starts from %s of %s (step %d)", stage_name, ", ".join(trees),
               source_dir, step)
  return {**params, **{tree: restored[tree] for tree in trees}}


def _check_finite(state: steps.TrainState, stage_name: str,
                  ckpts: checkpoints.StageCheckpoints) -> None:
  bad_step = int(state.nonfinite_step)
  if bad_step >= 0:
    ckpts.wait()
    last = ckpts.latest_step()
    kept = f"the last good checkpoint is step {last} in {ckpts.directory}" if last else "no checkpoint was written"
    raise UserError(
        f"stage {stage_name!r}: the loss became non-finite at step {bad_step + 1}; "
        f"training stopped and {kept}; lower the learning rate or add grad_clip_norm")


def _flat_hparams(config: ml_collections.ConfigDict, stage_name: str) -> dict[str, Any]:
  stage = config.stages[stage_name]
  hparams = {f"stage.{k}": v for k, v in stage.items()}
  hparams.update({f"data.{k}": config.data[k] for k in ("source", "image_size", "contrast")})
  hparams.update({"seed": config.seed, "model.head_input": config.model.head_input})
  return {k: (str(v) if isinstance(v, (tuple, list)) else v) for k, v in hparams.items()}


def _postfix(values: dict[str, Any], images_per_second: float) -> dict[str, str]:
  postfix = {"loss": f"{float(values['train_loss']):.4f}"}
  if "train_accuracy" in values:
    postfix["acc"] = f"{float(values['train_accuracy']):.3f}"
  postfix["img/s"] = f"{images_per_second:.0f}"
  return postfix


_EPOCH_LINE_METRICS = ("loss", "accuracy", "mse")


def _epoch_line(stage_name: str, epoch: int, num_epochs: int, train: dict[str, Any],
                val: dict[str, float], images_per_second: float, seconds: float) -> str:
  parts = [f"{stage_name} epoch {epoch + 1}/{num_epochs}"]
  parts.append("train " + " ".join(f"{k} {float(v):.4f}" for k, v in train.items()
                                   if k in _EPOCH_LINE_METRICS))
  parts.append("val " + " ".join(f"{k} {v:.4f}" for k, v in val.items()))
  parts.append(f"{images_per_second:.0f} img/s, {seconds:.0f} s")
  return " | ".join(parts)
