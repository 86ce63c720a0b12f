"""Preprocessed images kept after the first pass (`config.data.cache`), so
later epochs and evaluations gather uint8 pixels instead of decoding JPEGs.

  MemoryCache  "memory": whole image-folder splits in RAM, owned by a run.
  DiskCache    "disk": a process's part of any split as record shards on disk,
               kept between runs.
"""

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from typing import Callable

from absl import logging
import numpy as np
import tensorflow as tf

from roadflax import files
from roadflax.data import preprocess
from roadflax.data.contract import AnySplit
from roadflax.data.contract import FolderSplit

# Images decoded per step while filling the memory cache.
_FILL_BATCH = 256
# The disk cache: images per shard file, most shards, shards read at once.
_SHARD_IMAGES = 2048
_MAX_SHARDS = 256
_READERS = 8


@dataclasses.dataclass(frozen=True)
class _Decoded:
  """A split's preprocessed images, for one (image_size, contrast)."""

  key: tuple[int, float]
  # uint8 [N, S, S, 3]. A variable, not a constant, so tf.data reads it in
  # place instead of copying it into every pipeline.
  images: tf.Variable
  valid: tf.Tensor  # bool [N]: False where the file failed to decode.


class MemoryCache:
  """Image-folder splits decoded, resized and contrasted into memory, once.

  A run's driver creates one and gives it to every pipeline it builds, so the
  pipelines of every stage, epoch and evaluation gather from one decoded copy
  of each split (N x S x S x 3 bytes; every process holds the whole split,
  since its training shard changes every epoch). A split is decoded in
  parallel on first use, again only if the preprocessing changes. Splits are
  keyed by object (`image_folder.Split` compares by identity) and held as long
  as the cache is.
  """

  def __init__(self):
    self._splits: dict[FolderSplit, _Decoded] = {}

  def examples(
      self,
      split: FolderSplit,
      p: preprocess.Preprocessing,
      columns: dict[str, np.ndarray],
  ) -> tf.data.Dataset:
    """As `preprocess.decode_files`, gathering from the decoded split."""
    decoded = self._decoded(split, p)
    columns = {**columns, "label": split.labels[columns["index"]]}
    ds = tf.data.Dataset.from_tensor_slices(columns)
    ds = ds.filter(functools.partial(_is_valid, valid=decoded.valid))
    return ds.map(
        functools.partial(_gather, images=decoded.images),
        num_parallel_calls=tf.data.AUTOTUNE,
    )

  def _decoded(
      self, split: FolderSplit, p: preprocess.Preprocessing
  ) -> _Decoded:
    """The split's images, decoded on first use or when `p` changed."""
    key = (p.image_size, p.contrast)
    decoded = self._splits.get(split)
    if decoded is None or decoded.key != key:
      self._splits.pop(split, None)  # Free the stale copy before decoding anew.
      decoded = self._splits[split] = _decode_split(split, p)
    return decoded


def _is_valid(example: dict[str, tf.Tensor], *, valid: tf.Tensor) -> tf.Tensor:
  # Drops the examples `decode_files` drops, so cached and uncached pipelines
  # yield the same batches.
  return tf.gather(valid, example["index"])


def _gather(
    example: dict[str, tf.Tensor], *, images: tf.Variable
) -> dict[str, tf.Tensor]:
  return {**example, "image": tf.gather(images, example["index"])}


def _decode_split(split: FolderSplit, p: preprocess.Preprocessing) -> _Decoded:
  """Decodes the whole split once, in parallel, into memory."""
  n, size = len(split), p.image_size
  logging.info(
      "Caching %d images at %dx%d (%.2f GiB).",
      n,
      size,
      size,
      n * size * size * 3 / 2**30,
  )
  images = tf.Variable(tf.zeros([n, size, size, 3], tf.uint8), trainable=False)
  valid = np.zeros(n, bool)
  ds = preprocess.decode_files(split, p, {"index": np.arange(n)})
  for batch in ds.batch(_FILL_BATCH).prefetch(tf.data.AUTOTUNE):
    images.scatter_update(tf.IndexedSlices(batch["image"], batch["index"]))
    valid[batch["index"].numpy()] = True
  return _Decoded(
      key=(p.image_size, p.contrast), images=images, valid=tf.constant(valid)
  )


# records(process_index=, process_count=, shuffle_seed=) of `RecordSplit`.
Records = Callable[..., tf.data.Dataset]


class DiskCache:
  """A process's part of a split, decoded, resized and contrasted once into
  uint8 record shards on disk, then read shard by shard.

  It lives in `CACHE_DIR/preprocessed/KEY/`, KEY naming the split (its
  `fingerprint`), the preprocessing and the process's part, and appears only
  when complete (written aside, then renamed), so an interrupted first epoch
  leaves nothing half-written behind. It costs S x S x 3 bytes per image.
  """

  def __init__(
      self,
      split: AnySplit,
      p: preprocess.Preprocessing,
      cache_dir: str,
      process_index: int,
      process_count: int,
  ):
    key = json.dumps(
        {
            "split": split.fingerprint,
            "image_size": p.image_size,
            "contrast": p.contrast,
            "decoding": preprocess.DECODING_VERSION,
            "part": [process_index, process_count],
        },
        sort_keys=True,
    )
    self.directory = os.path.join(
        cache_dir or files.default_cache_dir(),
        "preprocessed",
        hashlib.sha256(key.encode()).hexdigest()[:20],
    )
    self._preprocessing = p
    self._part = {
        "process_index": process_index,
        "process_count": process_count,
    }
    self._size = -(-len(split) // process_count)

  def load(self, records: Records, shuffle_seed: int | None) -> tf.data.Dataset:
    """The cached {"image", "label"} examples, written from `records` first if
    not there yet, shards in an order drawn from `shuffle_seed`."""
    if not os.path.isdir(self.directory):
      self._write(records)

    def reader(shards: tf.data.Dataset) -> tf.data.Dataset:
      if shuffle_seed is not None:
        shards = shards.shuffle(_MAX_SHARDS, seed=shuffle_seed)
      return shards.interleave(
          lambda shard: shard,
          cycle_length=_READERS,
          block_length=1,
          num_parallel_calls=tf.data.AUTOTUNE,
          deterministic=True,
      )

    return tf.data.Dataset.load(self.directory, reader_func=reader).map(
        lambda index, example: example
    )

  def _write(self, records: Records) -> None:
    p = self._preprocessing
    shards = min(_MAX_SHARDS, max(1, self._size // _SHARD_IMAGES))
    logging.info(
        "Caching about %d images at %dx%d on disk in %s (%.2f GiB, %d shards).",
        self._size,
        p.image_size,
        p.image_size,
        self.directory,
        self._size * p.image_size**2 * 3 / 2**30,
        shards,
    )
    parent = os.path.dirname(self.directory)
    os.makedirs(parent, exist_ok=True)
    writing = tempfile.mkdtemp(prefix=".writing-", dir=parent)
    try:
      ds = preprocess.decode_records(
          records(shuffle_seed=None, **self._part), p
      )
      ds.enumerate().save(
          writing, shard_func=lambda index, example: index % shards
      )
      os.rename(writing, self.directory)
    except OSError:
      if not os.path.isdir(
          self.directory
      ):  # Not another process's, finished first.
        raise
    finally:
      shutil.rmtree(writing, ignore_errors=True)
