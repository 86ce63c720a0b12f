"""Accuracy per group of a test split: the report's `per_group`.

A pooled accuracy averages over drives, days or photographs; one that fails
(a wet day, a different camera) is hidden in it. Groups are those the data
source gives each image (`data.groups`).
"""

from typing import Any, Callable, Mapping, Sequence

import numpy as np

# Groups shown in report.md, worst first; report.json holds them all.
MARKDOWN_GROUPS = 30


def per_group(
    labels: np.ndarray,
    predictions: np.ndarray,
    groups: Sequence[str],
    class_names: Sequence[str],
) -> dict[str, dict[str, Any]]:
  """Accuracy over each group's images (a drive, a day, a photograph): one
  group that fails shows here where the pooled accuracy hides it.

  Args:
    labels, predictions: int [N], true and predicted class ids.
    groups: [N], each example's group key.
    class_names: names of the class ids.

  Returns:
    {group: {images, correct, accuracy, classes (names of its true
    classes)}}, the lowest accuracy first (then by name).
  """
  keys, group_of = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
  right = np.asarray(labels) == np.asarray(predictions)
  images = np.bincount(group_of, minlength=len(keys))
  correct = np.bincount(group_of, weights=right, minlength=len(keys))
  per_group = {
      str(key): {
          "images": int(images[g]),
          "correct": int(correct[g]),
          "accuracy": float(correct[g] / images[g]),
          "classes": [
              str(class_names[c])
              for c in np.unique(np.asarray(labels)[group_of == g])
          ],
      }
      for g, key in enumerate(keys)
  }
  return dict(
      sorted(per_group.items(), key=lambda item: (item[1]["accuracy"], item[0]))
  )


def report_entry(
    groups: Sequence[str] | None,
    labels: np.ndarray,
    predictions: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
  """{"per_group": `per_group`}, for a report's extra entries, where the
  images have groups of several images; else {} (a table of single images
  summarises nothing)."""
  if groups is None or len(set(groups)) == len(groups):
    return {}
  return {"per_group": per_group(labels, predictions, groups, class_names)}


def markdown(
    per_group: Mapping[str, Mapping[str, Any]],
    row: Callable[[Sequence[Any]], str],
) -> list[str]:
  """report.md's section of a report's `per_group`: the MARKDOWN_GROUPS
  worst groups, each table row made by `row` (`reports`' cell escaping)."""
  lines = [
      f"## Accuracy per group ({len(per_group)} groups, lowest first)",
      "",
      row(["group", "classes", "images", "accuracy"]),
      "|---|---|---:|---:|",
  ]
  for key, entry in list(per_group.items())[:MARKDOWN_GROUPS]:
    lines.append(
        row([
            key,
            ", ".join(entry["classes"]),
            entry["images"],
            f"{entry['accuracy']:.4f}",
        ])
    )
  if len(per_group) > MARKDOWN_GROUPS:
    lines += [
        "",
        f"{len(per_group) - MARKDOWN_GROUPS} more groups in report.json.",
    ]
  return lines
