"""What the app's labelling page works on, in plain Python (no Streamlit):
the folders a visitor may queue, and the next frame to label.

  --input drives/ --output labelled      (on the serve command line)

The page offers each `--input` folder and the folders one level below it,
and nothing else: `Folders.resolve` is the one way from a choice to a path,
and it answers only with a folder of that list (compared by real path, so
neither `..` nor a link leads out). The state of the work lives in the
labelled folder, not in the browser: the queue (`queue.csv`) and the labels
(`labels.csv`), so a refresh, a restart of the server or a second labeller
picks up where the files say. Sessions labelling one folder at once are
shown different frames while there are enough (`Claims`); should two still
label one frame, the labels file keeps the first label.
"""

import collections
import dataclasses
import os
import threading
import time
from typing import Sequence

from roadflax.data.image_folder import subfolders
from roadflax.errors import UserError
from roadflax.labelling import queue
from roadflax.labelling.store import LabelStore


@dataclasses.dataclass(frozen=True)
class Folders:
  """The input folders a visitor may pick: label -> real path."""

  choices: dict[str, str]

  @classmethod
  def under(cls, roots: Sequence[str]) -> "Folders":
    choices = {}
    for root in roots:
      if not os.path.isdir(root):
        continue
      choices[root] = os.path.realpath(root)
      for name in subfolders(root):
        choices[os.path.join(root, name)] = os.path.realpath(
            os.path.join(root, name)
        )
    return cls(choices)

  def resolve(self, label: str) -> str:
    """The real path of the choice `label`.

    Raises:
      UserError: `label` is not one of the choices.
    """
    if label not in self.choices:
      raise UserError(
          f"{label} is not a folder this app labels from; it offers only"
          " the --input folders on its command line and their subfolders"
      )
    return self.choices[label]


@dataclasses.dataclass(frozen=True)
class Progress:
  """Where the labelling of a folder stands."""

  left: list[dict[str, str]]  # queued frames not labelled yet, in order
  queued: int
  counts: dict[str, int]  # labels given, by label (skip and unknown too)


def progress(store: LabelStore) -> Progress:
  """The queue of `store.root` against its labels, read from the files."""
  rows = queue.read_queue(store.root)
  labelled = store.labels()
  counts = collections.Counter(row["label"] for row in labelled.values())
  return Progress(
      [row for row in rows if row["id"] not in labelled],
      len(rows),
      {name: counts[name] for name in sorted(counts)},
  )


class Claims:
  """Which frame each labelling session is shown, so that sessions on one
  queue are shown different frames: a session's claim lasts until it is
  shown another frame or `seconds` pass (a closed tab)."""

  def __init__(self, seconds: float = 300.0):
    self.seconds = seconds
    self._lock = threading.Lock()
    self._frames: dict[str, tuple[str, float]] = {}  # id -> (session, when)

  def next_frame(
      self, session_id: str, left: list[dict[str, str]]
  ) -> dict[str, str] | None:
    """The first frame of `left` no other session is shown (the first of
    all when every one is), now claimed by `session_id`; None if none."""
    now = time.monotonic()
    with self._lock:
      self._frames = {
          frame: (holder, when)
          for frame, (holder, when) in self._frames.items()
          if holder != session_id and now - when < self.seconds
      }
      free = [row for row in left if row["id"] not in self._frames]
      chosen = (free or left or [None])[0]
      if chosen is not None:
        self._frames[chosen["id"]] = (session_id, now)
      return chosen
