"""A generated stand-in for the RSCD release, with its exact layout and names.

For tests and the pipeline benchmark: `write_release` writes train/<class>/,
vali_20k/ and test_50k/ of small JPEG frames whose names carry timestamps of
a few capture days, and `zip_release` packs such a tree as the release's zip.
Each class gets its own mean colour and stripe frequency, so a few training
steps can learn something.
"""

import multiprocessing
import os
import zipfile
from typing import Sequence

import numpy as np
from PIL import Image

from roadflax.datasets import rscd

DAYS = ("20210103", "20210115", "20210207", "20210311", "20210422", "20210530")


def _frame_image(seed: int, label: int, size: tuple[int, int]) -> Image.Image:
  height, width = size
  rng = np.random.default_rng(seed)
  stripes = np.sin(np.arange(width, dtype=np.float32) * (0.2 + 0.3 * label))[
      None, :, None
  ]
  base = np.array(
      [60 + 50 * (label % 3), 80 + 30 * (label % 5), 70 + 20 * (label % 7)],
      np.float32,
  )
  # Mild noise: about 24 KB per 360x240 frame at quality 90, near the
  # release's ~14 KB average, so decoding costs about what it would.
  pixels = (
      base
      + 40 * stripes
      + 8 * rng.standard_normal((height, width, 3), dtype=np.float32)
  )
  return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write_frame(job: tuple[str, int, int, tuple[int, int]]) -> None:
  path, seed, label, size = job
  _frame_image(seed, label, size).save(path, quality=90)


def write_release(
    root: str,
    counts: dict[str, int],
    classes: Sequence[str] = rscd.CLASSES_3,
    size: tuple[int, int] = (90, 60),
    days: Sequence[str] = DAYS,
    seed: int = 0,
    processes: int = 1,
) -> str:
  """Writes `counts[split]` frames per class of each split ("train",
  "validation", "test") under `root`, in the release's layout; `size` is
  (height, width), portrait like the release's 360x240.

  Frame k of a class is captured on `days[k % len(days)]`; every file name is
  unique. `processes` > 1 renders frames in that many worker processes.
  """
  jobs = []
  for split, per_class in counts.items():
    folder = os.path.join(root, rscd.SPLIT_FOLDERS[split])
    for label, name in enumerate(classes):
      class_folder = os.path.join(folder, name) if split == "train" else folder
      os.makedirs(class_folder, exist_ok=True)
      # Winter classes keep their underscore: `...-fresh_snow.jpg`.
      suffix = name if name in rscd.WINTER else name.replace("_", "-")
      for k in range(per_class):
        serial = len(jobs) + 1
        # YYYYMMDDhhmmss and a frame counter, as the release names frames.
        timestamp = f"{days[k % len(days)]}{120000 + serial % 100:06d}{serial}"
        jobs.append((
            os.path.join(class_folder, f"{timestamp}-{suffix}.jpg"),
            seed * 1_000_003 + serial,
            label,
            size,
        ))
  if processes > 1:
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
      pool.map(_write_frame, jobs, chunksize=256)
  else:
    for job in jobs:
      _write_frame(job)
  return root


def zip_release(
    root: str, zip_path: str, top_folder: str = "RSCD dataset-1million"
) -> str:
  """Packs the release tree at `root` into `zip_path` under `top_folder/`."""
  os.makedirs(os.path.dirname(os.path.abspath(zip_path)), exist_ok=True)
  with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as z:
    for folder, _, files in sorted(os.walk(root)):
      for name in sorted(files):
        path = os.path.join(folder, name)
        z.write(
            path,
            f"{top_folder}/{os.path.relpath(path, root)}".replace(os.sep, "/"),
        )
  return zip_path
