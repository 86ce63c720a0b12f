"""Where images come from: a registry of named sources, each giving an image folder.

`synthetic` generates the built-in roadtex set on first use; `folder` reads
any `ROOT/{train,val,test}/CLASS/*` tree. Both go through the same reader, so
the synthetic demo exercises exactly the path real data takes.
"""

from typing import Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from roadflax import image_folder, roadtex


def _synthetic_root(data: ml_collections.ConfigDict) -> str:
  synthetic = data.synthetic
  return roadtex.ensure_generated(
      train_per_class=synthetic.train_per_class, val_per_class=synthetic.val_per_class,
      test_per_class=synthetic.test_per_class, seed=synthetic.seed,
      cache_dir=data.cache_dir, progress=jax.process_index() == 0)


def _folder_root(data: ml_collections.ConfigDict) -> str:
  return data.root


SOURCES: dict[str, Callable[[ml_collections.ConfigDict], str]] = {
    "synthetic": _synthetic_root,
    "folder": _folder_root,
}


def load_image_folder(data: ml_collections.ConfigDict) -> image_folder.ImageFolder:
  """The scanned and validated image folder of `data.source`."""
  return image_folder.scan_image_folder(SOURCES[data.source](data))


def log_class_counts(folder: image_folder.ImageFolder) -> None:
  """One line per split: images per class (imbalance is worth seeing first)."""
  num_classes = len(folder.class_names)
  for name, split in folder.splits.items():
    counts = split.class_counts(num_classes)
    logging.info("%s: %d images (%s)", name, int(np.sum(counts)), ", ".join(
        f"{c} {n}" for c, n in zip(folder.class_names, counts)))
