"""The frames a labelling queue chooses from: a frame every `every` seconds
of each video, and each image, under the inputs given.

Each `Candidate` has an id that stays the same across runs (its file's real
path and time), so labels written in one session are recognised in the
next, and a group: the video, or the folder an image lies in, which becomes
the folder the labelled image is written to (`ROOT/CLASS/GROUP/`), so that
a by-group split (`data.group_by=subfolder`) keeps a drive in one split.
An unreadable video or image is skipped with one line in `warnings`.
"""

import dataclasses
import hashlib
import os
import re
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from roadflax.data.image_folder import IMAGE_EXTENSIONS
from roadflax.drives import frames
from roadflax.errors import UserError
from roadflax.files import files_under

# Frames are kept at most this many pixels on their long side: a model sees
# a few hundred, and a 4K drive would fill the disk.
MAX_SIDE = 1280


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One frame of a video, or one image."""

  id: str
  source: str  # the video or image file
  time_s: float | None  # seconds into the video; None for an image
  group: str
  pixels: np.ndarray  # uint8 RGB [H, W, 3], upright


def frame_id(source: str, time_s: float | None) -> str:
  """A stable id of a frame: its file's real path and its time."""
  key = os.path.realpath(source) + ("" if time_s is None else f"@{time_s:.3f}")
  return hashlib.sha256(key.encode()).hexdigest()[:16]


def safe_group(name: str) -> str:
  """`name` as one folder name: separators and leading dots replaced."""
  name = re.sub(r"[\\/:\x00]", "_", name).lstrip(".")
  return name or "ungrouped"


def input_files(inputs: Sequence[str]) -> tuple[list[str], list[str]]:
  """(videos, images) named by `inputs` or found under its folders."""
  videos, images = [], []
  for item in inputs:
    if os.path.isdir(item):
      found = [p for p in files_under(item) if "/." not in p[len(item) :]]
    elif os.path.isfile(item):
      found = [item]
    else:
      raise UserError(f"{item}: no such file or folder")
    videos += [p for p in found if frames.is_video(p)]
    images += [p for p in found if p.lower().endswith(IMAGE_EXTENSIONS)]
  if not videos and not images:
    raise UserError(
        f"{', '.join(inputs)} holds no videos and no images"
        f" ({'/'.join(IMAGE_EXTENSIONS)}): nothing to label"
    )
  return videos, images


def candidates(
    inputs: Sequence[str], every: float, warnings: list[str]
) -> Iterator[Candidate]:
  """Every candidate frame under `inputs`, video by video in time order,
  then the images; unreadable files append a line to `warnings`."""
  frames.check_every(every)
  videos, images = input_files(inputs)
  for video in videos:
    group = safe_group(os.path.splitext(os.path.basename(video))[0])
    try:
      with frames.VideoFrames(video, every) as stream:
        for sample in stream:
          yield Candidate(
              frame_id(video, sample.time_s),
              video,
              round(sample.time_s, 3),
              group,
              _smaller(sample.pixels),
          )
        if stream.warning:
          warnings.append(stream.warning)
    except UserError as error:
      warnings.append(str(error))
  for image in images:
    try:
      with Image.open(image) as opened:
        pixels = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    except (OSError, ValueError) as error:
      warnings.append(f"{image} cannot be read as an image ({error})")
      continue
    group = safe_group(
        os.path.basename(os.path.dirname(os.path.abspath(image)))
    )
    yield Candidate(frame_id(image, None), image, None, group, _smaller(pixels))


def _smaller(pixels: np.ndarray) -> np.ndarray:
  """`pixels` shrunk to at most MAX_SIDE on the long side."""
  height, width = pixels.shape[:2]
  scale = MAX_SIDE / max(height, width)
  if scale >= 1:
    return pixels
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  return np.asarray(Image.fromarray(pixels).resize(size, Image.LANCZOS))
