"""Checks of a resolved config, so a wrong value fails at once with one clear line.

ml_collections already refuses unknown keys and values of the wrong type on
the command line; this checks what types cannot: names, ranges, stage order.
The data fields the pipelines read are checked by the pipelines' own rules
(`batching.Settings.from_config`).
"""

import os
import re
from typing import Any

import jax
import ml_collections

from roadflax.data import batching, groups
from roadflax.datasets import sources
from roadflax.models import objectives, optimizers, precision, roadnet
from roadflax.models import test_time
from roadflax.training import sharding, stage_plan
from roadflax.errors import UserError
from roadflax.runs import workdirs


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise UserError(message)


def _one_of(value: Any, allowed: tuple[str, ...], key: str) -> None:
  _require(
      value in allowed,
      f"--config.{key}={value!r} is not one of {', '.join(allowed)}",
  )


def check_config(config: ml_collections.ConfigDict) -> None:
  _check_data(config.data)
  _one_of(config.model.head_input, roadnet.HEAD_INPUTS, "model.head_input")
  _one_of(config.model.norm, roadnet.NORMS, "model.norm")
  _one_of(config.model.dtype, precision.DTYPES, "model.dtype")
  _one_of(config.model.tta, test_time.TTAS, "model.tta")
  health = config.health
  _require(
      health.window_steps >= 0,
      f"--config.health.window_steps={health.window_steps} must be >= 0",
  )
  _require(
      0 < health.collapse_fraction <= 1,
      f"--config.health.collapse_fraction={health.collapse_fraction} must be in"
      " (0, 1]",
  )
  _require(
      health.activation_growth > 1,
      f"--config.health.activation_growth={health.activation_growth} must"
      " be > 1",
  )
  _check_calibration(config.calibration)
  _require(
      config.model.head_units >= 1,
      f"--config.model.head_units={config.model.head_units} must be at least 1",
  )
  _require(
      0 <= config.model.dropout_rate < 1,
      f"--config.model.dropout_rate={config.model.dropout_rate} must be in"
      " [0, 1)",
  )
  for key in ("eval_batch_size", "log_every_steps", "keep_checkpoints"):
    _require(
        config[key] >= 1, f"--config.{key}={config[key]} must be at least 1"
    )
  for key in ("checkpoint_every_steps", "profile_steps"):
    _require(config[key] >= 0, f"--config.{key}={config[key]} must be >= 0")
  order = tuple(config.stage_order)
  _require(
      len(order) > 0, "--config.stage_order is empty: name at least one stage"
  )
  for position, name in enumerate(order):
    _require(
        name in config.stages,
        f"--config.stage_order names {name!r}, which is not in config.stages "
        f"({', '.join(config.stages.keys())})",
    )
    _require(
        name not in order[:position],
        f"--config.stage_order names {name!r} twice",
    )
    _check_stage(
        config.stages[name], f"stages.{name}", earlier=order[:position]
    )
  # Before any stage runs, not when a later one starts.
  sharding.check_batch_size(config.eval_batch_size, "eval_batch_size")
  for name in order:
    stage, key = config.stages[name], f"stages.{name}.batch_size"
    sharding.check_batch_size(stage.batch_size, key)
    parts = stage.accumulate_steps * jax.device_count()
    _require(
        stage.batch_size % parts == 0,
        f"--config.{key}={stage.batch_size} does not split into"
        f" {stage.accumulate_steps} micro-batches (accumulate_steps) over"
        f" {jax.device_count()} device(s): set a multiple of {parts}",
    )


def _check_data(data: ml_collections.ConfigDict) -> None:
  _one_of(data.source, tuple(sources.SOURCES), "data.source")
  if data.source == "folder":
    _require(
        bool(data.root),
        "data.source is 'folder' but no data.root is given: "
        "add --config.data.root=/path/to/ROOT (with the class folders, or"
        " train/, val/ and test/, inside)",
    )
  _check_grouping(data)
  roadnet.check_image_size(data.image_size, data.image_size)
  batching.Settings.from_config(data)
  _require(
      not (data.cache == "memory" and data.source in ("rscd", "tfds")),
      f"--config.data.cache='memory' would hold all of {data.source} in RAM;"
      " use 'disk'",
  )


def _check_grouping(data: ml_collections.ConfigDict) -> None:
  """How folders are grouped and split (`data.grouped_folder`)."""
  _one_of(data.group_by, groups.GROUP_RULES, "data.group_by")
  if data.group_by == "prefix":
    try:
      re.compile(data.group_pattern)
    except re.error as error:
      raise UserError(
          f"--config.data.group_pattern={data.group_pattern!r} is not a"
          f" regular expression: {error}"
      ) from None
  for key in ("val_fraction", "test_fraction"):
    _require(
        0 < data[key] < 1,
        f"--config.data.{key}={data[key]} must be in (0, 1)",
    )
  _require(
      data.val_fraction + data.test_fraction < 1,
      f"--config.data.val_fraction={data.val_fraction} and test_fraction="
      f"{data.test_fraction} leave nothing to train on: keep their sum below 1",
  )
  _require(
      data.near_duplicate_images >= 0,
      f"--config.data.near_duplicate_images={data.near_duplicate_images} must"
      " be >= 0 (0 = no check)",
  )


def _check_calibration(calibration: ml_collections.ConfigDict) -> None:
  """The temperature-scaling guard's thresholds (`training.calibrate`)."""
  for key in ("min_images", "min_groups_to_sharpen"):
    _require(
        calibration[key] >= 1,
        f"--config.calibration.{key}={calibration[key]} must be at least 1",
    )
  folds = calibration.held_out_folds
  _require(
      folds == 0 or folds >= 2,
      f"--config.calibration.held_out_folds={folds} must be 0 (no held-out"
      " check) or at least 2",
  )


def _check_stage(
    stage: ml_collections.ConfigDict, key: str, earlier: tuple[str, ...]
) -> None:
  _one_of(stage.objective, objectives.OBJECTIVES, f"{key}.objective")
  _one_of(stage.optimizer, optimizers.OPTIMIZERS, f"{key}.optimizer")
  _one_of(stage.schedule, optimizers.SCHEDULES, f"{key}.schedule")
  _require(stage.learning_rate > 0, f"--config.{key}.learning_rate must be > 0")
  _require(
      stage.batch_size >= 1, f"--config.{key}.batch_size must be at least 1"
  )
  _require(
      stage.epochs >= 1 or stage.steps >= 1,
      f"--config.{key}: set epochs >= 1 or steps >= 1",
  )
  _one_of(stage.select, stage_plan.SELECTIONS, f"{key}.select")
  if stage.data.source is not None:
    _one_of(stage.data.source, tuple(sources.SOURCES), f"{key}.data.source")
    _require(
        stage.objective in ("reconstruction", "contrastive")
        or stage.pseudo_label_threshold > 0,
        f"--config.{key}.data.source={stage.data.source}: data of a stage's"
        " own has no labels, so its objective must be reconstruction or"
        f" contrastive (not {stage.objective}), or set"
        f" --config.{key}.pseudo_label_threshold to label it by a classifier",
    )
    _require(
        stage.data.source != "folder" or bool(stage.data.root),
        f"--config.{key}.data.source=folder needs"
        f" --config.{key}.data.root=FOLDER (images or videos, at any depth)",
    )
  if stage.pseudo_label_threshold:
    _require(
        0 < stage.pseudo_label_threshold <= 1,
        f"--config.{key}.pseudo_label_threshold must be in (0, 1] (a"
        " probability; 0 = off)",
    )
    _require(
        stage.objective == "classification"
        and stage.data.source is not None
        and bool(stage.init_from),
        f"--config.{key}.pseudo_label_threshold: pseudo-labels need a"
        " classification stage with data of its own (the unlabelled pool,"
        f" --config.{key}.data.source=folder) and --config.{key}.init_from"
        " naming the classifier that labels it",
    )
  _require(
      stage.data.video_every_seconds > 0,
      f"--config.{key}.data.video_every_seconds must be above 0",
  )
  for field in (
      "steps",
      "min_steps",
      "early_stopping_patience",
      "select_min_val_images",
  ):
    _require(
        stage[field] >= 0, f"--config.{key}.{field}={stage[field]} must be >= 0"
    )
  _require(
      stage.accumulate_steps >= 1,
      f"--config.{key}.accumulate_steps={stage.accumulate_steps} must be at"
      " least 1",
  )
  _require(
      0 <= stage.ema_decay < 1,
      f"--config.{key}.ema_decay={stage.ema_decay} must be in [0, 1) (0 = off)",
  )
  _one_of(stage.corruption, objectives.CORRUPTIONS, f"{key}.corruption")
  _require(
      stage.corruption_amount >= 0
      and (stage.corruption != "mask" or stage.corruption_amount < 1),
      f"--config.{key}.corruption_amount={stage.corruption_amount} must be >= 0"
      " (and < 1 for mask: the share of patches hidden)",
  )
  for field in (
      "warmup_epochs",
      "weight_decay",
      "grad_clip_norm",
      "label_smoothing",
      "reconstruction_weight",
  ):
    _require(
        stage[field] >= 0, f"--config.{key}.{field}={stage[field]} must be >= 0"
    )
  _require(
      stage.label_smoothing < 1, f"--config.{key}.label_smoothing must be < 1"
  )
  init_from = stage.init_from
  _require(
      init_from is not None,
      f"--config.{key}.init_from=WORKDIR: name the trained run this config"
      " fine-tunes",
  )
  if init_from and not (
      os.sep in init_from
      or os.path.isabs(init_from)
      or os.path.isfile(os.path.join(init_from, workdirs.RUN_FILE))
  ):
    _require(
        init_from in earlier,
        f"--config.{key}.init_from={init_from!r} must name an earlier stage "
        f"({', '.join(earlier) or 'none'}), a WORKDIR/STAGE path or a"
        " trained WORKDIR",
    )
