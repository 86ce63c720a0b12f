"""The files of a label audit (`audit`): WORKDIR/audit/audit.csv, every
image ranked, and audit.md, the top of each list; read by the app without
the training code that computes them."""

import csv
import io
import os
from typing import Any

from roadflax.files import atomic_write_text

AUDIT_DIR = "audit"
CSV_FILE, MARKDOWN_FILE = "audit.csv", "audit.md"
FIELDS = (
    "rank",
    "file",
    "split",
    "group",
    "label",
    "issue",
    "suggested",
    "label_probability",
    "suggested_probability",
    "outlier_score",
)
_SHOWN = 20  # rows of each list in audit.md


def read_audit(workdir: str) -> list[dict[str, str]]:
  """The rows of WORKDIR/audit/audit.csv, ranked ([] when not audited)."""
  try:
    with open(
        os.path.join(workdir, AUDIT_DIR, CSV_FILE), newline="", encoding="utf-8"
    ) as f:
      return list(csv.DictReader(f))
  except FileNotFoundError:
    return []


def write(
    workdir: str, rows: list[dict[str, Any]], summary: dict[str, Any]
) -> None:
  """WORKDIR/audit/audit.csv (every image, ranked) and audit.md."""
  folder = os.path.join(workdir, AUDIT_DIR)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, FIELDS)
  writer.writeheader()
  writer.writerows(rows)
  atomic_write_text(os.path.join(folder, CSV_FILE), buffer.getvalue())
  atomic_write_text(
      os.path.join(folder, MARKDOWN_FILE), _markdown(rows, summary)
  )


def _markdown(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
  issues = [r for r in rows if r["issue"]]
  lines = [
      f"# Audit of {summary['root']}",
      "",
      (
          f"{summary['images']} images in {summary['groups']} groups,"
          f" {summary['folds']} folds of whole groups; out-of-fold accuracy of"
          f" the linear probes {summary['out_of_fold_accuracy']:.1%}."
      ),
      "",
      f"## Labels that look wrong: {len(issues)}",
      "",
      "| rank | file | label | suggested | p(label) | p(suggested) |",
      "|---:|---|---|---|---:|---:|",
      *(
          f"| {r['rank']} | {r['file']} | {r['label']} | {r['suggested']} |"
          f" {r['label_probability']:.2f} | {r['suggested_probability']:.2f} |"
          for r in issues[:_SHOWN]
      ),
      "",
      "## Outliers (farthest from their nearest images)",
      "",
      "| file | label | score |",
      "|---|---|---:|",
      *(
          f"| {r['file']} | {r['label']} | {r['outlier_score']:.2f} |"
          for r in sorted(rows, key=lambda r: -r["outlier_score"])[:_SHOWN]
      ),
  ]
  duplicates = summary["near_duplicates"]
  if duplicates is not None:
    lines += ["", "## Near-duplicates across splits", ""]
    for name in (n for n in ("val", "test") if n in duplicates):
      found = duplicates[name]
      lines.append(
          f"- {name}: {found['images_with_near_duplicate']} images with a"
          " near-duplicate in train"
          + "".join(
              f"; {e['image']} ~ {e['train_image']}" for e in found["examples"]
          )
      )
  return "\n".join(lines) + "\n"
