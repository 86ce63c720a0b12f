"""Batches of an image folder's split gathered by index: `IndexedPipeline`.

Only file names are held, or with `data.cache = "memory"` the decoded split
(`caches.MemoryCache`). An epoch is a permutation drawn from (seed, epoch), or
with `data.balance = "resample"` as many draws with replacement, every class
equally likely. Global batch k is examples [k*B*P, (k+1)*B*P) of that order,
and process p takes every P-th of them, starting at p.
"""

from typing import Any, Iterator

import numpy as np
import tensorflow as tf

from roadflax.data import batching
from roadflax.data import caches
from roadflax.data import preprocess
from roadflax.data.contract import FolderSplit


class IndexedPipeline(batching.Pipeline):
  """Batches of a `FolderSplit` for this process, by index into its files."""

  def __init__(
      self,
      split: FolderSplit,
      data_config: Any,
      *,
      memory_cache: caches.MemoryCache | None = None,
      **kwargs: Any,
  ):
    """As `batching.Pipeline`.

    Args:
      split: the images to serve.
      data_config: `config.data`.
      memory_cache: with `data.cache = "memory"`, the run's decoded splits,
        shared by every pipeline built with it; default: one of this
        pipeline's own, shared by its epochs.
      **kwargs: `process_index`, `process_count`.
    """
    super().__init__(split, data_config, **kwargs)
    self._memory_cache = None
    if _held_in_memory(self.settings, len(split)):
      self._memory_cache = (
          caches.MemoryCache() if memory_cache is None else memory_cache
      )

  def train_batches(
      self, *, batch_size: int, seed: int, epoch: int, skip_batches: int = 0
  ) -> Iterator[batching.Batch]:
    """As `batching.Pipeline.train_batches`."""
    num_batches = self._num_train_batches(batch_size, skip_batches)
    rng = np.random.default_rng([seed, epoch])
    if self.settings.balance == "resample":
      order = _balanced_draw(self.split.labels, rng)
    else:
      order = rng.permutation(len(self.split))
    positions = np.arange(
        self.process_index,
        num_batches * batch_size * self.process_count,
        self.process_count,
    )
    # The shard once more, behind, only refills what decode failures drop.
    stream = np.concatenate([positions[skip_batches * batch_size :], positions])
    ds = self._examples({"index": order[stream], "position": stream})
    return self._train_batches(
        ds,
        seed=seed,
        epoch=epoch,
        batch_size=batch_size,
        count=num_batches - skip_batches,
    )

  def eval_batches(self, *, batch_size: int) -> Iterator[batching.Batch]:
    """As `batching.Pipeline.eval_batches`, in file order: process p takes
    examples p, p + P, ..."""
    index = np.arange(self.process_index, len(self.split), self.process_count)
    ds = self._examples({"index": index}).map(
        self._eval_example, num_parallel_calls=tf.data.AUTOTUNE
    )
    return self._padded_batches(ds, batch_size)

  def _examples(self, columns: dict[str, np.ndarray]) -> tf.data.Dataset:
    """`columns` plus each example's "label" and uint8 "image", without the
    examples whose file fails to decode (`preprocess.decode_files`)."""
    p = self.settings.preprocessing
    if self._memory_cache is not None:
      return self._memory_cache.examples(self.split, p, columns)
    return preprocess.decode_files(self.split, p, columns)


def _balanced_draw(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """len(labels) indices drawn with replacement, every class equally likely."""
  weights = batching.balancing_factors(np.bincount(labels))[labels]
  return rng.choice(len(labels), size=len(labels), p=weights / weights.sum())


def _held_in_memory(settings: batching.Settings, num_images: int) -> bool:
  """Whether a split of `num_images` is decoded once into memory: always with
  `data.cache = "memory"`, and with "auto" when it is small enough."""
  if settings.cache == "auto":
    size = settings.preprocessing.image_size
    return num_images * size * size * 3 <= batching.AUTO_MEMORY_BYTES
  return settings.cache == "memory"
