"""Batches of a split read as a stream, in memory bounded whatever its size:
`StreamPipeline`, for TFDS splits and for `data.cache = "disk"`.

Each process reads its own fixed part of the split (`records`), its files or
record shards in an order drawn from (seed, epoch), through a shuffle buffer
of `data.shuffle_buffer` examples (still encoded, or preprocessed uint8 from
the disk cache), decoded in parallel. Augmentation is keyed by (seed, epoch,
position in the process's stream), and `skip_batches` skips records before
they are decoded, so a resumed epoch continues exactly.
`data.balance = "resample"` repeats examples of rare classes and thins common
ones (`batching.balancing_factors`), still about one pass over the data an
epoch.
"""

import functools
from typing import Any, Iterator

import numpy as np
import tensorflow as tf

from roadflax.data import batching
from roadflax.data import caches
from roadflax.data import preprocess
from roadflax.data.contract import AnySplit
from roadflax.data.contract import FolderSplit
from roadflax.data.contract import RecordSplit


class StreamPipeline(batching.Pipeline):
  """Batches of a `RecordSplit`, or of a `FolderSplit` read as records."""

  def __init__(self, split: AnySplit, data_config: Any, **kwargs: Any):
    """As `batching.Pipeline`.

    Raises:
      TypeError: `split` is neither a `FolderSplit` nor a `RecordSplit`.
    """
    super().__init__(split, data_config, **kwargs)
    if isinstance(split, FolderSplit):
      self._records = functools.partial(_folder_records, split)
    elif isinstance(split, RecordSplit):
      self._records = split.records
    else:
      raise TypeError(
          f"{type(split).__name__} is neither a FolderSplit nor a "
          "RecordSplit: it has no paths and labels, nor records()"
      )
    self._disk_cache = None
    if self.settings.cache == "disk":
      self._disk_cache = caches.DiskCache(
          split,
          self.settings.preprocessing,
          self.settings.cache_dir,
          self.process_index,
          self.process_count,
      )
    self._rates = batching.balancing_factors(split.class_counts(0))

  def train_batches(
      self, *, batch_size: int, seed: int, epoch: int, skip_batches: int = 0
  ) -> Iterator[batching.Batch]:
    """As `batching.Pipeline.train_batches`, from this process's stream."""
    num_batches = self._num_train_batches(batch_size, skip_batches)
    epoch_seed = int(np.random.default_rng([seed, epoch]).integers(2**31))
    # Repeated: balanced sampling and decode failures may need a little more
    # than one pass to fill the epoch.
    ds = self._stream(epoch_seed).repeat()
    if self.settings.balance == "resample":
      ds = ds.enumerate().flat_map(
          functools.partial(
              _copies,
              seed=epoch_seed,
              rates=tf.constant(self._rates, tf.float32),
          )
      )
    ds = ds.shuffle(self.settings.shuffle_buffer, seed=epoch_seed)
    ds = self._decoded(ds.skip(skip_batches * batch_size))
    ds = ds.enumerate(start=skip_batches * batch_size).map(
        lambda position, example: {**example, "position": position}
    )
    return self._train_batches(
        ds,
        seed=seed,
        epoch=epoch,
        batch_size=batch_size,
        count=num_batches - skip_batches,
    )

  def eval_batches(self, *, batch_size: int) -> Iterator[batching.Batch]:
    """As `batching.Pipeline.eval_batches`, in the part's own order."""
    ds = self._decoded(self._stream(None)).map(
        self._eval_example, num_parallel_calls=tf.data.AUTOTUNE
    )
    return self._padded_batches(ds, batch_size)

  def _stream(self, shuffle_seed: int | None) -> tf.data.Dataset:
    """This process's records, from the disk cache when there is one."""
    if self._disk_cache is not None:
      return self._disk_cache.load(self._records, shuffle_seed)
    return self._records(
        process_index=self.process_index,
        process_count=self.process_count,
        shuffle_seed=shuffle_seed,
    )

  def _decoded(self, ds: tf.data.Dataset) -> tf.data.Dataset:
    """{"image": uint8 [S, S, 3], "label"}, decoding records that are still
    encoded, without those that fail to decode."""
    if "encoded" not in ds.element_spec:
      return ds
    return preprocess.decode_records(ds, self.settings.preprocessing)


def _copies(
    index: tf.Tensor,
    example: dict[str, tf.Tensor],
    *,
    seed: int,
    rates: tf.Tensor,
) -> tf.data.Dataset:
  """The example `rate` times, rounded up or down at random (keyed by its
  place in the stream): rare classes are repeated, common ones thinned."""
  rate = tf.gather(rates, example["label"])
  draw = tf.random.stateless_uniform(
      [], tf.stack([tf.constant(seed, tf.int64), index])
  )
  copies = tf.cast(tf.floor(rate + draw), tf.int64)
  return tf.data.Dataset.from_tensors(example).repeat(copies)


def _folder_records(
    split: FolderSplit,
    *,
    process_index: int,
    process_count: int,
    shuffle_seed: int | None,
) -> tf.data.Dataset:
  """`RecordSplit.records` of an image folder's split: this process's strided
  part, in file order or shuffled with `shuffle_seed`."""
  index = np.arange(process_index, len(split), process_count)
  if shuffle_seed is not None:
    index = np.random.default_rng(shuffle_seed).permutation(index)
  ds = tf.data.Dataset.from_tensor_slices(
      {"path": np.asarray(split.paths)[index], "label": split.labels[index]}
  )
  return ds.map(
      lambda x: {"encoded": tf.io.read_file(x["path"]), "label": x["label"]},
      num_parallel_calls=tf.data.AUTOTUNE,
  )
