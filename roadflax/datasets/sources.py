"""Where images come from: a registry of named sources, each giving a
`contract.DataSet` (`class_names`, `root` naming it in messages, and the
train, val and test splits).

`synthetic` generates the built-in roadtex set on first use and `folder` reads
any `ROOT/{train,val,test}/CLASS/*` tree, or `ROOT/CLASS/...` split by group
(`grouped_folder`), both through the same image-folder reader, so the
synthetic demo exercises exactly the path real data takes.
`rscd` builds the RSCD release into TFDS on first use and `tfds` reads any
prepared TFDS image-classification set; both stream (`tfds_source`).
"""

import os
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from roadflax.data import grouped_folder
from roadflax.data.contract import DataSet
from roadflax.datasets import roadtex, tfds_source
from roadflax.errors import UserError


def _synthetic(
    data: ml_collections.ConfigDict,
) -> grouped_folder.GroupedFolder:
  synthetic = data.synthetic
  return grouped_folder.scan(
      roadtex.ensure_generated(
          train_per_class=synthetic.train_per_class,
          val_per_class=synthetic.val_per_class,
          test_per_class=synthetic.test_per_class,
          seed=synthetic.seed,
          cache_dir=data.cache_dir,
          progress=jax.process_index() == 0,
      ),
      grouped_folder.Grouping.from_config(data),
  )


def _folder(
    data: ml_collections.ConfigDict, all_as_test: bool = False
) -> grouped_folder.GroupedFolder:
  return grouped_folder.scan(
      data.root,
      grouped_folder.Grouping.from_config(data),
      all_as_test=all_as_test,
  )


SOURCES: dict[str, Callable[[ml_collections.ConfigDict], DataSet]] = {
    "synthetic": _synthetic,
    "folder": _folder,
    "rscd": tfds_source.load_rscd,
    "tfds": tfds_source.load_tfds,
}


def load_dataset(
    data: ml_collections.ConfigDict, *, all_as_test: bool = False
) -> DataSet:
  """The checked data set of `data.source`.

  `all_as_test`: a folder without split folders is one test split of all
  its images, rather than split by group (a folder a model never saw).
  """
  if data.source == "folder":
    return _folder(data, all_as_test)
  return SOURCES[data.source](data)


def load_dataset_for(
    data: ml_collections.ConfigDict,
    class_names: Sequence[str],
    model: str,
    *,
    trained_on: ml_collections.ConfigDict | None = None,
) -> DataSet:
  """`load_dataset(data)`, which must have the classes a trained model knows.

  Args:
    data: where the images are.
    class_names: the model's classes, in its order.
    model: names the model in the message, e.g. "the model in runs/demo".
    trained_on: the data the model was trained on; a folder other than it
      without split folders is tested whole (`load_dataset`'s all_as_test).

  Raises:
    UserError: the data set has other classes (or another order).
  """
  dataset = load_dataset(
      data,
      all_as_test=trained_on is not None and is_other_folder(data, trained_on),
  )
  if tuple(dataset.class_names) != tuple(class_names):
    raise UserError(
        f"{dataset.root} has classes {list(dataset.class_names)} but {model}"
        f" was trained on {list(class_names)}"
    )
  return dataset


def is_other_folder(
    data: ml_collections.ConfigDict, trained_on: ml_collections.ConfigDict
) -> bool:
  """Whether `data` is a folder that is not the one `trained_on` names."""
  if data.source != "folder":
    return False
  return trained_on.get("source") != "folder" or os.path.realpath(
      trained_on.get("root", "")
  ) != os.path.realpath(data.root)


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
