"""The training driver: every stage of a config, in order, resuming what is unfinished.

A stage is one objective trained to completion in `WORKDIR/STAGE/`:
TensorBoard events, `checkpoints/` (latest few and best by validation), and on
completion `summary.json` (and for classifiers `calibration.json`, the
temperature fitted on the validation split, and the test `report.json`/`.md`
with its `reliability.png`).
A completed stage is skipped when the same command runs again; an interrupted
one resumes from its latest checkpoint at the exact batch where it stopped.
"""

import dataclasses
import itertools
import os
import time
from typing import Any

import jax
import ml_collections
from absl import logging
from tqdm import tqdm

from roadflax.data import caches
from roadflax.datasets import sources
from roadflax.files import atomic_write_json
from roadflax.models import steps
from roadflax.runs import workdirs
from roadflax.training import configuration, evaluate, profiling, reporting
from roadflax.training import sharding, split_record, stage_plan, stage_setup
from roadflax.training import stage_state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runs every stage of `config` in `workdir`."""
  configuration.check_config(config)
  logging.info(
      "JAX %s on %d process(es), devices: %s",
      jax.__version__,
      jax.process_count(),
      jax.devices(),
  )
  logging.info(
      "config (also in %s):\n%s",
      os.path.join(workdir, workdirs.CONFIG_FILE),
      config,
  )
  dataset = sources.load_dataset(config.data)
  split_record.check_resumed(workdir, dataset)
  run_info = workdirs.prepare(workdir, config, dataset.class_names)
  sources.log_class_counts(dataset)
  split_record.record_split(workdir, dataset, config.data)
  # With data.cache='memory', each split is decoded once a run.
  memory_cache = caches.MemoryCache()
  for stage_name in config.stage_order:
    train_stage(
        config,
        workdir,
        stage_name,
        dataset,
        run_info,
        memory_cache=memory_cache,
    )


def train_stage(
    config: ml_collections.ConfigDict,
    workdir: str,
    stage_name: str,
    dataset: Any,
    run_info: dict[str, Any],
    *,
    memory_cache: caches.MemoryCache | None = None,
) -> None:
  """Trains one stage to completion (or skips it if it is complete)."""
  stage_dir = os.path.join(workdir, stage_name)
  if workdirs.stage_complete(stage_dir):
    logging.info("stage %r is complete in %s: skipped", stage_name, stage_dir)
    return
  stage, state = stage_setup.setup_stage(
      config, workdir, stage_name, dataset, run_info, memory_cache=memory_cache
  )
  step, epochs, unevaluated = int(state.step), [], []
  with profiling.StepTrace(stage.directory, config.profile_steps) as trace:
    for epoch in range(step // stage.plan.steps_per_pass, stage.plan.passes):
      if not unevaluated and stops_early(stage, step):
        break
      state, trained = train_epoch(stage, state, step, epoch, trace=trace)
      step = trained.end_step
      epochs.append(trained)
      unevaluated.append(trained)
      if stage.plan.evaluates_after(epoch):
        end_epoch(stage, state, EpochRun.joined(unevaluated))
        unevaluated = []
  finish_stage(stage, state, step, epochs)


@dataclasses.dataclass(frozen=True)
class EpochRun:
  """What `train_epoch` did: steps `start_step` to `end_step` of pass `epoch`."""

  epoch: int
  start_step: int
  end_step: int
  started: float  # time.time() at its start
  seconds: float  # in the step loop, evaluation excluded
  train_metrics: dict[str, Any]  # averaged over the steps it trained

  @classmethod
  def joined(cls, runs: list["EpochRun"]) -> "EpochRun":
    """Consecutive passes as one: the last pass's number, the metrics
    averaged over all their steps."""
    if len(runs) == 1:
      return runs[0]
    steps = [r.end_step - r.start_step for r in runs]
    metrics = {
        key: (
            sum(r.train_metrics[key] * n for r, n in zip(runs, steps))
            / max(sum(steps), 1)
        )
        for key in runs[-1].train_metrics
        if all(key in r.train_metrics for r in runs)
    }
    return cls(
        runs[-1].epoch,
        runs[0].start_step,
        runs[-1].end_step,
        runs[0].started,
        sum(r.seconds for r in runs),
        metrics,
    )


def stops_early(stage: stage_setup.Stage, step: int) -> bool:
  """Whether validation has not improved for the patience; says so if it has not."""
  best_step = stage.ckpts.best_step()
  if not stage_plan.should_stop_early(
      stage.stage_config, stage.plan, step, best_step
  ):
    return False
  reporting.write_line(
      f"{stage.name}: stopped early at step {step} of {stage.plan.total_steps}:"
      f" validation {stage.objective.best_metric[0]} has not improved for"
      f" {stage.stage_config.early_stopping_patience} epochs, since step"
      f" {best_step}"
  )
  return True


def train_epoch(
    stage: stage_setup.Stage,
    state: steps.TrainState,
    step: int,
    epoch: int,
    *,
    trace: profiling.StepTrace | None = None,
) -> tuple[steps.TrainState, EpochRun]:
  """Trains from `step` to the end of pass `epoch` over the train split.

  Train metrics leave the device only every `log_every_steps` and at the
  epoch's end: then they are checked, written and shown on the progress bar.
  `trace` profiles the stage's steps it is due to (none if not given).
  """
  config, plan = stage.config, stage.plan
  trace = trace or profiling.StepTrace(stage.directory, 0)
  epoch_start = epoch * plan.steps_per_pass
  end_step = min(epoch_start + plan.steps_per_pass, plan.total_steps)
  batches = stage.train_pipeline.train_batches(
      batch_size=stage.process_batch_size,
      seed=config.seed,
      epoch=epoch,
      skip_batches=step - epoch_start,
  )
  bar = reporting.progress_bar(
      f"{stage.name} {epoch + 1}/{plan.passes}",
      total=end_step - epoch_start,
      initial=step - epoch_start,
  )
  start_step, started = step, time.time()
  # Metrics since the last log, and since `start_step`.
  window, trained = None, None
  for batch in itertools.islice(batches, end_step - step):
    state, batch_metrics = trace.run(
        stage.train_step, step, state, sharding.shard_batch(batch, stage.mesh)
    )
    step += 1
    window = batch_metrics if window is None else window.merge(batch_metrics)
    bar.update()
    if step % config.log_every_steps == 0 or step == end_step:
      steps_per_sec = (step - start_step) / max(time.time() - started, 1e-9)
      _log_train_metrics(stage, state, step, window, steps_per_sec, bar)
      trained = window if trained is None else trained.merge(window)
      window = None
    if (
        config.checkpoint_every_steps
        and step % config.checkpoint_every_steps == 0
        and step != end_step
    ):
      stage_state.check_finite(state, stage.name, stage.ckpts)
      stage_state.save(stage.ckpts, step, state, stage.metadata)
  bar.close()
  return state, EpochRun(
      epoch,
      start_step,
      step,
      started,
      time.time() - started,
      trained.compute() if trained is not None else {},
  )


def _log_train_metrics(
    stage: stage_setup.Stage,
    state: steps.TrainState,
    step: int,
    window: Any,
    steps_per_sec: float,
    bar: tqdm,
) -> None:
  """Checks the train metrics of the steps since the last log, writes and shows them."""
  stage_state.check_finite(state, stage.name, stage.ckpts)
  computed = window.compute()
  for warning in stage.health_check.update(step, computed):
    logging.warning("%s", warning)
    reporting.write_line(warning)
  values = {f"train_{k}": v for k, v in computed.items()}
  values["learning_rate"] = stage.schedule(step - 1)
  stage.writer.write_scalars(
      step,
      {
          **values,
          "steps_per_sec": steps_per_sec,
          "uptime": time.time() - stage.started,
      },
  )
  bar.set_postfix(
      reporting.postfix(values, steps_per_sec * stage.global_batch_size)
  )


def end_epoch(
    stage: stage_setup.Stage, state: steps.TrainState, trained: EpochRun
) -> None:
  """Evaluates, checkpoints (best by validation) and reports the epoch just
  trained; with a moving average of the weights kept, evaluates the average."""
  step = trained.end_step
  result = evaluate.evaluate_split(
      state.eval_params,
      stage.val_pipeline,
      stage.eval_step,
      global_batch_size=stage.config.eval_batch_size,
      mesh=stage.mesh,
  )
  stage.writer.write_scalars(
      step, {f"val_{k}": v for k, v in result.metrics.items()}
  )
  reporting.write_pictures(
      stage.writer,
      step,
      state.eval_params,
      result,
      stage.dataset.class_names,
      stage.pictures,
  )
  best_metric, best_mode = stage.objective.best_metric
  stage_state.save(
      stage.ckpts,
      step,
      state,
      stage.metadata,
      # Handing on the last weights: the latest epoch ranks highest, so the
      # "best" checkpoint every later use reads is the last one.
      best_score=result.metrics[best_metric] * (1 if best_mode == "max" else -1)
      if stage.selects_best
      else float(step),
  )
  seconds = time.time() - trained.started
  images = (step - trained.start_step) * stage.global_batch_size
  reporting.write_line(
      reporting.epoch_line(
          stage.name,
          trained.epoch,
          stage.plan.passes,
          trained.train_metrics,
          result.metrics,
          images / max(seconds, 1e-9),
          seconds,
      )
  )


def finish_stage(
    stage: stage_setup.Stage,
    state: steps.TrainState,
    step: int,
    epochs: list[EpochRun],
) -> None:
  """Calibrates a classifier and writes its test report and, last,
  summary.json: the stage is complete."""
  stage.writer.flush()
  stage.ckpts.wait()
  best_step = stage.ckpts.best_step()
  # Of this run only: a resumed stage counts the part it trained.
  trained_images = (
      sum(e.end_step - e.start_step for e in epochs) * stage.global_batch_size
  )
  summary = {
      "stage": stage.name,
      "objective": stage.objective.name,
      "total_steps": stage.plan.total_steps,
      "steps_trained": step,
      "epochs": stage.plan.passes,
      "best_step": best_step,
      "best_metric": stage.objective.best_metric[0],
      "selected": "best" if stage.selects_best else "last",
      "trained_on": stage.trained_on,
      "seconds": round(time.time() - stage.started, 1),
      "train_images_per_second": round(
          trained_images / max(sum(e.seconds for e in epochs), 1e-9), 1
      ),
      "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "compute_dtype": stage.metadata["compute_dtype"],
  }
  if stage.objective.classifies:
    best_params = stage.ckpts.restore_params(best_step, state.params)
    report = evaluate.write_test_report(
        best_params,
        stage.model,
        stage.dataset,
        stage.config,
        stage.directory,
        stage_name=stage.name,
        checkpoint_step=best_step,
        mesh=stage.mesh,
        writer=stage.writer,
        memory_cache=stage.memory_cache,
        started_from=stage_state.classifier_start(
            stage.config,
            os.path.dirname(stage.directory),
            stage.name,
            stage.model,
            workdirs.load_run(os.path.dirname(stage.directory)),
        ),
    )
    summary["test_accuracy"] = report["accuracy"]
  stage.ckpts.close()
  stage.writer.close()
  if jax.process_index() == 0:
    atomic_write_json(
        os.path.join(stage.directory, workdirs.SUMMARY_FILE), summary
    )
  logging.info("stage %r complete: best step %s", stage.name, best_step)
