"""Where images come from: a registry of named sources, each giving a
`contract.DataSet` (`class_names`, `root` naming it in messages, and the
train, val and test splits).

`synthetic` generates the built-in roadtex set on first use and `folder` reads
any `ROOT/{train,val,test}/CLASS/*` tree, both through the same image-folder
reader, so the synthetic demo exercises exactly the path real data takes.
`rscd` builds the RSCD release into TFDS on first use and `tfds` reads any
prepared TFDS image-classification set; both stream (`tfds_source`).
"""

from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from roadflax.data import image_folder
from roadflax.data.contract import DataSet
from roadflax.datasets import roadtex, tfds_source
from roadflax.errors import UserError


def _synthetic(data: ml_collections.ConfigDict) -> image_folder.ImageFolder:
  synthetic = data.synthetic
  return image_folder.scan_image_folder(
      roadtex.ensure_generated(
          train_per_class=synthetic.train_per_class,
          val_per_class=synthetic.val_per_class,
          test_per_class=synthetic.test_per_class,
          seed=synthetic.seed,
          cache_dir=data.cache_dir,
          progress=jax.process_index() == 0,
      )
  )


def _folder(data: ml_collections.ConfigDict) -> image_folder.ImageFolder:
  return image_folder.scan_image_folder(data.root)


SOURCES: dict[str, Callable[[ml_collections.ConfigDict], DataSet]] = {
    "synthetic": _synthetic,
    "folder": _folder,
    "rscd": tfds_source.load_rscd,
    "tfds": tfds_source.load_tfds,
}


def load_dataset(data: ml_collections.ConfigDict) -> DataSet:
  """The checked data set of `data.source`."""
  return SOURCES[data.source](data)


def load_dataset_for(
    data: ml_collections.ConfigDict, class_names: Sequence[str], model: str
) -> DataSet:
  """`load_dataset(data)`, which must have the classes a trained model knows.

  Args:
    data: where the images are.
    class_names: the model's classes, in its order.
    model: names the model in the message, e.g. "the model in runs/demo".

  Raises:
    UserError: the data set has other classes (or another order).
  """
  dataset = load_dataset(data)
  if tuple(dataset.class_names) != tuple(class_names):
    raise UserError(
        f"{dataset.root} has classes {list(dataset.class_names)} but {model}"
        f" was trained on {list(class_names)}"
    )
  return dataset


def log_class_counts(dataset: DataSet) -> None:
  """One line per split: images per class (imbalance is worth seeing first)."""
  num_classes = len(dataset.class_names)
  for name, split in dataset.splits.items():
    counts = split.class_counts(num_classes)
    logging.info(
        "%s %s: %d images (%s)",
        dataset.root,
        name,
        int(np.sum(counts)),
        ", ".join(f"{c} {n}" for c, n in zip(dataset.class_names, counts)),
    )
