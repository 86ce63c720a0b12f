"""Labels written once, at once, and atomically: an image file under
`ROOT/CLASS/GROUP/ID.jpg` (the layout `data.group_by=subfolder` splits by
group) and a row in `ROOT/labels.csv`.

Every write holds an exclusive lock on `ROOT/.labels.lock`, so two people
labelling one folder (two browser sessions, a browser and `--labels`
imports) never write a frame twice: the first label of a frame wins, and a
later one is answered with it. The image is renamed into place before its
row is appended, and a failed append removes it again, so a crash, a full
disk or a read-only folder leaves every label either whole or absent, and
the rows written before stay as they were. `skip` and `unknown` are rows
without an image: the frame leaves the queue and teaches nothing.
"""

import contextlib
import csv
import datetime
import errno
import fcntl
import os
import shutil
from typing import Any, Iterator, Sequence

from roadflax import files
from roadflax.errors import UserError

LABELS_FILE = "labels.csv"
FIELDS = (
    "id",
    "file",
    "source",
    "time_s",
    "group",
    "label",
    "guess",
    "labelled_at",
)
SKIP, UNKNOWN = "skip", "unknown"
NOT_CLASSES = (SKIP, UNKNOWN)
_LOCK_FILE = ".labels.lock"


class LabelStore:
  """The labelled folder `root` for a model of classes `class_names`."""

  def __init__(self, root: str, class_names: Sequence[str]):
    self.root = root
    self.class_names = tuple(class_names)
    self.path = os.path.join(root, LABELS_FILE)

  def labels(self) -> dict[str, dict[str, str]]:
    """Every row of labels.csv by frame id (none while it does not exist)."""
    try:
      with open(self.path, newline="", encoding="utf-8") as f:
        return {row["id"]: row for row in csv.DictReader(f) if row.get("id")}
    except FileNotFoundError:
      return {}

  def add(
      self,
      frame: dict[str, Any],
      label: str,
      image_path: str,
  ) -> tuple[dict[str, str], bool]:
    """Labels one frame; (its row, whether this call wrote it).

    Args:
      frame: its `id`, `source`, `time_s` (None or "" for an image),
        `group` and the model's `guess` ("" for none).
      label: one of the class names, `skip` or `unknown`.
      image_path: the frame's image file, copied as it is.

    Raises:
      UserError: an unknown label, or the folder cannot be written (read-only,
        full, or not allowed); nothing of this frame is then left behind.
    """
    if label not in self.class_names + NOT_CLASSES:
      raise UserError(
          f"label {label!r} is not one of the model's classes"
          f" {list(self.class_names)} or {'/'.join(NOT_CLASSES)}"
      )
    with self._locked():
      existing = self.labels().get(frame["id"])
      if existing is not None:
        return existing, False
      relative = ""
      if label not in NOT_CLASSES:
        if not os.path.isfile(image_path):
          raise UserError(f"the frame's image {image_path} is gone")
        relative = os.path.join(label, frame["group"], f"{frame['id']}.jpg")
        try:
          with writable(self.root):
            files.atomic_write(
                os.path.join(self.root, relative),
                lambda f: _copy(image_path, f),
            )
        except UserError:
          _remove_empty_folders(self.root, relative)
          raise
      row = {
          "id": frame["id"],
          "file": relative,
          "source": frame["source"],
          "time_s": (
              "" if frame.get("time_s") in (None, "") else frame["time_s"]
          ),
          "group": frame["group"],
          "label": label,
          "guess": frame.get("guess") or "",
          "labelled_at": (
              datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec="seconds"
              )
          ),
      }
      try:
        with writable(self.root):
          self._append(row)
      except UserError:
        if relative:
          os.unlink(os.path.join(self.root, relative))
          _remove_empty_folders(self.root, relative)
        raise
      return row, True

  def _append(self, row: dict[str, Any]) -> None:
    """Appends `row` to labels.csv (a header first into an empty file),
    synced to the disk before returning."""
    with open(self.path, "a", newline="", encoding="utf-8") as f:
      writer = csv.DictWriter(f, FIELDS)
      if f.tell() == 0:
        writer.writeheader()
      writer.writerow(row)
      f.flush()
      os.fsync(f.fileno())

  @contextlib.contextmanager
  def _locked(self) -> Iterator[None]:
    with writable(self.root):
      os.makedirs(self.root, exist_ok=True)
      lock = open(os.path.join(self.root, _LOCK_FILE), "a")
    try:
      fcntl.flock(lock, fcntl.LOCK_EX)
      yield
    finally:
      lock.close()  # releases the lock


def _remove_empty_folders(root: str, relative: str) -> None:
  """Removes the folders of `relative` below `root` that a failed write left
  empty: an empty class folder would stop training."""
  folder = os.path.dirname(relative)
  while folder:
    try:
      os.rmdir(os.path.join(root, folder))
    except OSError:
      return  # not empty, or gone
    folder = os.path.dirname(folder)


def _copy(source: str, target) -> None:
  with open(source, "rb") as f:
    shutil.copyfileobj(f, target)


@contextlib.contextmanager
def writable(root: str) -> Iterator[None]:
  """Turns the OS errors of writing under `root` into one-line UserErrors."""
  try:
    yield
  except OSError as error:
    why = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is used up",
        errno.EROFS: "it is on a read-only file system",
        errno.EACCES: "writing there is not allowed",
        errno.EPERM: "writing there is not allowed",
    }.get(error.errno, error.strerror or str(error))
    raise UserError(
        f"cannot write labels to {root}: {why}; the labels written before"
        " are kept"
    ) from None
