"""TFDS data sets as roadflax data: `data.source = 'rscd'` or `'tfds'`.

A prepared TFDS data set is read as a stream of file shards, never held in
memory: `TfdsSplit.records` gives this process's even part of a split, its
files in a seeded order, images still encoded (`streaming.StreamPipeline`
decodes them in parallel). Class counts come from one pass over the labels
alone (images are not decoded, but every record is read: about 10 s per 100k
examples here, minutes for all of RSCD), so they are kept in the cache
directory, keyed by the prepared files, and later runs start at once.
"""

import dataclasses
import hashlib
import json
import os
import time

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from roadflax import files
from roadflax.data.contract import SPLIT_NAMES
from roadflax.datasets import rscd_builder
from roadflax.errors import UserError

_COUNT_BATCH = 4096


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsSplit:
  """One split of a prepared TFDS data set: a `contract.RecordSplit`.

  Attributes:
    builder: the prepared builder.
    split: a TFDS split spec: "train", "validation", "train[:90%]", ...
    counts: examples per class, int64 [num_classes].
    image_key, label_key: the features holding the encoded image and the label.
  """

  builder: tfds.core.DatasetBuilder
  split: str
  counts: np.ndarray
  image_key: str
  label_key: str
  skipped: tuple[
      str, ...
  ] = ()  # Bad files were dropped when the set was built.

  def __len__(self) -> int:
    return int(self.counts.sum())

  def class_counts(self, num_classes: int) -> np.ndarray:
    return np.pad(self.counts, (0, max(0, num_classes - len(self.counts))))

  @property
  def fingerprint(self) -> str:
    """Names the prepared data set, its version and the split."""
    return f"tfds:{self.builder.info.full_name}:{self.builder.data_dir}:{self.split}"

  def records(
      self, *, process_index: int, process_count: int, shuffle_seed: int | None
  ) -> tf.data.Dataset:
    """This process's part of the split: {"encoded": string, "label": int32}.

    Every process gets an even part (sizes differ by at most one). With
    `shuffle_seed`, the part's files are read in a seeded order, interleaved;
    without, in the data set's order.
    """
    part = tfds.even_splits(self.split, n=process_count)[process_index]
    read_config = tfds.ReadConfig(
        shuffle_seed=shuffle_seed,
        try_autocache=False,
        interleave_cycle_length=16,
        interleave_block_length=1,
    )
    ds = self.builder.as_dataset(
        split=part,
        shuffle_files=shuffle_seed is not None,
        read_config=read_config,
        decoders={self.image_key: tfds.decode.SkipDecoding()},
    )
    return ds.map(self._record, num_parallel_calls=tf.data.AUTOTUNE)

  def _record(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {
        "encoded": example[self.image_key],
        "label": tf.cast(example[self.label_key], tf.int32),
    }


@dataclasses.dataclass(frozen=True)
class TfdsData:
  """A TFDS data set's classes and its train/val/test splits."""

  root: str  # What it is, for messages and reports.
  class_names: tuple[str, ...]
  splits: dict[str, TfdsSplit]


def load_rscd(data: ml_collections.ConfigDict) -> TfdsData:
  """`rscd/<data.variant>`, built from `data.manual_dir` on first use."""
  if data.variant not in [c.name for c in rscd_builder.Rscd.BUILDER_CONFIGS]:
    raise UserError(
        f"--config.data.variant={data.variant!r} is not one of "
        f"{', '.join(c.name for c in rscd_builder.Rscd.BUILDER_CONFIGS)}"
    )
  builder = tfds.builder(f"rscd/{data.variant}", data_dir=data.data_dir or None)
  if not _prepared(builder):
    if not data.manual_dir:
      raise UserError(
          f"rscd/{data.variant} is not prepared in {builder.data_dir}; set "
          "--config.data.manual_dir to the folder holding the RSCD release "
          "(its zip or the extracted train/, vali_20k/, test_50k/)"
      )
    if not os.path.isdir(data.manual_dir):
      raise UserError(
          f"--config.data.manual_dir={data.manual_dir} does not exist"
      )
    start = time.time()
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              manual_dir=data.manual_dir
          )
      )
    except FileNotFoundError as e:
      raise UserError(f"cannot build rscd/{data.variant}: {e}") from e
    logging.info(
        "prepared rscd/%s in %s in %.0f s",
        data.variant,
        builder.data_dir,
        time.time() - start,
    )
  return _load(
      builder,
      ("train", "validation", "test"),
      f"rscd/{data.variant}",
      data.cache_dir,
  )


def load_tfds(data: ml_collections.ConfigDict) -> TfdsData:
  """Any TFDS image-classification data set by name (`data.tfds_name`),
  downloaded and prepared by TFDS when it is not yet in `data.data_dir`."""
  if not data.tfds_name:
    raise UserError(
        "data.source is 'tfds' but no data.tfds_name is given: add "
        "--config.data.tfds_name=NAME (e.g. 'beans' or 'rscd/3class')"
    )
  try:
    builder = tfds.builder(data.tfds_name, data_dir=data.data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise UserError(
        f"--config.data.tfds_name={data.tfds_name!r}: {str(e).splitlines()[0]}"
    ) from e
  if not _prepared(builder):
    builder.download_and_prepare()
  return _load(builder, tuple(data.tfds_splits), data.tfds_name, data.cache_dir)


def _prepared(builder: tfds.core.DatasetBuilder) -> bool:
  return tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))


def _supervised_keys(builder: tfds.core.DatasetBuilder) -> tuple[str, str]:
  keys = builder.info.supervised_keys
  image_key, label_key = keys if keys and len(keys) == 2 else ("image", "label")
  features = dict(builder.info.features.items())
  if not isinstance(
      features.get(image_key), tfds.features.Image
  ) or not isinstance(features.get(label_key), tfds.features.ClassLabel):
    raise UserError(
        f"{builder.name} has no image and class-label features "
        f"(supervised keys {keys}); roadflax classifies images"
    )
  return image_key, label_key


def _load(
    builder: tfds.core.DatasetBuilder,
    split_specs: tuple[str, ...],
    name: str,
    cache_dir: str,
) -> TfdsData:
  if len(split_specs) != len(SPLIT_NAMES):
    raise UserError(
        "--config.data.tfds_splits needs 3 split specs (train, val, test), "
        f"got {list(split_specs)}"
    )
  image_key, label_key = _supervised_keys(builder)
  class_names = tuple(builder.info.features[label_key].names)
  splits = {}
  for ours, spec in zip(SPLIT_NAMES, split_specs):
    try:
      counts = _cached_label_counts(
          builder, spec, label_key, len(class_names), cache_dir
      )
    except (ValueError, KeyError) as e:
      raise UserError(
          f"{name} has no split {spec!r} (it has: "
          f"{', '.join(builder.info.splits)}); set --config.data.tfds_splits"
      ) from e
    if counts.sum() == 0:
      raise UserError(f"{name} split {spec!r} is empty")
    splits[ours] = TfdsSplit(builder, spec, counts, image_key, label_key)
  return TfdsData(
      root=f"{name} in {builder.data_dir}",
      class_names=class_names,
      splits=splits,
  )


def _cached_label_counts(
    builder: tfds.core.DatasetBuilder,
    split: str,
    label_key: str,
    num_classes: int,
    cache_dir: str,
) -> np.ndarray:
  """`_label_counts`, kept under CACHE_DIR/label_counts/ once counted.

  The key names the prepared set (name, config, version, directory), the
  split, and the state of its dataset_info.json (contents and modification
  time), which preparing the set again rewrites.
  """
  info_path = os.path.join(builder.data_dir, "dataset_info.json")
  with tf.io.gfile.GFile(info_path, "rb") as f:
    key = hashlib.sha256(f.read())
  key.update(
      json.dumps([
          builder.info.full_name,
          builder.data_dir,
          split,
          label_key,
          tf.io.gfile.stat(info_path).mtime_nsec,
      ]).encode()
  )
  path = os.path.join(
      cache_dir or files.default_cache_dir(),
      "label_counts",
      f"{key.hexdigest()[:20]}.json",
  )
  if os.path.exists(path):
    return np.asarray(files.read_json(path)["counts"], np.int64)
  counts = _label_counts(builder, split, label_key, num_classes)
  files.atomic_write_json(
      path,
      {
          "data_set": builder.info.full_name,
          "data_dir": builder.data_dir,
          "split": split,
          "counts": counts.tolist(),
      },
  )
  return counts


def _label_counts(
    builder: tfds.core.DatasetBuilder,
    split: str,
    label_key: str,
    num_classes: int,
) -> np.ndarray:
  """Examples per class of `split`, reading labels only."""
  ds = builder.as_dataset(
      split=split,
      decoders=tfds.decode.PartialDecoding({label_key: True}),
      read_config=tfds.ReadConfig(try_autocache=False),
  )
  counts = np.zeros(num_classes, np.int64)
  for labels in ds.map(lambda x: x[label_key]).batch(_COUNT_BATCH).prefetch(2):
    counts += np.bincount(labels.numpy(), minlength=num_classes)
  return counts
