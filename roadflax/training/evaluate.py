"""Evaluation of a split, the test report of a classifier, and `--mode=evaluate`."""

import dataclasses
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from roadflax.data import batching, caches, pipelines
from roadflax.data.contract import DataSet
from roadflax.datasets import sources
from roadflax.models import objectives, roadnet
from roadflax.models import steps
from roadflax.results import reports, visuals
from roadflax.runs import workdirs
from roadflax.training import sharding


@dataclasses.dataclass(frozen=True)
class EvalResult:
  metrics: dict[str, float]
  confusion: np.ndarray | None  # rows = true class, columns = predicted


def evaluate_split(
    params: Any,
    pipeline: batching.Pipeline,
    eval_step: Callable[..., Any],
    *,
    global_batch_size: int,
    mesh: jax.sharding.Mesh,
) -> EvalResult:
  """Every example of the split counted once (padding is masked); one host
  sync at the end."""
  totals, confusion = None, None
  process_batch_size = sharding.per_process_batch_size(
      global_batch_size, "eval_batch_size"
  )
  for batch in pipeline.eval_batches(batch_size=process_batch_size):
    batch_metrics, batch_confusion = eval_step(
        params, sharding.shard_batch(batch, mesh)
    )
    totals = batch_metrics if totals is None else totals.merge(batch_metrics)
    if batch_confusion is not None:
      confusion = (
          batch_confusion if confusion is None else confusion + batch_confusion
      )
  values = {name: float(value) for name, value in totals.compute().items()}
  return EvalResult(
      values, None if confusion is None else np.asarray(confusion)
  )


def write_test_report(
    params: Any,
    model: roadnet.RoadNet,
    dataset: DataSet,
    config: ml_collections.ConfigDict,
    stage_dir: str,
    *,
    stage_name: str,
    checkpoint_step: int,
    mesh: jax.sharding.Mesh,
    writer: Any | None = None,
    memory_cache: caches.MemoryCache | None = None,
) -> dict[str, Any]:
  """Evaluates `params` on the test split into STAGE/report.json and report.md.

  `memory_cache`: the run's decoded splits (`pipelines.pipeline_for`).
  """
  objective = objectives.Objective("classification")
  pipeline = pipelines.pipeline_for(
      dataset.splits["test"], config.data, memory_cache=memory_cache
  )
  result = evaluate_split(
      params,
      pipeline,
      steps.jit_eval_step(model, objective),
      global_batch_size=config.eval_batch_size,
      mesh=mesh,
  )
  report = reports.classification_report(
      result.confusion,
      dataset.class_names,
      checkpoint_step=checkpoint_step,
      extra={
          "stage": stage_name,
          "split": "test",
          "data_root": dataset.root,
          "loss": result.metrics["loss"],
          "skipped_files": list(dataset.splits["test"].skipped),
      },
  )
  if jax.process_index() == 0:
    json_path, _ = reports.write_report(report, stage_dir)
    logging.info(
        "test accuracy %.4f on %d images: %s",
        report["accuracy"],
        report["num_examples"],
        json_path,
    )
  if writer is not None:
    _write_test_summaries(
        writer, checkpoint_step, report["accuracy"], result, dataset.class_names
    )
  return report


def _write_test_summaries(
    writer: Any,
    step: int,
    accuracy: float,
    result: EvalResult,
    class_names: tuple[str, ...],
) -> None:
  """Test accuracy, loss and confusion matrix, for TensorBoard."""
  writer.write_scalars(
      step,
      {
          "test_accuracy": accuracy,
          "test_loss": result.metrics["loss"],
      },
  )
  writer.write_images(
      step,
      {
          "test_confusion_matrix": visuals.confusion_image(
              result.confusion, class_names, f"test, checkpoint step {step}"
          )[None]
      },
  )
  writer.flush()


def evaluate_workdir(
    workdir: str, data_config: ml_collections.ConfigDict | None
) -> None:
  """Rebuilds the test report of every classification stage of `workdir`.

  The model and its preprocessing come from the checkpoints' metadata; the data
  come from `data_config` when given (another folder), else from the run's own.
  """
  run = workdirs.load_run(workdir)
  stage_names = workdirs.classifier_stages(workdir)
  config = workdirs.run_config(workdir, data_config)
  dataset = sources.load_dataset_for(
      config.data, run["class_names"], f"the model in {workdir}"
  )
  mesh = sharding.data_mesh()
  memory_cache = (
      caches.MemoryCache()
  )  # Every stage's report reads one decoded copy.
  for stage_name in stage_names:
    stage_dir = os.path.join(workdir, stage_name)
    params, model, step = workdirs.load_best_params(stage_dir, run)
    report = write_test_report(
        params,
        model,
        dataset,
        config,
        stage_dir,
        stage_name=stage_name,
        checkpoint_step=step,
        mesh=mesh,
        memory_cache=memory_cache,
    )
    print(reports.format_markdown(report))
