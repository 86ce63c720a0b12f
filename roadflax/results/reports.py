"""Classification reports for an evaluated classifier stage.

Pure numpy; the numbers match scikit-learn's `classification_report` with
`zero_division=0`: a ratio whose denominator is zero is reported as 0.0.

A report is a JSON-able dict (see `classification_report`); `format_markdown`
renders it in the layout of sklearn's printed report and `write_report` writes
both forms atomically.
"""

import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from roadflax.files import atomic_write_text
from roadflax.results import group_accuracy

_METRICS = ("precision", "recall", "f1")
_RESERVED_KEYS = frozenset({
    "accuracy",
    "num_examples",
    "class_names",
    "checkpoint_step",
    "per_class",
    "macro_avg",
    "weighted_avg",
    "confusion_matrix",
})


def _as_class_ids(values: Any, what: str, num_classes: int) -> np.ndarray:
  """Returns `values` as a 1-D int64 array of ids in [0, num_classes)."""
  array = np.asarray(values)
  if array.ndim != 1:
    raise ValueError(f"{what} must be 1-D, got shape {array.shape}")
  if array.size == 0:
    return array.astype(np.int64)
  if not np.issubdtype(array.dtype, np.integer):
    raise ValueError(
        f"{what} must be integer class ids, got dtype {array.dtype}"
    )
  low, high = int(array.min()), int(array.max())
  if low < 0 or high >= num_classes:
    bad = low if low < 0 else high
    raise ValueError(
        f"{what} contains class id {bad}, outside [0, {num_classes})"
    )
  return array.astype(np.int64)


def confusion_matrix(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int
) -> np.ndarray:
  """Counts (true class, predicted class) pairs.

  Args:
    labels: 1-D integer array of true class ids in [0, num_classes).
    predictions: 1-D integer array of predicted class ids, same length.
    num_classes: number of classes; must be at least 1.

  Returns:
    int64 array [num_classes, num_classes]; entry [i, j] is the number of
    examples of true class i predicted as class j (rows = true class, columns
    = predicted class).

  Raises:
    ValueError: on a bad `num_classes`, non-1-D or non-integer inputs,
      mismatched lengths, or a class id outside [0, num_classes).
  """
  if isinstance(num_classes, bool) or not isinstance(
      num_classes, (int, np.integer)
  ):
    raise ValueError(f"num_classes must be an int, got {num_classes!r}")
  if num_classes < 1:
    raise ValueError(f"num_classes must be at least 1, got {num_classes}")
  num_classes = int(num_classes)
  true_ids = _as_class_ids(labels, "labels", num_classes)
  predicted_ids = _as_class_ids(predictions, "predictions", num_classes)
  if true_ids.shape != predicted_ids.shape:
    raise ValueError(
        f"labels and predictions differ in length: {true_ids.shape[0]} vs "
        f"{predicted_ids.shape[0]}"
    )
  flat = np.bincount(
      true_ids * num_classes + predicted_ids,
      minlength=num_classes * num_classes,
  )
  return flat.reshape(num_classes, num_classes).astype(np.int64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """Elementwise numerator / denominator, 0.0 where the denominator is 0."""
  numerator = np.asarray(numerator, dtype=np.float64)
  denominator = np.asarray(denominator, dtype=np.float64)
  out = np.zeros(np.broadcast(numerator, denominator).shape, dtype=np.float64)
  np.divide(numerator, denominator, out=out, where=denominator != 0)
  return out


def classification_report(
    confusion: np.ndarray,
    class_names: Sequence[str],
    *,
    checkpoint_step: int,
    extra: Mapping[str, Any] | None = None,
) -> dict:
  """Builds a JSON-able classification report from a confusion matrix.

  Args:
    confusion: [C, C] matrix of non-negative integer counts, rows = true
      class, columns = predicted class (as from `confusion_matrix`).
    class_names: C distinct names, in class-id order.
    checkpoint_step: training step of the evaluated checkpoint.
    extra: optional JSON-able entries merged at the top level (for example
      stage, workdir, split, skipped_files); they may not reuse a report key.

  Returns:
    A dict with keys accuracy (float), num_examples (int), class_names (list
    of str), checkpoint_step (int), per_class ({name: {precision, recall, f1,
    support}}), macro_avg and weighted_avg ({precision, recall, f1, support}),
    confusion_matrix (list of lists of int, rows = true class) and the
    entries of `extra`. Ratios with a zero denominator are 0.0; supports are
    ints.

  Raises:
    ValueError: if the matrix is not square, has negative or non-integer
      counts, disagrees with `class_names`, the names are not distinct, or
      `extra` reuses a report key.
  """
  matrix = _checked_counts(confusion, class_names)
  names = [str(name) for name in class_names]
  extra = dict(extra or {})
  clashes = sorted(_RESERVED_KEYS.intersection(extra))
  if clashes:
    raise ValueError(f"extra must not reuse report keys: {clashes}")

  true_positives = np.diag(matrix)
  support = matrix.sum(axis=1)
  predicted = matrix.sum(axis=0)
  total = int(matrix.sum())
  precision = _ratio(true_positives, predicted)
  recall = _ratio(true_positives, support)
  f1 = _ratio(2.0 * precision * recall, precision + recall)
  columns = {"precision": precision, "recall": recall, "f1": f1}

  per_class = {
      name: {
          **{metric: float(columns[metric][i]) for metric in _METRICS},
          "support": int(support[i]),
      }
      for i, name in enumerate(names)
  }
  report = {
      "accuracy": float(_ratio(np.sum(true_positives), total)),
      "num_examples": total,
      "class_names": names,
      "checkpoint_step": int(checkpoint_step),
      "per_class": per_class,
      "macro_avg": {
          **{metric: float(np.mean(columns[metric])) for metric in _METRICS},
          "support": total,
      },
      "weighted_avg": {
          **{
              metric: float(_ratio(np.sum(columns[metric] * support), total))
              for metric in _METRICS
          },
          "support": total,
      },
      "confusion_matrix": matrix.tolist(),
  }
  report.update(extra)
  return report


def _checked_counts(
    confusion: np.ndarray, class_names: Sequence[str]
) -> np.ndarray:
  """`confusion` as int64 counts, after checking it against `class_names`.

  Raises:
    ValueError: as `classification_report` says.
  """
  matrix = np.asarray(confusion)
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
    raise ValueError(
        f"confusion must be a square matrix, got shape {matrix.shape}"
    )
  if matrix.size and not np.issubdtype(matrix.dtype, np.integer):
    raise ValueError(
        f"confusion must hold integer counts, got dtype {matrix.dtype}"
    )
  if matrix.size and matrix.min() < 0:
    raise ValueError("confusion must not hold negative counts")
  names = [str(name) for name in class_names]
  if len(names) != matrix.shape[0]:
    raise ValueError(
        f"{len(names)} class names for a {matrix.shape[0]}-class "
        "confusion matrix"
    )
  if len(set(names)) != len(names):
    raise ValueError(f"class names must be distinct, got {names}")
  return matrix.astype(np.int64)


def _cell(text: Any) -> str:
  """Makes `text` safe inside a Markdown table cell."""
  return str(text).replace("|", "\\|").replace("\n", " ")


def _row(cells: Sequence[Any]) -> str:
  return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def format_markdown(report: dict) -> str:
  """Renders a report from `classification_report` as Markdown.

  The layout follows sklearn's printed report: one row per class, then
  accuracy (only f1-score and support filled), macro avg and weighted avg,
  numbers with 4 decimals; then the confusion matrix (rows = true class),
  a line with the number of examples and the checkpoint step, and one with
  the calibration when the report has one.

  Args:
    report: a dict as returned by `classification_report`.

  Returns:
    The Markdown text, ending in a newline.
  """
  names = list(report["class_names"])
  title = "Classification report"
  context = [str(report[key]) for key in ("stage", "split") if key in report]
  if context:
    title += " — " + ", ".join(context)

  def metric_row(label: str, entry: Mapping[str, Any]) -> str:
    return _row(
        [label]
        + [f"{entry[m]:.4f}" for m in _METRICS]
        + [int(entry["support"])]
    )

  lines = [f"# {_cell(title)}", ""]
  lines.append(_row(["class", "precision", "recall", "f1-score", "support"]))
  lines.append("|---|---:|---:|---:|---:|")
  for name in names:
    lines.append(metric_row(name, report["per_class"][name]))
  lines.append(
      _row([
          "**accuracy**",
          "",
          "",
          f"{report['accuracy']:.4f}",
          int(report["num_examples"]),
      ])
  )
  lines.append(metric_row("**macro avg**", report["macro_avg"]))
  lines.append(metric_row("**weighted avg**", report["weighted_avg"]))

  lines += ["", "## Confusion matrix", ""]
  lines.append(_row(["true \\ predicted"] + names))
  lines.append("|---|" + "---:|" * len(names))
  for name, counts in zip(names, report["confusion_matrix"]):
    lines.append(_row([f"**{name}**"] + [int(count) for count in counts]))

  lines += [
      "",
      (
          f"num_examples: {int(report['num_examples'])}, "
          f"checkpoint step: {int(report['checkpoint_step'])}"
      ),
  ]
  if "started_from" in report:
    start = report["started_from"]
    lines += [
        "",
        (
            f"Started from {start['stage_dir']}, which scored"
            f" {start['accuracy']:.1%} on these test images:"
            f" {report['accuracy'] - start['accuracy']:+.1%}."
        ),
    ]
  if "calibration" in report:
    lines += ["", _calibration_line(report["calibration"])]
  if "per_group" in report:
    lines += ["", *group_accuracy.markdown(report["per_group"], _row)]
  return "\n".join(lines) + "\n"


def _calibration_line(block: Mapping[str, Any]) -> str:
  """A report's `calibration` (`results.calibration.report_block`) in words."""
  split = block["fitted_on"]
  if not block["fitted"]:
    # A report written before the guard existed kept 1 for one reason only.
    why = (
        f" ({block['guard']}: {block['guard_reason']})"
        if "guard_reason" in block
        else (
            f", as all {split['images']} {split['split']} images are"
            " classified right"
        )
    )
    return (
        f"Calibration: temperature kept at 1{why};"
        f" expected calibration error ({block['num_bins']} bins)"
        f" {block['ece_before']:.4f}, NLL {block['nll_before']:.4f}"
        " (reliability.png)."
    )
  return (
      f"Calibration: temperature {block['temperature']:.4g}, fitted on"
      f" {split['images']} {split['split']} images; expected calibration"
      f" error ({block['num_bins']} bins) {block['ece_before']:.4f} before,"
      f" {block['ece_after']:.4f} after; NLL {block['nll_before']:.4f}"
      f" before, {block['nll_after']:.4f} after (reliability.png)."
  )


def _json_default(value: Any) -> Any:
  """Converts numpy scalars and arrays for `json.dump`."""
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_report(
    report: dict, directory: str, basename: str = "report"
) -> tuple[str, str]:
  """Writes DIRECTORY/BASENAME.json and DIRECTORY/BASENAME.md.

  Both texts are made before either file is touched, and each file is
  replaced atomically, so a failure (for example an unserialisable value)
  leaves any earlier report intact. Returns (json_path, markdown_path).
  """
  text = (
      json.dumps(report, indent=2, allow_nan=False, default=_json_default)
      + "\n"
  )
  markdown = format_markdown(report)
  json_path = os.path.join(directory, f"{basename}.json")
  markdown_path = os.path.join(directory, f"{basename}.md")
  atomic_write_text(json_path, text)
  atomic_write_text(markdown_path, markdown)
  return json_path, markdown_path
