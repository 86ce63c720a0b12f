"""Evaluation of a split, the calibration and test report of a classifier,
and `--mode=evaluate`."""

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from PIL import Image

from roadflax.data import batching, caches, pipelines
from roadflax.data.contract import DataSet
from roadflax.errors import UserError
from roadflax.files import atomic_write
from roadflax.models import objectives, roadnet
from roadflax.models import steps
from roadflax.results import calibration, group_accuracy, reports, visuals
from roadflax.runs import workdirs
from roadflax.training import calibrate, sharding, split_record

RELIABILITY_FILE = "reliability.png"


@dataclasses.dataclass(frozen=True)
class EvalResult:
  metrics: dict[str, float]
  confusion: np.ndarray | None  # rows = true class, columns = predicted
  # With `keep_logits`: every example's logits [N, classes] and label [N],
  # once each, on every process.
  logits: np.ndarray | None = None
  labels: np.ndarray | None = None


def evaluate_split(
    params: Any,
    pipeline: batching.Pipeline,
    eval_step: Callable[..., Any],
    *,
    global_batch_size: int,
    mesh: jax.sharding.Mesh,
    keep_logits: bool = False,
) -> EvalResult:
  """Every example of the split counted once (padding is masked); one host
  sync at the end, which with `keep_logits` gathers the logits of every
  process's examples (a classifier's)."""
  totals, confusion, kept = None, None, []
  process_batch_size = sharding.per_process_batch_size(
      global_batch_size, "eval_batch_size"
  )
  for batch in pipeline.eval_batches(batch_size=process_batch_size):
    batch = sharding.shard_batch(batch, mesh)
    batch_metrics, batch_confusion, logits = eval_step(params, batch)
    totals = batch_metrics if totals is None else totals.merge(batch_metrics)
    if batch_confusion is not None:
      confusion = (
          batch_confusion if confusion is None else confusion + batch_confusion
      )
    if keep_logits:
      kept.append((logits, batch["label"], batch["mask"]))
  values = {name: float(value) for name, value in totals.compute().items()}
  result = EvalResult(
      values, None if confusion is None else np.asarray(confusion)
  )
  if not keep_logits:
    return result
  logits, labels, mask = (
      np.concatenate(part)
      for part in zip(*multihost_utils.process_allgather(kept, tiled=True))
  )
  return dataclasses.replace(result, logits=logits[mask], labels=labels[mask])


def split_outputs(
    fn: Callable[[jax.Array], jax.Array],
    split: Any,
    data_config: Any,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
  """(`fn` of every image of `split`, padding dropped; their labels), in
  order, all computed in this one process (no sharding, no host sync)."""
  pipeline = pipelines.pipeline_for(
      split, data_config, process_index=0, process_count=1
  )
  outputs, labels = [], []
  for batch in pipeline.eval_batches(batch_size=batch_size):
    keep = np.asarray(batch["mask"])
    outputs.append(np.asarray(fn(batch["image"]))[keep])
    labels.append(np.asarray(batch["label"])[keep])
  return np.concatenate(outputs), np.concatenate(labels)


def known_groups(split: Any) -> np.ndarray | None:
  """The split's group keys, when they say which images belong together;
  None when it has none or every image is a group of its own (images lying
  directly in class folders): frames of one photograph would then count as
  independent, the very evidence a sharpening temperature must not rest on."""
  keys = getattr(split, "groups", None)
  if keys is None or len(set(keys)) == len(keys):
    return None
  return np.asarray(keys)


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
    val_groups: np.ndarray | None = None,
    started_from: tuple[str, Any] | None = None,
) -> dict[str, Any]:
  """Calibrates `params` on the validation split (STAGE/calibration.json:
  `calibrate`, guarded by `config.calibration`), then evaluates them on the
  test split into STAGE/report.json, report.md and reliability.png (and
  TensorBoard, given a `writer`).

  `memory_cache`: the run's decoded splits (`pipelines.pipeline_for`).
  `val_groups`: int [N], each validation example's group (source photograph,
  video or subfolder) in the split's order; default: the validation split's
  own (`known_groups`); None there: unknown, and the calibration does not
  sharpen (`calibrate.guarded_temperature`).
  `started_from`: (stage directory, parameters) of the classifier the stage
  started from (`stage_state.classifier_start`), scored on the same test
  split into the report's `started_from`: the accuracy before a fine-tune.
  """
  if val_groups is None and "val" in dataset.splits:
    val_groups = known_groups(dataset.splits["val"])
  evaluate_on = functools.partial(
      _split_logits,
      eval_step=steps.jit_eval_step(
          model, objectives.Objective("classification"), config.model.tta
      ),
      dataset=dataset,
      config=config,
      params=params,
      mesh=mesh,
      memory_cache=memory_cache,
  )
  if "val" not in dataset.splits:  # A folder tested whole.
    fitted = _kept_calibration(stage_dir, dataset.root)
  else:
    val = evaluate_on("val")
    if val_groups is not None and jax.process_count() > 1:
      # Several processes' logits are gathered interleaved, not in the
      # split's order the groups are given in.
      logging.warning(
          "the validation groups cannot be matched to the logits of %d"
          " processes: the calibration treats them as unknown",
          jax.process_count(),
      )
      val_groups = None
    fitted = calibrate.calibrate_stage(
        val.logits,
        val.labels,
        stage_dir,
        checkpoint_step=checkpoint_step,
        groups=val_groups,
        guard=calibrate.Guard.from_config(config),
    )
  result = evaluate_on("test")
  before = {}
  if started_from is not None:
    source, start_params = started_from
    start = evaluate_on("test", params=start_params)
    before = {
        "started_from": {
            "stage_dir": os.path.abspath(source),
            "accuracy": float(
                np.mean(np.argmax(start.logits, axis=1) == start.labels)
            ),
            **_per_group(dataset.splits["test"], start, dataset.class_names),
        }
    }
  scaled = calibration.report_block(
      result.logits, result.labels, fitted["temperature"]
  )
  report = reports.classification_report(
      result.confusion,
      dataset.class_names,
      checkpoint_step=checkpoint_step,
      extra={
          "stage": stage_name,
          "tta": config.model.tta,
          "split": "test",
          "data_root": dataset.root,
          "loss": result.metrics["loss"],
          "skipped_files": list(dataset.splits["test"].skipped),
          **_per_group(dataset.splits["test"], result, dataset.class_names),
          **before,
          "calibration": {
              "fitted": fitted["fitted"],
              "fitted_temperature": fitted["fitted_temperature"],
              "guard": fitted["guard"],
              "guard_reason": fitted["guard_reason"],
              "fitted_on": {
                  "split": "val",
                  "images": fitted["images"],
                  "groups": fitted["groups"],
              },
              **scaled,
          },
      },
  )
  diagram = calibration.reliability_diagram(
      scaled, f"{stage_name}, test split, checkpoint step {checkpoint_step}"
  )
  if jax.process_index() == 0:
    _write_report_files(report, diagram, stage_dir)
  if writer is not None:
    _write_test_summaries(
        writer, checkpoint_step, report, result, dataset.class_names, diagram
    )
  return report


def _kept_calibration(stage_dir: str, root: str) -> dict[str, Any]:
  """The stage's calibration.json, for a test folder without a validation
  split to fit one on: the temperature fitted on the training data's.

  Raises:
    UserError: the stage has none.
  """
  kept = workdirs.read_calibration(stage_dir)
  if kept is None:
    raise UserError(
        f"{root} has no val split to calibrate on, and {stage_dir} has no"
        f" {workdirs.CALIBRATION_FILE} to keep: evaluate the workdir on its"
        " own data first"
    )
  logging.info(
      "%s has no val split: keeping the temperature %.4g that %s fitted on"
      " its training data's",
      root,
      kept["temperature"],
      workdirs.CALIBRATION_FILE,
  )
  # What a calibration.json written before the guard existed lacks.
  return {
      "fitted_temperature": kept["temperature"] if kept["fitted"] else None,
      "guard": "none",
      "guard_reason": "",
      "groups": None,
      **kept,
  }


def _per_group(
    split: Any, result: EvalResult, class_names: tuple[str, ...]
) -> dict[str, Any]:
  """The report's accuracy per group of `split` (`group_accuracy`), for a
  split whose images have groups.

  Several processes gather the logits interleaved, not in the split's order
  the groups are listed in: then none.
  """
  groups = getattr(split, "groups", None)
  if (
      groups is None
      or jax.process_count() > 1
      or not np.array_equal(result.labels, split.labels)
  ):
    return {}
  return group_accuracy.report_entry(
      groups, result.labels, np.argmax(result.logits, axis=1), class_names
  )


def _write_report_files(
    report: dict[str, Any], reliability: np.ndarray, stage_dir: str
) -> None:
  """STAGE/report.json, report.md and reliability.png; says so in the log."""
  json_path, _ = reports.write_report(report, stage_dir)
  atomic_write(
      os.path.join(stage_dir, RELIABILITY_FILE),
      lambda f: Image.fromarray(reliability).save(f, "PNG"),
  )
  logging.info(
      "test accuracy %.4f on %d images, ECE %.4f (%.4f before temperature"
      " scaling): %s",
      report["accuracy"],
      report["num_examples"],
      report["calibration"]["ece_after"],
      report["calibration"]["ece_before"],
      json_path,
  )


def _split_logits(
    split: str,
    *,
    params: Any,
    eval_step: Callable[..., Any],
    dataset: DataSet,
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh,
    memory_cache: caches.MemoryCache | None,
) -> EvalResult:
  """`evaluate_split` of a classifier on `split`, keeping its logits."""
  return evaluate_split(
      params,
      pipelines.pipeline_for(
          dataset.splits[split], config.data, memory_cache=memory_cache
      ),
      eval_step,
      global_batch_size=config.eval_batch_size,
      mesh=mesh,
      keep_logits=True,
  )


def _write_test_summaries(
    writer: Any,
    step: int,
    report: dict[str, Any],
    result: EvalResult,
    class_names: tuple[str, ...],
    reliability: np.ndarray,
) -> None:
  """Test accuracy, loss, calibration, confusion matrix and reliability
  diagram, for TensorBoard."""
  writer.write_scalars(
      step,
      {
          "test_accuracy": report["accuracy"],
          "test_loss": result.metrics["loss"],
          "test_ece": report["calibration"]["ece_after"],
          "test_ece_uncalibrated": report["calibration"]["ece_before"],
          "temperature": report["calibration"]["temperature"],
      },
  )
  writer.write_images(
      step,
      {
          "test_confusion_matrix": visuals.confusion_image(
              result.confusion, class_names, f"test, checkpoint step {step}"
          )[None],
          "test_reliability_diagram": reliability[None],
      },
  )
  writer.flush()


def evaluate_workdir(
    workdir: str,
    data_config: ml_collections.ConfigDict | None,
    tta: str | None = None,
) -> None:
  """Refits the calibration and rebuilds the test report of every
  classification stage of `workdir` (`write_test_report`).

  The model and its preprocessing come from the checkpoints' metadata; the data
  come from `data_config` when given (another folder), else from the run's own.
  `tta`: test-time augmentation in place of the run's (`--tta`); since the
  calibration is refitted with it, run.json then records it, and the
  classifiers predict with it from then on.
  """
  run = workdirs.load_run(workdir)
  stage_names = workdirs.classifier_stages(workdir)
  config = workdirs.run_config(workdir, data_config)
  recorded_tta = workdirs.recorded(run, "tta")
  config.model.tta = tta or recorded_tta
  dataset = split_record.evaluation_set(
      workdir, config, data_config, run["class_names"]
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
  if config.model.tta != recorded_tta:
    workdirs.record_tta(workdir, config.model.tta)
    logging.info(
        "%s now records tta=%r (was %r): its classifiers predict, and"
        " export, with the test-time augmentation they were calibrated with",
        os.path.join(workdir, workdirs.RUN_FILE),
        config.model.tta,
        recorded_tta,
    )
