"""What a workdir holds, and rebuilding a model from it alone.

WORKDIR/run.json      what defines the model: class names, image size,
                      preprocessing, architecture; checked on every run so a
                      workdir never mixes two models; and the test-time
                      augmentation its classifiers were last evaluated,
                      calibrated and so predict with (`tta`)
WORKDIR/config.json   the resolved config of the latest run
WORKDIR/split.json    the groups of the data and the split trained on, with
                      the near-duplicates found between splits (written once,
                      by `training.split_record`)
WORKDIR/STAGE/        TensorBoard events, checkpoints/, summary.json when the
                      stage is complete; for classifiers report.json/.md,
                      reliability.png and calibration.json (the temperature
                      that scales their probabilities)
"""

import contextlib
import functools
import json
import os
from typing import Any, Callable, Iterator

import jax
import ml_collections
from absl import logging

import roadflax
from roadflax.models import objectives, roadnet
from roadflax.runs import checkpoints
from roadflax.errors import UserError
from roadflax.files import atomic_write_json, atomic_write_text, read_json
from roadflax.files import read_json_if_present

RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.json"
SUMMARY_FILE = "summary.json"
CALIBRATION_FILE = "calibration.json"
# Fields of run.json that must match for a checkpoint to be reused.
_IDENTITY = (
    "class_names",
    "image_size",
    "head_input",
    "head_units",
    "norm",
    "contrast",
    "mean",
    "std",
)
# What runs written before a key existed hold.
_EARLIER = {"norm": "none", "head_units": 4096, "tta": "none"}


def run_info(
    config: ml_collections.ConfigDict, class_names: tuple[str, ...]
) -> dict[str, Any]:
  """Everything needed to rebuild the model and preprocess its inputs."""
  return {
      "roadflax_version": roadflax.__version__,
      "class_names": list(class_names),
      "image_size": config.data.image_size,
      "contrast": config.data.contrast,
      "mean": list(config.data.mean),
      "std": list(config.data.std),
      "head_input": config.model.head_input,
      "dropout_rate": config.model.dropout_rate,
      "norm": config.model.norm,
      "head_units": config.model.head_units,
      # Not identity: the same parameters may be evaluated with another.
      "tta": config.model.tta,
  }


def check_compatible(
    found: dict[str, Any], expected: dict[str, Any], where: str
) -> None:
  differences = [
      f"{key} {recorded(found, key)!r} (this run: {expected[key]!r})"
      for key in _IDENTITY
      if recorded(found, key) != expected[key]
  ]
  if differences:
    raise UserError(
        f"{where} holds another model or class set: {'; '.join(differences)}; "
        "use a new --workdir"
    )


def prepare(
    workdir: str,
    config: ml_collections.ConfigDict,
    class_names: tuple[str, ...],
) -> dict[str, Any]:
  """Checks that `workdir` is new or holds this model; records the run."""
  info = run_info(config, class_names)
  run_path = os.path.join(workdir, RUN_FILE)
  if os.path.exists(run_path):
    found = read_json(run_path)
    check_compatible(found, info, workdir)
    if recorded(found, "tta") != info["tta"]:
      logging.warning(
          "model.tta changes from %r to %r: stages already complete keep"
          " the calibration and report of %r until --mode=evaluate"
          " --workdir=%s re-evaluates them",
          recorded(found, "tta"),
          info["tta"],
          recorded(found, "tta"),
          workdir,
      )
  elif os.path.isdir(workdir) and os.listdir(workdir):
    stages = [
        d
        for d in os.listdir(workdir)
        if os.path.isdir(os.path.join(workdir, d, "checkpoints"))
    ]
    if stages:
      raise UserError(
          f"{workdir} holds checkpoints ({', '.join(stages)}) but no"
          f" {RUN_FILE}; use a new --workdir"
      )
  if jax.process_index() == 0:
    atomic_write_json(run_path, info)
    atomic_write_text(
        os.path.join(workdir, CONFIG_FILE),
        config.to_json_best_effort(indent=2) + "\n",
    )
  return info


def record_tta(workdir: str, tta: str) -> None:
  """Records in run.json that the classifiers were evaluated and calibrated
  with test-time augmentation `tta`, so they predict with it."""
  run_path = os.path.join(workdir, RUN_FILE)
  if jax.process_index() == 0:
    atomic_write_json(run_path, {**read_json(run_path), "tta": tta})


def stage_complete(stage_dir: str) -> bool:
  return os.path.exists(os.path.join(stage_dir, SUMMARY_FILE))


def read_calibration(stage_dir: str) -> dict[str, Any] | None:
  """A classification stage's calibration.json (`temperature` and how it was
  fitted), or None for a stage calibrated by no run yet."""
  return read_json_if_present(os.path.join(stage_dir, CALIBRATION_FILE))


def resolve_stage_dir(init_from: str, workdir: str) -> str:
  """`init_from` names an earlier stage of this workdir, a stage directory,
  or another workdir (its last classification stage: a fine-tune)."""
  candidate = (
      init_from
      if os.path.isabs(init_from)
      or os.sep in init_from
      or not os.path.isdir(os.path.join(workdir, init_from))
      else os.path.join(workdir, init_from)
  )
  if not os.path.isdir(os.path.join(candidate, "checkpoints")) and (
      os.path.isfile(os.path.join(candidate, RUN_FILE))
  ):
    candidate = os.path.join(candidate, classifier_stage(candidate))
  if not os.path.isdir(os.path.join(candidate, "checkpoints")):
    raise UserError(
        f"init_from {init_from!r}: {candidate} has no checkpoints/ (name an"
        " earlier stage, a trained WORKDIR/STAGE directory or a trained"
        " WORKDIR)"
    )
  return candidate


def load_run(workdir: str) -> dict[str, Any]:
  path = os.path.join(workdir, RUN_FILE)
  if not os.path.exists(path):
    raise UserError(
        f"{workdir} is not a roadflax workdir (no {RUN_FILE}); train there"
        " first"
    )
  return read_json(path)


def run_config(
    workdir: str, data_config: ml_collections.ConfigDict | None
) -> ml_collections.ConfigDict:
  """The workdir's config, reading data from `data_config`'s location when given."""
  with open(os.path.join(workdir, CONFIG_FILE), encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  if data_config is not None:
    for key in (
        "source",
        "root",
        "cache_dir",
        "synthetic",
        "manual_dir",
        "data_dir",
        "variant",
        "tfds_name",
        "tfds_splits",
    ):
      config.data[key] = data_config[key]
  return config


def trained_stages(
    workdir: str, wanted: Callable[[objectives.Objective], bool]
) -> list[str]:
  """Stages of the workdir's config, in run order, whose objective is `wanted`
  and which have checkpoints."""
  config = run_config(workdir, None)
  return [
      name
      for name in config.stage_order
      if wanted(objectives.objective_from_config(config.stages[name]))
      and os.path.isdir(os.path.join(workdir, name, "checkpoints"))
  ]


def classifier_stages(workdir: str) -> list[str]:
  """Trained stages that classify (classification or joint), in run order.

  Cheap (two small JSON files and a few directory checks), so `serve` and the
  app check a workdir without loading any parameters.

  Raises:
    UserError: `workdir` is no roadflax workdir or has no trained classifier.
  """
  load_run(workdir)
  stages = trained_stages(workdir, lambda objective: objective.classifies)
  if not stages:
    raise UserError(
        f"{workdir} has no trained classification stage yet; train one first "
        f"(python main.py --config=... --workdir={workdir})"
    )
  return stages


def classifier_stage(workdir: str, stage: str | None = None) -> str:
  """`stage` when it is a trained classification stage of `workdir`, else the
  last one when `stage` is None.

  Raises:
    UserError: as `classifier_stages`, or `stage` is not one of them.
  """
  stages = classifier_stages(workdir)
  if stage is None:
    return stages[-1]
  if stage not in stages:
    raise UserError(
        f"{workdir} has no trained classification stage {stage!r} "
        f"(it has: {', '.join(stages)})"
    )
  return stage


def network(info: dict[str, Any]) -> roadnet.RoadNet:
  """The network that a run.json or checkpoint metadata describes."""
  return roadnet.RoadNet(
      num_classes=len(info["class_names"]),
      head_input=recorded(info, "head_input"),
      dropout_rate=recorded(info, "dropout_rate"),
      norm=recorded(info, "norm"),
      head_units=recorded(info, "head_units"),
  )


def recorded(info: dict[str, Any], key: str) -> Any:
  """`info[key]`, or what runs written before `key` existed hold."""
  return info.get(key, _EARLIER.get(key))


def best_trained_trees(stage_dir: str) -> list[str]:
  """The parameter trees a stage trained, from its best checkpoint's
  metadata alone (no parameters read).

  Raises:
    UserError: the stage has no checkpoint.
  """
  with _best_checkpoint(stage_dir) as (ckpts, step):
    return list(ckpts.restore_metadata(step)["trained_trees"])


@contextlib.contextmanager
def _best_checkpoint(
    stage_dir: str,
) -> Iterator[tuple[checkpoints.StageCheckpoints, int]]:
  """A stage's checkpoints, opened read-only, and its best step.

  Raises:
    UserError: the stage has no checkpoint.
  """
  ckpts = checkpoints.StageCheckpoints(
      os.path.join(stage_dir, "checkpoints"), read_only=True
  )
  try:
    step = ckpts.best_step()
    if step is None:
      raise UserError(
          f"no checkpoint in {ckpts.directory}: train this stage first"
      )
    yield ckpts, step
  finally:
    ckpts.close()


def restore_best(
    stage_dir: str, run: dict[str, Any], params: Any
) -> tuple[Any, dict[str, Any], int]:
  """(params, metadata, step) of a stage's best checkpoint, after checking that
  it holds the model `run` describes; `params` gives the tree and shapes. The
  params are the moving average's where the stage kept one
  (`StageCheckpoints.restore_params`).

  Raises:
    UserError: the stage has no checkpoint, or one of another model.
  """
  with _best_checkpoint(stage_dir) as (ckpts, step):
    metadata = ckpts.restore_metadata(step)
    check_compatible(metadata, run, ckpts.directory)
    return ckpts.restore_params(step, params), metadata, step


def load_best_params(
    stage_dir: str, run: dict[str, Any]
) -> tuple[Any, roadnet.RoadNet, int]:
  """(params, model, step) of a stage's best checkpoint, built from `run` alone."""
  model = network(run)
  abstract = jax.eval_shape(
      functools.partial(
          roadnet.init_params, model, image_size=run["image_size"]
      ),
      jax.random.key(0),
  )
  params, _, step = restore_best(stage_dir, run, abstract)
  return params, model, step
