"""A timeline as stretches of one class, short flickers removed.

The rule. Each sample stands for the video from its time to the next
sample's (the last, to the end of what was read). Consecutive samples of the
same class form a run. Then, while more than one run is left and the
shortest is shorter than `min_seconds`, that run (the earliest of equally
short ones) is absorbed into a neighbour: the only one at either end of the
drive; between two, the one whose class the model found more probable over
the short run's samples (the mean of that class's probability), on a tie
the longer neighbour, then the earlier. Its samples take that neighbour's
class, and when both neighbours have the same class the three runs become
one. So every segment is at least `min_seconds` long, except the whole drive
when it is shorter; `min_seconds=0` only merges equal neighbours.

A segment's `mean_confidence` is the mean probability of its class over its
samples: absorbed flickers, whose samples rated another class higher, lower
it.
"""

import csv
import dataclasses
import io
from typing import Sequence

import numpy as np

from roadflax.drives.timeline import Timeline
from roadflax.errors import UserError
from roadflax.files import atomic_write_text

# Runs shorter than this many seconds are absorbed into a neighbour.
DEFAULT_MIN_SECONDS = 1.0
# Sample times are floats: a run this close to `min_seconds` is long enough.
_SLACK_S = 1e-6


@dataclasses.dataclass(frozen=True)
class Segment:
  """A stretch of the video taken as one class."""

  class_name: str
  start_s: float
  end_s: float
  samples: int
  mean_confidence: float

  @property
  def duration_s(self) -> float:
    return self.end_s - self.start_s


def check_min_seconds(min_seconds: float) -> None:
  """Raises UserError unless `min_seconds` is 0 or more."""
  if not min_seconds >= 0:
    raise UserError(
        f"--min_segment_seconds={min_seconds}: give 0 or more seconds"
    )


def segments(
    timeline: Timeline, min_seconds: float = DEFAULT_MIN_SECONDS
) -> list[Segment]:
  """The timeline's segments, in time order, by the module's rule.

  Raises:
    UserError: `min_seconds` is negative.
  """
  check_min_seconds(min_seconds)
  labels = np.array([timeline.class_names.index(c) for c in timeline.classes])
  starts, ends = timeline.times, timeline.ends
  runs = smoothed_runs(
      labels, starts, ends, timeline.probabilities, min_seconds
  )
  return [
      Segment(
          class_name=timeline.class_names[label],
          start_s=float(starts[first]),
          end_s=float(ends[stop - 1]),
          samples=stop - first,
          mean_confidence=float(
              np.mean(timeline.probabilities[first:stop, label])
          ),
      )
      for label, first, stop in runs
  ]


def smoothed_runs(
    labels: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    probabilities: np.ndarray,
    min_seconds: float,
) -> list[tuple[int, int, int]]:
  """(label, first sample, stop sample) of each run left by the rule.

  Args:
    labels: int [N], each sample's class.
    starts, ends: float [N], the stretch of video each sample stands for.
    probabilities: [N, classes], what decides between two neighbours.
    min_seconds: the shortest run kept.
  """
  runs = [
      [int(labels[first]), first, stop]
      for first, stop in _equal_stretches(labels)
  ]

  def seconds(run: Sequence[int]) -> float:
    return float(ends[run[2] - 1] - starts[run[1]])

  lengths = [seconds(run) for run in runs]
  while len(runs) > 1:
    short = int(np.argmin(lengths))  # the earliest of the shortest
    if lengths[short] >= min_seconds - _SLACK_S:
      break
    into = _absorbing_neighbour(runs, lengths, short, probabilities)
    runs[into][1] = min(runs[into][1], runs[short][1])
    runs[into][2] = max(runs[into][2], runs[short][2])
    lengths[into] = seconds(runs[into])
    del runs[short], lengths[short]
    left = short - 1  # the runs either side of where the short one was
    if 0 <= left < len(runs) - 1 and runs[left][0] == runs[left + 1][0]:
      runs[left][2] = runs[left + 1][2]
      lengths[left] = seconds(runs[left])
      del runs[left + 1], lengths[left + 1]
  return [tuple(run) for run in runs]


def _equal_stretches(labels: np.ndarray) -> list[tuple[int, int]]:
  """(first, stop) of each stretch of equal consecutive labels."""
  if not len(labels):
    return []
  changes = np.flatnonzero(labels[1:] != labels[:-1]) + 1
  bounds = [0, *changes.tolist(), len(labels)]
  return list(zip(bounds[:-1], bounds[1:]))


def _absorbing_neighbour(
    runs: list[list[int]],
    lengths: list[float],
    short: int,
    probabilities: np.ndarray,
) -> int:
  """The index of the run that takes in `runs[short]`, by the module's rule."""
  neighbours = [i for i in (short - 1, short + 1) if 0 <= i < len(runs)]
  _, first, stop = runs[short]

  def preference(i: int) -> tuple[float, float, int]:
    likely = float(np.mean(probabilities[first:stop, runs[i][0]]))
    return (likely, lengths[i], -i)

  return max(neighbours, key=preference)


def write_segments(segments: Sequence[Segment], path: str) -> None:
  """segments.csv: a row per segment, with the columns `class`, `start_s`,
  `end_s`, `duration_s`, `samples` and `mean_confidence`."""
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(
      ["class", "start_s", "end_s", "duration_s", "samples", "mean_confidence"]
  )
  for s in segments:
    writer.writerow([
        s.class_name,
        f"{s.start_s:.3f}",
        f"{s.end_s:.3f}",
        f"{s.duration_s:.3f}",
        s.samples,
        f"{s.mean_confidence:.4f}",
    ])
  atomic_write_text(path, text.getvalue())
