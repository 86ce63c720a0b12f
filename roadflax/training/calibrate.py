"""Temperature scaling (Guo et al., 2017): the one temperature T > 0 by which
a classifier's logits are divided before the softmax, fitted on the
validation split, used only as far as that split justifies it, and kept in
STAGE/calibration.json.

The fit: T minimises the mean negative log-likelihood of softmax(logits / T)
over the split's examples. That NLL is convex in 1 / T, so it has one
minimum; it is searched over log T in [log `MIN_TEMPERATURE`, log
`MAX_TEMPERATURE`] with scipy's bounded Brent method, on the host, in
float64.

The guard (`Guard`, from `config.calibration`): a fitted T says how sure the
model should be on images like the validation split's, and frames cut from
one photograph or video are not independent, so the evidence is the number
of sources, not of frames. A T below 1 makes every answer more confident,
which costs most when it is wrong (measured: T 0.27-0.45 fitted on frames of
one photograph per class took the ECE of other photographs from 8.9% to
23.7%). So T stays 1, and calibration.json's `guard` says why, when

  all_right         every example's top class is right: the NLL keeps
                    falling as T -> 0, no temperature is best;
  too_few_images    the split has fewer than `min_images` examples;

and a fitted T < 1 is bounded at 1 (T = max(T_fit, 1)) when

  groups_unknown    the examples' groups (source photograph, video,
                    subfolder) are not given;
  too_few_groups    a class has fewer than `min_groups_to_sharpen` groups;
  no_held_out_gain  (`held_out_folds` > 0) temperatures fitted with each
                    fold of whole groups left out do not lower the NLL of
                    the groups left out (`held_out_scores`).

A fitted T >= 1 only softens, and is used whenever there are enough
examples. Guard "none": the fitted T is used.
"""

import dataclasses
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import scipy.optimize
from absl import logging

from roadflax.files import atomic_write_json
from roadflax.results import calibration
from roadflax.runs import workdirs

MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 100.0
# calibration.json's `guard`: why T is what it is (the module's docstring).
GUARDS = (
    "none",
    "all_right",
    "too_few_images",
    "groups_unknown",
    "too_few_groups",
    "no_held_out_gain",
)


@dataclasses.dataclass(frozen=True)
class Guard:
  """When a fitted temperature is used: `config.calibration`."""

  # The defaults are configs/default.py's `config.calibration` (a test keeps
  # them equal): a workdir trained before the guard existed gets them.
  min_images: int = 100
  min_groups_to_sharpen: int = 5
  held_out_folds: int = 5  # 0: no held-out check

  @classmethod
  def from_config(
      cls, config: ml_collections.ConfigDict | None = None
  ) -> "Guard":
    """`config.calibration`, the default for each key it lacks: a workdir
    trained before the guard existed is evaluated with the defaults (as is
    None)."""
    if config is None:
      return cls()
    return cls(**dict(config.get("calibration", {})))


@dataclasses.dataclass(frozen=True)
class Decision:
  """The temperature used, the one fitted, and why they differ."""

  temperature: float
  fitted_temperature: float | None  # None: every example right, no fit
  guard: str  # one of GUARDS
  reason: str  # `guard` in a sentence
  groups: int | None  # distinct groups among the examples; None: unknown
  held_out: dict[str, Any] | None  # `held_out_scores`, where it was run


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
  """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] of least NLL; 1 when every
  example's top class is right (the module's docstring).

  Args:
    logits: [N, classes], N >= 1.
    labels: int [N], the true classes.
  """
  if _all_right(logits, labels):
    return 1.0
  bounds = (math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE))
  result = scipy.optimize.minimize_scalar(
      lambda log_t: calibration.negative_log_likelihood(
          logits, labels, math.exp(log_t)
      ),
      bounds=bounds,
      method="bounded",
      options={"xatol": 1e-5},
  )
  return math.exp(float(result.x))


def guarded_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    guard: Guard | None = None,
) -> Decision:
  """The fitted temperature where the split justifies it, else 1 (the
  module's docstring).

  Args:
    logits: [N, classes], N >= 1.
    labels: int [N], the true classes.
    groups: int or str [N], each example's group (its source photograph,
      video or subfolder), in the order of `logits`; None: unknown.
    guard: the thresholds (default: `Guard()`, default.py's).
  """
  guard = guard or Guard.from_config()
  logits, labels = np.asarray(logits), np.asarray(labels)
  images = len(labels)
  groups = _checked_groups(groups, images)
  num_groups = None if groups is None else len(np.unique(groups))

  def decision(temperature, fitted, name, reason, held_out=None):
    return Decision(temperature, fitted, name, reason, num_groups, held_out)

  if _all_right(logits, labels):
    return decision(
        1.0,
        None,
        "all_right",
        f"all {images} validation images are classified right: their NLL"
        " keeps falling as the temperature falls, no temperature is best,"
        " so it stays 1",
    )
  fitted = fit_temperature(logits, labels)
  if images < guard.min_images:
    return decision(
        1.0,
        fitted,
        "too_few_images",
        f"{images} validation images are fewer than calibration.min_images"
        f"={guard.min_images}, too few to pin a temperature down (fitted"
        f" {fitted:.3g}), so it stays 1",
    )
  if fitted >= 1:
    return decision(fitted, fitted, "none", "the fitted temperature is used")
  sharper = (
      f"the fitted temperature {fitted:.3g} would make answers more confident"
  )
  if groups is None:
    return decision(
        1.0,
        fitted,
        "groups_unknown",
        f"{sharper}, and the validation images' groups (source photograph,"
        " video or folder) are unknown: frames of one source are not"
        " independent evidence, so it is bounded at 1",
    )
  fewest = int(_groups_per_class(labels, groups, logits.shape[1]).min())
  if fewest < guard.min_groups_to_sharpen or num_groups < 2:
    return decision(
        1.0,
        fitted,
        "too_few_groups",
        f"{sharper}, but the validation images come from {num_groups}"
        f" groups, {fewest} of the class with fewest, and sharpening needs"
        f" {guard.min_groups_to_sharpen} per class"
        " (calibration.min_groups_to_sharpen), so it is bounded at 1",
    )
  if not guard.held_out_folds:
    return decision(fitted, fitted, "none", "the fitted temperature is used")
  held_out = held_out_scores(logits, labels, groups, guard.held_out_folds)
  if held_out["nll_after"] < held_out["nll_before"]:
    return decision(
        fitted,
        fitted,
        "none",
        "the fitted temperature is used: fitted with whole groups held out,"
        f" it lowers their NLL {held_out['nll_before']:.4f} ->"
        f" {held_out['nll_after']:.4f} ({held_out['folds']} folds)",
        held_out,
    )
  return decision(
      1.0,
      fitted,
      "no_held_out_gain",
      f"{sharper}, but fitted with whole groups held out it does not lower"
      f" their NLL ({held_out['nll_before']:.4f} at T = 1,"
      f" {held_out['nll_after']:.4f} scaled; {held_out['folds']} folds of"
      f" {num_groups} groups), so it is bounded at 1",
      held_out,
  )


def held_out_scores(
    logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int
) -> dict[str, Any]:
  """Whether temperature scaling carries over to new groups: the groups are
  dealt into `folds` folds (fewer with fewer groups), T is fitted with each
  fold left out and applied to that fold; NLL and ECE over all examples,
  each scaled by the T of its fold ("after") or not ("before").

  Args:
    logits: [N, classes].
    labels: int [N].
    groups: int or str [N], at least 2 distinct.
    folds: at most this many folds, >= 2.
  """
  logits, labels = np.asarray(logits), np.asarray(labels)
  fold = _group_folds(labels, np.asarray(groups), folds)
  count = int(fold.max()) + 1
  temperatures = [
      fit_temperature(logits[fold != k], labels[fold != k])
      for k in range(count)
  ]
  scaled = np.asarray(logits, np.float64) / np.take(temperatures, fold)[:, None]
  return {
      "folds": count,
      "temperatures": temperatures,
      "nll_before": calibration.negative_log_likelihood(logits, labels),
      "nll_after": calibration.negative_log_likelihood(scaled, labels),
      "ece_before": calibration.expected_calibration_error(
          calibration.softmax(logits), labels
      ),
      "ece_after": calibration.expected_calibration_error(
          calibration.softmax(scaled), labels
      ),
  }


def calibrate_stage(
    logits: np.ndarray,
    labels: np.ndarray,
    stage_dir: str,
    *,
    checkpoint_step: int,
    groups: np.ndarray | None = None,
    guard: Guard | None = None,
) -> dict[str, Any]:
  """Fits T on a stage's validation logits, guards it (`guarded_temperature`)
  and writes calibration.json.

  Args:
    logits: of every validation example, once, by the stage's best
      checkpoint (the parameters predictions use).
    labels: their true classes.
    stage_dir: where calibration.json goes (written by process 0).
    checkpoint_step: the checkpoint's step, recorded.
    groups: int or str [N], each example's group (source photograph, video
      or subfolder) in the order of `logits`; None: unknown (T < 1 is not
      used).
    guard: the thresholds (default: default.py's `config.calibration`).

  Returns:
    What calibration.json holds: temperature (the one used), fitted (whether
    that is the fitted one), fitted_temperature (None: every example right),
    guard and guard_reason (why they differ), split, images, groups (how
    many; None: unknown), checkpoint_step, num_bins, the guard's settings,
    held_out (`held_out_scores`, where run) and the validation NLL and ECE
    before and after scaling by the temperature used.
  """
  guard = guard or Guard.from_config()
  decided = guarded_temperature(logits, labels, groups, guard)
  record = {
      "temperature": decided.temperature,
      "fitted": decided.guard == "none",
      "fitted_temperature": decided.fitted_temperature,
      "guard": decided.guard,
      "guard_reason": decided.reason,
      "split": "val",
      "images": int(len(labels)),
      "groups": decided.groups,
      "checkpoint_step": int(checkpoint_step),
      "num_bins": calibration.NUM_BINS,
      "settings": dataclasses.asdict(guard),
      "held_out": decided.held_out,
      **calibration.scores(logits, labels, decided.temperature),
  }
  _log(record)
  if jax.process_index() == 0:
    atomic_write_json(
        os.path.join(stage_dir, workdirs.CALIBRATION_FILE), record
    )
  return record


def _checked_groups(groups: Any, images: int) -> np.ndarray | None:
  """`groups` as int ids 0, 1, ... (keys may be ints or strings)."""
  if groups is None:
    return None
  groups = np.asarray(groups)
  if groups.shape != (images,) or groups.dtype.kind not in "iuU":
    raise ValueError(
        f"groups must be int or str [{images}], one per example; got"
        f" {groups.dtype} {list(groups.shape)}"
    )
  return np.unique(groups, return_inverse=True)[1].reshape(-1)


def _groups_per_class(
    labels: np.ndarray, groups: np.ndarray, num_classes: int
) -> np.ndarray:
  """Distinct groups among each class's examples, int [num_classes]."""
  pairs = np.unique(np.stack([np.asarray(labels), groups], axis=1), axis=0)
  return np.bincount(pairs[:, 0], minlength=num_classes)


def _group_folds(
    labels: np.ndarray, groups: np.ndarray, folds: int
) -> np.ndarray:
  """Each example's fold, whole groups to a fold: the groups, ordered by
  their commonest class, are dealt in turn, so that every fold holds groups
  of every class that has enough."""
  ids, index = np.unique(groups, return_inverse=True)
  commonest = np.array(
      [np.bincount(labels[index == g]).argmax() for g in range(len(ids))]
  )
  fold_of_group = np.empty(len(ids), np.int64)
  fold_of_group[np.lexsort((ids, commonest))] = np.arange(len(ids)) % min(
      folds, len(ids)
  )
  return fold_of_group[index.reshape(-1)]


def _all_right(logits: np.ndarray, labels: np.ndarray) -> bool:
  return bool(np.all(np.argmax(logits, axis=1) == labels))


def _log(record: dict[str, Any]) -> None:
  """Says in one line what T is and why; warns where the fit tells little."""
  if not record["fitted"]:
    logging.warning(
        "temperature kept at 1 (guard %s): %s",
        record["guard"],
        record["guard_reason"],
    )
    return
  logging.info(
      "temperature %.4g fitted on %d validation images (%s groups): NLL"
      " %.4f -> %.4f, ECE %.4f -> %.4f",
      record["temperature"],
      record["images"],
      "unknown" if record["groups"] is None else record["groups"],
      record["nll_before"],
      record["nll_after"],
      record["ece_before"],
      record["ece_after"],
  )
  if (
      not MIN_TEMPERATURE * 1.01
      < record["temperature"]
      < MAX_TEMPERATURE / 1.01
  ):
    logging.warning(
        "the fitted temperature %.4g is at an end of its range (%g to %g):"
        " the %d validation images hardly pin it down",
        record["temperature"],
        MIN_TEMPERATURE,
        MAX_TEMPERATURE,
        record["images"],
    )
