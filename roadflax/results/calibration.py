"""How far a classifier's confidence is from its accuracy: temperature-scaled
probabilities, the negative log-likelihood, the expected calibration error
and the reliability diagram.

Expected calibration error (ECE; Naeini et al. 2015, Guo et al. 2017): each
example's confidence, its top probability, falls in one of `NUM_BINS` = 15
equal-width bins (0, 1/15], (1/15, 2/15], ..., (14/15, 1]; ECE is
sum over bins of (n_b / n) * |accuracy_b - confidence_b|, where accuracy_b is
the share of the bin's examples whose top class is right and confidence_b
their mean confidence: 0 when the model is right as often as it is sure.

Temperature scaling (Guo et al. 2017) divides the logits by one temperature
T > 0 before the softmax: the top class stays, T > 1 softens an overconfident
model's probabilities, T < 1 sharpens an underconfident one's.

Host-side numpy in float64; the diagram is drawn off-screen (Agg).
"""

from typing import Any, Sequence

import numpy as np
import scipy.special
from matplotlib.figure import Figure

from roadflax.results import visuals

NUM_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
  """softmax(logits / temperature) over the last axis, float64."""
  return scipy.special.softmax(
      np.asarray(logits, np.float64) / temperature, axis=-1
  )


def negative_log_likelihood(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> float:
  """Mean -log p(true class) of softmax(logits / temperature)."""
  log_p = scipy.special.log_softmax(
      np.asarray(logits, np.float64) / temperature, axis=-1
  )
  return float(-np.mean(log_p[np.arange(len(labels)), labels]))


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = NUM_BINS
) -> list[dict[str, Any]]:
  """Per equal-width confidence bin: its bounds, how many examples fell in
  it, their mean confidence and accuracy (None for an empty bin)."""
  probabilities = np.asarray(probabilities, np.float64)
  confidence = probabilities.max(axis=1)
  correct = probabilities.argmax(axis=1) == np.asarray(labels)
  index = np.clip(
      np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1
  )
  counts = np.bincount(index, minlength=num_bins)
  confidences = np.bincount(index, weights=confidence, minlength=num_bins)
  rights = np.bincount(index, weights=correct, minlength=num_bins)
  return [
      {
          "lower": b / num_bins,
          "upper": (b + 1) / num_bins,
          "count": int(counts[b]),
          "confidence": (
              float(confidences[b] / counts[b]) if counts[b] else None
          ),
          "accuracy": float(rights[b] / counts[b]) if counts[b] else None,
      }
      for b in range(num_bins)
  ]


def binned_error(bins: Sequence[dict[str, Any]]) -> float:
  """The expected calibration error of `reliability_bins`."""
  total = sum(b["count"] for b in bins)
  return float(
      sum(
          b["count"] / total * abs(b["accuracy"] - b["confidence"])
          for b in bins
          if b["count"]
      )
  )


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = NUM_BINS
) -> float:
  """ECE over `num_bins` equal-width bins (the module's docstring)."""
  return binned_error(reliability_bins(probabilities, labels, num_bins))


def scores(
    logits: np.ndarray, labels: np.ndarray, temperature: float
) -> dict[str, float]:
  """NLL and ECE of the plain softmax and of the temperature-scaled one."""
  return {
      "nll_before": negative_log_likelihood(logits, labels),
      "nll_after": negative_log_likelihood(logits, labels, temperature),
      "ece_before": expected_calibration_error(softmax(logits), labels),
      "ece_after": expected_calibration_error(
          softmax(logits, temperature), labels
      ),
  }


def report_block(
    logits: np.ndarray, labels: np.ndarray, temperature: float
) -> dict[str, Any]:
  """A test report's `calibration`: the temperature, NLL and ECE before and
  after it, and the reliability bins of both."""
  return {
      "temperature": float(temperature),
      "num_bins": NUM_BINS,
      **scores(logits, labels, temperature),
      "bins": {
          "before": reliability_bins(softmax(logits), labels),
          "after": reliability_bins(softmax(logits, temperature), labels),
      },
  }


def reliability_diagram(block: dict[str, Any], title: str = "") -> np.ndarray:
  """`report_block`'s bins drawn as two reliability diagrams, before and
  after temperature scaling: per bin, its accuracy as a bar over the bin,
  the gap to its mean confidence shaded, the diagonal of a calibrated model,
  and its number of examples above the bar; uint8 RGB [H, W, 3]."""
  figure = Figure(figsize=(9.0, 4.4), dpi=80)
  panels = figure.subplots(1, 2, sharey=True)
  width = 1 / block["num_bins"]
  for axes, (when, label) in zip(
      panels,
      (("before", "T = 1"), ("after", f"T = {block['temperature']:.3g}")),
  ):
    bins = [b for b in block["bins"][when] if b["count"]]
    lowers = [b["lower"] for b in bins]
    accuracy = [b["accuracy"] for b in bins]
    confidence = [b["confidence"] for b in bins]
    axes.bar(lowers, accuracy, width, align="edge", color="#4c72b0")
    axes.bar(
        lowers,
        np.subtract(confidence, accuracy),
        width,
        bottom=accuracy,
        align="edge",
        color="#dd8452",
        alpha=0.5,
    )
    axes.plot([0, 1], [0, 1], "k--", linewidth=1)
    for b in bins:
      axes.text(
          b["lower"] + width / 2,
          min(b["accuracy"], 0.93) + 0.02,
          str(b["count"]),
          ha="center",
          fontsize=7,
      )
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence")
    axes.set_title(
        f"{when} ({label}): ECE {block[f'ece_{when}']:.4f}", fontsize=10
    )
  panels[0].set_ylabel("accuracy (bars); gap to confidence shaded")
  if title:
    figure.suptitle(title, fontsize=10)
  figure.tight_layout()
  return visuals.figure_pixels(figure)
