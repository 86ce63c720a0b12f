"""Videos uploaded to the web app: classified over time and cut into segments
(`roadflax.drives`); plain Python, no Streamlit.

PyAV reads files, so each upload is written to a temporary folder for as
long as it is classified. A file that is no video, or holds no frame that
decodes, gets its error; a video that breaks off keeps the frames before the
break and its timeline's `warning` says where.
"""

import dataclasses
import os
import pathlib
import tempfile

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from roadflax.drives import frames, plots, segments
from roadflax.drives.timeline import (
    DEFAULT_EVERY,
    Timeline,
    classify_video,
    write_timeline_csv,
)
from roadflax.errors import UserError
from roadflax.serve import model

# What the uploader takes as a video: the extensions `frames` reads.
EXTENSIONS = tuple(extension[1:] for extension in frames.VIDEO_EXTENSIONS)


@dataclasses.dataclass(frozen=True)
class Video:
  """One uploaded video and its timeline, or the error that cost it one."""

  name: str
  timeline: Timeline | None = None
  error: str | None = None


def is_video(name: str) -> bool:
  """Whether the upload `name` is taken as a video (by its extension)."""
  return frames.is_video(name)


def classify_upload(
    name: str,
    data: bytes,
    classifier: model.Model,
    every: float = DEFAULT_EVERY,
) -> Video:
  """The timeline of the video `data`, a frame every `every` seconds.

  Messages name the upload, not the temporary file it was read from.
  """
  with tempfile.TemporaryDirectory(prefix="roadflax-video-") as folder:
    path = os.path.join(folder, os.path.basename(name))
    pathlib.Path(path).write_bytes(data)
    try:
      found = classify_video(classifier, path, every)
    except UserError as error:
      return Video(name, error=str(error).replace(path, name))
  return Video(name, timeline=dataclasses.replace(found, source=name))


def with_threshold(found: Timeline, unsure_below: float) -> Timeline:
  """`found` with the samples below `unsure_below` flagged `unsure`."""
  return dataclasses.replace(found, unsure=found.confidence < unsure_below)


def segment_table(found: Timeline) -> pd.DataFrame:
  """A row per segment (`drives.segments`): class, start, end, duration,
  samples and mean confidence."""
  rows = segments.segments(found)
  return pd.DataFrame(
      {
          "class": [s.class_name for s in rows],
          "start (s)": [s.start_s for s in rows],
          "end (s)": [s.end_s for s in rows],
          "duration (s)": [s.duration_s for s in rows],
          "samples": [s.samples for s in rows],
          "mean confidence": [s.mean_confidence for s in rows],
      },
  )


def figure(found: Timeline) -> Figure:
  """timeline.png's picture: the class over time, segments above samples,
  and each sample's confidence below, the unsure marked."""
  return plots.timeline_figure(found, segments.segments(found))


def timeline_csv(found: Timeline) -> str:
  """timeline.csv's text: a row per sample (`write_timeline_csv`)."""
  with tempfile.TemporaryDirectory(prefix="roadflax-timeline-") as folder:
    path = os.path.join(folder, "timeline.csv")
    write_timeline_csv(found, path)
    return pathlib.Path(path).read_text(encoding="utf-8")


def unsure_share(found: Timeline) -> float:
  """The share of the samples flagged unsure."""
  return float(np.mean(found.unsure))
