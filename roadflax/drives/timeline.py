"""A video classified over time: `classify_video` and timeline.csv.

    model = roadflax.load("runs/demo")
    timeline = classify_video(model, "drive.mp4")   # 4 frames a second
    timeline.times, timeline.classes, timeline.probabilities

The sampled frames go to `model.predict` as uint8 pixels, `batch_size` at a
time as they are decoded, so they get training's preprocessing and memory
stays that of one batch however long the video is.
"""

import csv
import dataclasses
import io
import itertools
import time
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import matplotlib.colors
import numpy as np
from absl import logging

from roadflax.drives import frames
from roadflax.errors import UserError
from roadflax.files import atomic_write_text

# Seconds between sampled frames: four a second, a metre apart at 15 km/h.
DEFAULT_EVERY = 0.25
# Sampled frames per `predict` call.
BATCH_SIZE = 32


class Classifier(Protocol):
  """What a timeline needs of a model: `roadflax.serve.model.Model`, which
  `roadflax.load` returns, is one."""

  class_names: tuple[str, ...]

  def predict(self, images: Any, batch_size: int) -> Any:
    """Predictions with `classes`, `probabilities` [N, C] and `unsure`."""


@dataclasses.dataclass(frozen=True)
class Timeline:
  """The class of each sampled frame of one video, in time order."""

  times: np.ndarray  # float64 [N], seconds from the video's start
  frames: np.ndarray  # int64 [N], the index of each sample's decoded frame
  classes: tuple[str, ...]  # [N]
  probabilities: np.ndarray  # float32 [N, len(class_names)]
  unsure: np.ndarray  # bool [N], `Predictions.unsure`
  class_names: tuple[str, ...]
  source: str  # the video's path
  duration_s: float  # how much was read: the end of the last frame decoded
  fps: float
  every: float  # the sampling interval asked for
  warning: str | None = None  # why the video ended early, if it did

  def __len__(self) -> int:
    return len(self.times)

  @property
  def confidence(self) -> np.ndarray:
    """The top probability of each sample."""
    return self.probabilities.max(axis=1)

  @property
  def ends(self) -> np.ndarray:
    """Where each sample's stretch of video ends: the next sample's time,
    and for the last, `duration_s`."""
    return np.append(self.times[1:], max(self.duration_s, self.times[-1]))


def class_colours(class_names: Sequence[str]) -> dict[str, str]:
  """A colour ("#rrggbb") per class, the same in the picture, the GeoJSON and
  the map: matplotlib's tab10 up to ten classes, evenly spaced hues beyond."""
  if len(class_names) <= 10:
    values = [matplotlib.colormaps["tab10"](i) for i in range(10)]
  else:
    values = matplotlib.colormaps["turbo"](
        np.linspace(0.05, 0.95, len(class_names))
    )
  return {
      name: matplotlib.colors.to_hex(value)
      for name, value in zip(class_names, values)
  }


def classify_video(
    model: Classifier,
    path: str,
    every: float = DEFAULT_EVERY,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[float, float | None], None] | None = None,
) -> Timeline:
  """Classifies a frame every `every` seconds of the video at `path`.

  Args:
    model: a trained model (`roadflax.load`).
    path: a video file of any container and codec FFmpeg reads.
    every: seconds between sampled frames (at most every frame is taken).
    batch_size: frames per `model.predict` call.
    progress: called after each batch with the seconds decoded so far and
      those the video declares (None if it declares none).

  Raises:
    UserError: `path` is not a readable video, or no frame of it could be
      decoded. A video that breaks off keeps the frames before the break;
      the timeline's `warning` says where it stopped (and is logged).
  """
  times, indices, predictions = [], [], []
  started, classifying = time.perf_counter(), 0.0
  with frames.VideoFrames(path, every) as video:
    for batch in _batches(video, batch_size):
      before = time.perf_counter()
      predictions.append(model.predict([s.pixels for s in batch], batch_size))
      classifying += time.perf_counter() - before
      times += [s.time_s for s in batch]
      indices += [s.frame for s in batch]
      if progress is not None:
        progress(video.read_s, video.declared_s)
  if video.warning:
    logging.warning("%s", video.warning)
  if not times:
    raise UserError(video.warning or f"{path}: no frame could be decoded")
  logging.info(
      "%s: decoded %d frames in %.1f s, classified %d of them in %.1f s",
      path,
      video.frames_read,
      time.perf_counter() - started - classifying,
      len(times),
      classifying,
  )
  return Timeline(
      times=np.array(times, np.float64),
      frames=np.array(indices, np.int64),
      classes=tuple(c for p in predictions for c in p.classes),
      probabilities=np.concatenate([p.probabilities for p in predictions]),
      unsure=np.array([u for p in predictions for u in p.unsure], bool),
      class_names=model.class_names,
      source=path,
      duration_s=video.read_s,
      fps=video.fps,
      every=every,
      warning=video.warning,
  )


def _batches(
    samples: Iterable[frames.Sample], size: int
) -> Iterator[list[frames.Sample]]:
  iterator = iter(samples)
  while batch := list(itertools.islice(iterator, size)):
    yield batch


def write_timeline_csv(
    timeline: Timeline, path: str, positions: np.ndarray | None = None
) -> None:
  """timeline.csv: a row per sample.

  Columns: `time_s`, `frame`, `class`, `confidence` (its top probability),
  `unsure` (0 or 1), `p_CLASS` for each class, and with `positions` (float
  [N, 2] latitude and longitude, NaN where unknown) `latitude` and
  `longitude` (empty where unknown).
  """
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  header = ["time_s", "frame", "class", "confidence", "unsure"]
  header += [f"p_{name}" for name in timeline.class_names]
  writer.writerow(
      header + ([] if positions is None else ["latitude", "longitude"])
  )
  for i in range(len(timeline)):
    row = [
        f"{timeline.times[i]:.3f}",
        int(timeline.frames[i]),
        timeline.classes[i],
        f"{timeline.confidence[i]:.4f}",
        int(timeline.unsure[i]),
    ]
    row += [f"{p:.4f}" for p in timeline.probabilities[i]]
    if positions is not None:
      row += ["" if np.isnan(x) else f"{x:.7f}" for x in positions[i]]
    writer.writerow(row)
  atomic_write_text(path, text.getvalue())
