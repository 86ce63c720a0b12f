"""A test drive: a video of roadtex frames whose surface changes along the
way, its GPS track, and a model that knows those frames.

The drive is 22 s at 10 frames a second: asphalt for 8 s (with a 0.5 s
concrete patch at 3 s, a flicker the segments must drop), gravel for 6 s,
concrete for 8 s. A new roadtex picture comes every half second. The GPS
track starts `OFFSET_S` before the video and runs on in a straight line.
"""

import os

import numpy as np

from roadflax.data.preprocess import Preprocessing
from roadflax.datasets import roadtex
from roadflax.datasets.drives import write_gpx, write_video
from roadflax.serve.model import Model

CLASS_NAMES = roadtex.CLASS_NAMES
ASPHALT, CONCRETE, GRAVEL = CLASS_NAMES
# The true stretches: (class, start s, end s).
STRETCHES = ((ASPHALT, 0.0, 8.0), (GRAVEL, 8.0, 14.0), (CONCRETE, 14.0, 22.0))
PATCH = (CONCRETE, 3.0, 3.5)
FPS, SLOT_S = 10, 0.5
HEIGHT, WIDTH = 120, 180
# The video starts this many seconds after the track's first point.
OFFSET_S = 5.0
TRACK_SECONDS = 40


def true_class(time_s: float) -> str:
  if PATCH[1] <= time_s < PATCH[2]:
    return PATCH[0]
  return next(name for name, _, end in STRETCHES if time_s < end)


def build(folder: str) -> None:
  """folder/videos/drive.mp4, folder/track.gpx and folder/references.npz
  (each half second's picture and class index)."""
  slots = round(STRETCHES[-1][2] / SLOT_S)
  labels = [CLASS_NAMES.index(true_class(k * SLOT_S)) for k in range(slots)]
  pictures = np.stack([
      roadtex.render_frame(label, np.random.default_rng([7, k]), HEIGHT, WIDTH)
      for k, label in enumerate(labels)
  ])
  os.makedirs(os.path.join(folder, "videos"))
  write_video(
      os.path.join(folder, "videos", "drive.mp4"),
      np.repeat(pictures, round(FPS * SLOT_S), axis=0),
      fps=FPS,
  )
  np.savez(
      os.path.join(folder, "references.npz"),
      pictures=pictures,
      labels=np.array(labels),
  )
  write_gpx(os.path.join(folder, "track.gpx"), TRACK_SECONDS)


def knowing_model(folder: str) -> Model:
  """A `Model` that recognises the drive's pictures: each class's
  probability falls with the distance of the input to the nearest picture
  of that class, both as the model sees them (67x67, contrast 1.5)."""
  references = np.load(os.path.join(folder, "references.npz"))
  labels = references["labels"]
  seen = {}

  def probabilities(pixels: np.ndarray) -> np.ndarray:
    distances = np.stack([
        np.abs(pixels.astype(np.float32) - picture).mean(axis=(1, 2, 3))
        for picture in seen["pictures"]
    ])  # [pictures, N]
    nearest = np.stack(
        [distances[labels == c].min(axis=0) for c in range(len(CLASS_NAMES))],
        axis=1,
    )
    logits = -nearest / 2
    odds = np.exp(logits - logits.max(axis=1, keepdims=True))
    return odds / odds.sum(axis=1, keepdims=True)

  preprocessing = Preprocessing(
      67, 1.5, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  )
  model = Model(probabilities, CLASS_NAMES, preprocessing, "knowing")
  seen["pictures"] = np.stack(
      [model.pixels(p) for p in references["pictures"]]
  ).astype(np.float32)
  return model
