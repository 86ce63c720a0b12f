"""A split's images as an export takes them: uint8 pixels with their labels.

Exports read images themselves rather than through the training pipelines,
which hand out normalised floats: an export's input is the uint8 output of
`preprocess.preprocess_image`. Files or records that fail to decode are
dropped and logged, as in training.
"""

from typing import Iterator

import numpy as np
import tensorflow as tf

from roadflax.data import batching, preprocess
from roadflax.data.contract import AnySplit, FolderSplit
from roadflax.data.preprocess import Preprocessing


def pixel_batches(
    split: AnySplit,
    p: Preprocessing,
    *,
    batch_size: int = 64,
    limit: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(uint8 pixels [B, S, S, 3], int32 labels [B]) of `split`, in batches.

  Args:
    split: the images.
    p: the preprocessing, the export's (not the data config's).
    batch_size: images per batch; the last batch may be smaller.
    limit: at most this many images: for an image folder, spread evenly over
      its files (which are grouped by class); for records, the first ones
      in a seeded file order. None: every image once, in the split's order.
  """
  ds = _examples(split, p, limit).map(
      lambda example: (example["image"], example["label"])
  )
  if limit is not None:
    ds = ds.take(limit)
  yield from batching.numpy_batches(ds.batch(batch_size))


def read_pixels(
    split: AnySplit, p: Preprocessing, limit: int
) -> tuple[np.ndarray, np.ndarray]:
  """`pixel_batches(split, p, limit=limit)` as one array of pixels and one
  of labels (empty when no image decodes)."""
  batches = list(pixel_batches(split, p, limit=limit))
  if not batches:
    size = p.image_size
    return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int32)
  return tuple(np.concatenate(arrays) for arrays in zip(*batches))


def _examples(
    split: AnySplit, p: Preprocessing, limit: int | None
) -> tf.data.Dataset:
  """{"image": uint8 [S, S, 3], "label": int32, ...} of the split; a split
  that is no image folder is a `contract.RecordSplit`."""
  if isinstance(split, FolderSplit):
    count = len(split)
    if limit is None or limit >= count:
      index = np.arange(count)
    else:
      index = np.unique(np.linspace(0, count - 1, limit).round().astype(int))
    return preprocess.decode_files(split, p, {"index": index})
  records = split.records(
      process_index=0,
      process_count=1,
      shuffle_seed=None if limit is None else 0,
  )
  return preprocess.decode_records(records, p)
