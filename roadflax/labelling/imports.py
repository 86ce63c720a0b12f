"""Labels made elsewhere, imported into a labelled folder (`store`).

The CSV needs a `label` column and the image of each row, in `frame` (what
`queue.csv` holds, relative to the CSV's folder) or `file` (a path, relative
to the CSV's folder or absolute). `id`, `source`, `time_s`, `group` and
`guess` are taken when present: a row of queue.csv keeps its frame's id, so
a frame labelled in the app and in the spreadsheet is written once. A row
with an empty label is not labelled yet and is passed over; an unreadable
image is passed over with one line in `warnings`.
"""

import csv
import dataclasses
import os

from roadflax.data import image_folder
from roadflax.errors import UserError
from roadflax.labelling import candidates
from roadflax.labelling.store import LabelStore


@dataclasses.dataclass
class Imported:
  added: int = 0
  labelled_before: int = 0  # rows whose frame was labelled already
  unlabelled: int = 0  # rows with an empty label
  warnings: list[str] = dataclasses.field(default_factory=list)

  def summary(self, csv_path: str, root: str) -> str:
    return (
        f"imported {self.added} labels from {csv_path} into {root}"
        f" ({self.labelled_before} labelled before, {self.unlabelled} rows"
        f" without a label, {len(self.warnings)} unreadable)"
    )


def import_labels(store: LabelStore, csv_path: str) -> Imported:
  """Adds every labelled row of `csv_path` to `store`.

  Raises:
    UserError: the CSV cannot be read, lacks the columns, or names a label
      that is not a class (before anything is written).
  """
  rows = _rows(csv_path)
  allowed = set(store.class_names) | {"skip", "unknown"}
  wrong = sorted(
      {r["label"] for r in rows if r["label"] and r["label"] not in allowed}
  )
  if wrong:
    raise UserError(
        f"{csv_path} has labels {wrong} that are not the model's classes"
        f" {list(store.class_names)} (or skip/unknown); nothing imported"
    )
  done = Imported()
  base = os.path.dirname(os.path.abspath(csv_path))
  for number, row in enumerate(rows, start=2):  # line 1 is the header
    if not row["label"]:
      done.unlabelled += 1
      continue
    image = os.path.join(base, row.get("frame") or row["file"])
    problem = image_folder.check_image_file(image)
    if problem:
      done.warnings.append(f"{csv_path}:{number}: {image} {problem}")
      continue
    time_s = row.get("time_s") or None
    source = row.get("source") or image
    frame = {
        "id": row.get("id") or candidates.frame_id(source, _float(time_s)),
        "source": source,
        "time_s": time_s,
        "group": candidates.safe_group(
            row.get("group") or os.path.basename(os.path.dirname(image))
        ),
        "guess": row.get("guess", ""),
    }
    _, added = store.add(frame, row["label"], image)
    if added:
      done.added += 1
    else:
      done.labelled_before += 1
  return done


def _rows(csv_path: str) -> list[dict[str, str]]:
  try:
    with open(csv_path, newline="", encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as error:
    raise UserError(f"cannot read {csv_path}: {error}") from None
  columns = set(rows[0]) if rows else set()
  if rows and ("label" not in columns or not columns & {"frame", "file"}):
    raise UserError(
        f"{csv_path} needs a label column and a frame or file column (the"
        f" image); it has {sorted(columns)}"
    )
  return [{k: (v or "").strip() for k, v in r.items() if k} for r in rows]


def _float(value: str | None) -> float | None:
  try:
    return float(value)
  except (TypeError, ValueError):
    return None
