"""The labelling queue: candidate frames pre-labelled by a model and ordered
by its doubt, so that a person labels first what would teach it most.

    queue = build_queue(model, ["drives/"], "labelled", every=1.0)
    queue.frames[0]        # the frame the model is least sure of

Frames that look like one already queued (`hashing`: the same stretch of
road filmed again while the car stood or crawled) are dropped, so the queue
stays diverse; frames labelled before (`ROOT/labels.csv`) are left out. The
order is least confidence by margin: the top probability minus the second,
smallest first. Frames are kept as JPEGs in `ROOT/.queue/` (a hidden folder,
which training ignores) and the queue in `ROOT/queue.csv`, one row a frame
with an empty `label` column: fill it in a spreadsheet and import it with
`--mode=label --labels=ROOT/queue.csv`, or label in the app.
"""

import csv
import dataclasses
import functools
import io
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image

from roadflax import files
from roadflax.errors import UserError
from roadflax.labelling import candidates, hashing
from roadflax.labelling.store import LabelStore, writable

QUEUE_FILE = "queue.csv"
FRAMES_DIR = ".queue"
FIELDS = (
    "id",
    "frame",
    "source",
    "time_s",
    "group",
    "guess",
    "confidence",
    "margin",
    "label",
)
_BATCH = 32  # frames predicted at a time


@dataclasses.dataclass
class Queue:
  """A built queue: its frames (rows of queue.csv, most doubtful first) and
  what was left out."""

  frames: list[dict[str, Any]]
  sampled: int  # candidate frames read
  near_duplicates: int  # dropped as looking like a frame queued before
  labelled_before: int  # left out: already in labels.csv
  warnings: list[str]  # unreadable videos and images, one line each

  def summary(self, root: str) -> str:
    return (
        f"queued {len(self.frames)} of {self.sampled} frames, least confident"
        f" first ({self.near_duplicates} near-duplicates dropped,"
        f" {self.labelled_before} labelled before):"
        f" {os.path.join(root, QUEUE_FILE)}"
    )


def build_queue(
    model: Any,
    inputs: Sequence[str],
    root: str,
    every: float = 1.0,
    near_bits: int = hashing.NEAR_BITS,
) -> Queue:
  """Samples, pre-labels and orders the frames of `inputs` for labelling
  into `root`; writes the frames and queue.csv there.

  Args:
    model: a `roadflax.load` model (its `predict` and `class_names`).
    inputs: videos, images, or folders of them.
    root: the labelled folder (`ROOT/CLASS/GROUP/*.jpg`, `labels.csv`).
    every: seconds between sampled video frames.
    near_bits: frames whose perceptual hashes differ in at most this many
      bits count as one (`hashing`); -1 keeps every frame.

  Raises:
    UserError: no videos or images under `inputs`, or none readable.
  """
  labelled = LabelStore(root, model.class_names).labels()
  warnings: list[str] = []
  kept_hashes: list[int] = []
  rows, batch = [], []
  sampled = duplicates = before = 0
  for candidate in candidates.candidates(inputs, every, warnings):
    sampled += 1
    h = hashing.dhash(candidate.pixels)
    if candidate.id in labelled:
      before += 1  # its look still keeps its near-duplicates out
    elif any(hashing.distance(h, k) <= near_bits for k in kept_hashes):
      duplicates += 1
      continue
    else:
      batch.append(candidate)
    kept_hashes.append(h)
    if len(batch) == _BATCH:
      rows += _queued(model, batch, root)
      batch = []
  if batch:
    rows += _queued(model, batch, root)
  if not sampled:
    raise UserError(
        f"no frame of {', '.join(inputs)} could be read:"
        f" {'; '.join(warnings[:3])}"
    )
  rows.sort(key=lambda r: (r["margin"], r["source"], r["time_s"] or 0))
  write_queue(root, rows)
  return Queue(rows, sampled, duplicates, before, warnings)


def _queued(model: Any, batch: list[candidates.Candidate], root: str) -> list:
  """Queue rows of a batch of candidates; their frames written as JPEGs."""
  predictions = model.predict([c.pixels for c in batch])
  rows = []
  for c, p in zip(batch, predictions.probabilities):
    frame = os.path.join(FRAMES_DIR, f"{c.id}.jpg")
    with writable(root):  # reading the inputs is not this error
      files.atomic_write(
          os.path.join(root, frame),
          functools.partial(_save_jpeg, c.pixels),
      )
    top = np.sort(p)[::-1]
    rows.append({
        "id": c.id,
        "frame": frame,
        "source": c.source,
        "time_s": c.time_s,
        "group": c.group,
        "guess": model.class_names[int(np.argmax(p))],
        "confidence": round(float(top[0]), 4),
        "margin": round(float(top[0] - top[1]) if len(top) > 1 else 1.0, 4),
        "label": "",
    })
  return rows


def _save_jpeg(pixels: np.ndarray, f) -> None:
  Image.fromarray(pixels).save(f, "JPEG", quality=92)


def write_queue(root: str, rows: list[dict[str, Any]]) -> None:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, FIELDS)
  writer.writeheader()
  for row in rows:
    writer.writerow(
        {**row, "time_s": "" if row["time_s"] is None else row["time_s"]}
    )
  with writable(root):
    files.atomic_write_text(os.path.join(root, QUEUE_FILE), buffer.getvalue())


def read_queue(root: str) -> list[dict[str, str]]:
  """The rows of ROOT/queue.csv, in order ([] while there is none)."""
  try:
    with open(
        os.path.join(root, QUEUE_FILE), newline="", encoding="utf-8"
    ) as f:
      return list(csv.DictReader(f))
  except FileNotFoundError:
    return []
