"""Temperature scaling (Guo et al., 2017): the one temperature T > 0 by which
a classifier's logits are divided before the softmax, fitted on the
validation split and kept in STAGE/calibration.json.

T minimises the mean negative log-likelihood of softmax(logits / T) over the
split's examples. That NLL is convex in 1 / T, so it has one minimum; it is
searched over log T in [log `MIN_TEMPERATURE`, log `MAX_TEMPERATURE`] with
scipy's bounded Brent method, on the host, in float64. When every example's
top class is right, the NLL keeps falling as T -> 0 and no temperature is
best: T stays 1 (`fitted` false in calibration.json), rather than taking
whatever small value the search stops at, which would make every later
prediction near-certain.
"""

import math
import os
from typing import Any

import jax
import numpy as np
import scipy.optimize
from absl import logging

from roadflax.files import atomic_write_json
from roadflax.results import calibration
from roadflax.runs import workdirs

MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 100.0


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


def calibrate_stage(
    logits: np.ndarray,
    labels: np.ndarray,
    stage_dir: str,
    *,
    checkpoint_step: int,
) -> dict[str, Any]:
  """Fits T on a stage's validation logits and writes calibration.json.

  Args:
    logits: of every validation example, once, by the stage's best
      checkpoint (the parameters predictions use).
    labels: their true classes.
    stage_dir: where calibration.json goes (written by process 0).
    checkpoint_step: the checkpoint's step, recorded.

  Returns:
    What calibration.json holds: temperature, fitted (false: kept at 1),
    split, images, checkpoint_step, num_bins and the validation NLL and ECE
    before and after scaling.
  """
  temperature = fit_temperature(logits, labels)
  record = {
      "temperature": temperature,
      "fitted": not _all_right(logits, labels),
      "split": "val",
      "images": int(len(labels)),
      "checkpoint_step": int(checkpoint_step),
      "num_bins": calibration.NUM_BINS,
      **calibration.scores(logits, labels, temperature),
  }
  _log(record)
  if jax.process_index() == 0:
    atomic_write_json(
        os.path.join(stage_dir, workdirs.CALIBRATION_FILE), record
    )
  return record


def _all_right(logits: np.ndarray, labels: np.ndarray) -> bool:
  return bool(np.all(np.argmax(logits, axis=1) == labels))


def _log(record: dict[str, Any]) -> None:
  """Says what the fit found, and warns where it tells little."""
  if not record["fitted"]:
    logging.warning(
        "all %d validation images are classified right: their NLL keeps"
        " falling as the temperature falls, no temperature is best, so it"
        " stays 1",
        record["images"],
    )
    return
  logging.info(
      "temperature %.4g fitted on %d validation images: NLL %.4f -> %.4f,"
      " ECE %.4f -> %.4f",
      record["temperature"],
      record["images"],
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
