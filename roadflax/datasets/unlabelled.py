"""Images without labels, for a stage that trains on data of its own
(`stages.NAME.data`, a reconstruction stage): the published method
pre-trains its autoencoder on road images nobody labelled.

A `folder` source is every image under `root`, at any depth (class folders
or none: names are ignored), and a frame every `video_every_seconds` of every
video there (decoded once with PyAV and kept as JPEGs under the cache
directory, so later epochs and resumed runs read the same frames). Any other
source (`tfds`, `rscd`) gives its train split, labels ignored.
"""

import copy
import hashlib
import os
from typing import Any

from absl import logging
import ml_collections
from PIL import Image

from roadflax import files
from roadflax.data import image_folder
from roadflax.data.contract import AnySplit
from roadflax.datasets import sources
from roadflax.drives import frames
from roadflax.errors import UserError

_DONE = "complete"  # written last in a video's frame folder


def stage_data(
    run_data: ml_collections.ConfigDict, own: ml_collections.ConfigDict
) -> ml_collections.ConfigDict | None:
  """A stage's data of its own (`stages.NAME.data`): the run's `data` with
  the fields the stage sets; None while its `source` is unset."""
  if own.source is None:
    return None
  data = copy.deepcopy(run_data.to_dict())
  data.update({key: value for key, value in own.items() if value is not None})
  return ml_collections.ConfigDict(data)


def load_unlabelled(data: ml_collections.ConfigDict) -> AnySplit:
  """The images of `data` as one split whose labels mean nothing."""
  if data.source != "folder":
    return sources.load_dataset(data).splits["train"]
  if not os.path.isdir(data.root):
    raise UserError(
        f"unlabelled data folder {data.root!r} does not exist: set"
        " --config.stages.NAME.data.root to a folder of images or videos"
    )
  images, videos = _files(data.root)
  cache = os.path.join(data.cache_dir or files.default_cache_dir(), "frames")
  unreadable = []
  for video in videos:
    try:
      images.extend(video_frames(video, data.video_every_seconds, cache))
    except UserError as error:
      unreadable.append(str(error))
  if unreadable:
    logging.warning(
        "%d of %d videos under %s skipped: %s",
        len(unreadable),
        len(videos),
        data.root,
        "; ".join(unreadable[:3]),
    )
  if not images:
    raise UserError(
        f"{data.root} holds no images"
        f" ({'/'.join(image_folder.IMAGE_EXTENSIONS)}) and no readable videos"
        f" ({len(videos)} found): nothing to pre-train on"
    )
  return image_folder.checked_split(
      data.root, images, [0] * len(images), num_classes=1
  )


def video_frames(path: str, every: float, cache: str) -> list[str]:
  """JPEG files of a frame every `every` seconds of the video `path`,
  decoded on the first call and read from `cache` after it."""
  stat = os.stat(path)
  key = hashlib.sha256(
      f"{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{every}"
      .encode()
  ).hexdigest()[:16]
  folder = os.path.join(cache, key)
  if not os.path.exists(os.path.join(folder, _DONE)):
    os.makedirs(folder, exist_ok=True)
    with frames.VideoFrames(path, every) as video:
      for sample in video:
        Image.fromarray(sample.pixels).save(
            os.path.join(folder, f"{sample.frame:08d}.jpg"), quality=95
        )
      if video.warning:
        logging.warning("%s", video.warning)
    with open(os.path.join(folder, _DONE), "w") as f:
      f.write(path + "\n")
  return sorted(
      os.path.join(folder, name)
      for name in os.listdir(folder)
      if name.endswith(".jpg")
  )


def _files(root: str) -> tuple[list[str], list[str]]:
  """The images and the videos under `root`, each sorted by path."""
  images, videos = [], []
  for folder, subfolders, names in os.walk(root):
    subfolders.sort()
    for name in sorted(names):
      path = os.path.join(folder, name)
      if name.lower().endswith(image_folder.IMAGE_EXTENSIONS):
        images.append(path)
      elif frames.is_video(name):
        videos.append(path)
  return images, videos


def describe(data: ml_collections.ConfigDict, split: Any) -> dict[str, Any]:
  """What a stage trained on, for its summary.json."""
  described = {"source": data.source, "images": len(split), "labels": "ignored"}
  if data.source == "folder":
    described["root"] = os.path.abspath(data.root)
    described["video_every_seconds"] = data.video_every_seconds
  else:
    described["name"] = data.tfds_name or f"rscd/{data.variant}"
  return described
