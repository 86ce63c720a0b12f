"""What both pipelines share: the checked settings they read from
`config.data`, the batch counts, and their base class `Pipeline`.

Batches are numpy dicts for this process; batch sizes given to a pipeline are
per process (global / process count):

  pipeline.train_batches(batch_size=, seed=, epoch=, skip_batches=0)
    {"image": float32 [B, S, S, 3], "label": int32 [B]}
  pipeline.eval_batches(batch_size=)
    the same plus "mask": bool [B], False on padding.

Determinism. An epoch's order is drawn from (seed, epoch), and every random
augmentation is a stateless function of (seed, epoch, position in the epoch).
So any batch can be rebuilt without replaying the ones before it:
`skip_batches` resumes mid-epoch on exactly the batches an uninterrupted run
would see, skipping file names or records rather than decoded images.

Multi-host. Each process reads its own part of every epoch; all processes
yield the same number of batches, so collective steps stay in lockstep.
`process_index`/`process_count` default to JAX's.

Files that fail to decode are dropped (`preprocess`). In training, the
epoch's end is refilled from the start of the process's part, so the batch
count holds (but batches after the bad file shift by one, so a resume past it
is not exact); an evaluation simply leaves it out of its count.
"""

import abc
import dataclasses
import functools
from typing import Any, Iterator

import jax
import numpy as np
import tensorflow as tf

from roadflax.data import augment
from roadflax.data import preprocess
from roadflax.data.contract import AnySplit
from roadflax.errors import UserError

CACHE_MODES = ("auto", "none", "memory", "disk")
# "auto" holds an image-folder split in memory when its decoded images take at
# most this many bytes (20,000 frames at 224 px), and decodes per epoch
# otherwise: a small folder's epochs are then not bound by JPEG decoding.
AUTO_MEMORY_BYTES = 3 * 2**30
BALANCE_MODES = ("none", "class_weights", "resample")

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Settings:
  """All that a pipeline reads from `config.data`, checked."""

  preprocessing: preprocess.Preprocessing
  augmentation: augment.Augmentation
  cache: str  # One of CACHE_MODES.
  cache_dir: str
  balance: str  # One of BALANCE_MODES.
  shuffle_buffer: int

  @classmethod
  def from_config(cls, data_config: Any) -> "Settings":
    """Reads and checks `data_config` (`config.data`).

    Raises:
      UserError: a field has an unusable value.
    """
    for key, allowed in (("cache", CACHE_MODES), ("balance", BALANCE_MODES)):
      value = getattr(data_config, key)
      if value not in allowed:
        raise UserError(
            f"--config.data.{key}={value!r} is not one of {', '.join(allowed)}"
        )
    if data_config.shuffle_buffer < 1:
      raise UserError(
          f"--config.data.shuffle_buffer={data_config.shuffle_buffer}"
          " must be at least 1"
      )
    return cls(
        preprocessing=preprocess.Preprocessing.from_config(data_config),
        augmentation=augment.Augmentation.from_config(data_config.augment),
        cache=data_config.cache,
        cache_dir=data_config.cache_dir,
        balance=data_config.balance,
        shuffle_buffer=data_config.shuffle_buffer,
    )


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full global batches in an epoch (the remainder is dropped).

  Raises:
    UserError: the split is smaller than one global batch.
  """
  if global_batch_size <= 0:
    raise UserError(f"batch size is {global_batch_size}; set a positive one")
  steps = num_examples // global_batch_size
  if steps == 0:
    raise UserError(
        f"{num_examples} training images are fewer than one batch "
        f"of {global_batch_size}; lower batch_size or add images"
    )
  return steps


def num_eval_batches(
    num_examples: int, batch_size: int, process_count: int = 1
) -> int:
  """Batches each process yields to cover `num_examples`, the last padded."""
  return -(-num_examples // (batch_size * process_count))


def balancing_factors(counts: np.ndarray) -> np.ndarray:
  """total / (classes x count) per class, 0 for a class with no example.

  With these factors every class weighs the same in expectation: as loss
  weights (`data.balance = "class_weights"`), or as the average number of
  copies a balanced draw takes of each example (`"resample"`, one pass over
  the data then yields about one epoch).
  """
  counts = np.asarray(counts, np.float64)
  present = counts > 0
  return np.where(
      present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0
  )


def numpy_batches(ds: tf.data.Dataset) -> Iterator[Batch]:
  """Prefetches `ds` in deterministic order, as numpy for JAX."""
  options = tf.data.Options()
  options.deterministic = True
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options).as_numpy_iterator()


class Pipeline(abc.ABC):
  """Batches of one split for this process, epoch after epoch.

  Create one per split and use it for every epoch. `pipelines.pipeline_for`
  picks the subclass.
  """

  def __init__(
      self,
      split: AnySplit,
      data_config: Any,
      *,
      process_index: int | None = None,
      process_count: int | None = None,
  ):
    """Checks `data_config` (`config.data`) now, so mistakes surface early.

    Args:
      split: the images to serve.
      data_config: `config.data`.
      process_index: this process (default: `jax.process_index()`).
      process_count: processes (default: `jax.process_count()`).

    Raises:
      UserError: a field of `data_config` has an unusable value.
    """
    self.split = split
    self.process_index = (
        jax.process_index() if process_index is None else process_index
    )
    self.process_count = (
        jax.process_count() if process_count is None else process_count
    )
    if not 0 <= self.process_index < self.process_count:
      raise ValueError(
          f"process_index {self.process_index} not in [0, {self.process_count})"
      )
    self.settings = Settings.from_config(data_config)

  @abc.abstractmethod
  def train_batches(
      self, *, batch_size: int, seed: int, epoch: int, skip_batches: int = 0
  ) -> Iterator[Batch]:
    """One epoch of augmented training batches for this process.

    Args:
      batch_size: examples per batch on this process.
      seed: the run's seed.
      epoch: which epoch; with `seed`, fixes the order and the augmentation.
      skip_batches: batches of the epoch to skip, to resume mid-epoch.

    Returns:
      `steps_per_epoch(len(split), batch_size * process_count) - skip_batches`
      batches {"image": float32 [B, S, S, 3], "label": int32 [B]}.
    """

  @abc.abstractmethod
  def eval_batches(self, *, batch_size: int) -> Iterator[Batch]:
    """This process's part of the split once, padded.

    Every process yields `num_eval_batches(len(split), batch_size,
    process_count)` batches, the last ones padded with zero images whose mask
    is False.

    Returns:
      Batches {"image": float32 [B, S, S, 3], "label": int32 [B],
      "mask": bool [B]}.
    """

  def _num_train_batches(self, batch_size: int, skip_batches: int) -> int:
    """Batches in a whole epoch, checking that `skip_batches` is within it."""
    num_batches = steps_per_epoch(
        len(self.split), batch_size * self.process_count
    )
    if not 0 <= skip_batches <= num_batches:
      raise ValueError(
          f"skip_batches={skip_batches} outside [0, {num_batches}]"
      )
    return num_batches

  def _train_batches(
      self,
      ds: tf.data.Dataset,
      *,
      seed: int,
      epoch: int,
      batch_size: int,
      count: int,
  ) -> Iterator[Batch]:
    """`count` batches of `ds`'s examples (each with its "position" in the
    epoch), augmented and normalised."""
    ds = ds.map(
        functools.partial(self._train_example, seed=seed, epoch=epoch),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return numpy_batches(ds.batch(batch_size, drop_remainder=True).take(count))

  def _train_example(
      self, example: dict[str, tf.Tensor], *, seed: int, epoch: int
  ) -> dict[str, tf.Tensor]:
    """Augments and normalises one example, keyed by its place in the epoch."""
    p = self.settings.preprocessing
    example_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, epoch], tf.int64), example["position"]
    )
    image = augment.augment(
        example["image"], example_seed, self.settings.augmentation, p.image_size
    )
    return {
        "image": preprocess.normalize(image, p.mean, p.std),
        "label": example["label"],
    }

  def _eval_example(
      self, example: dict[str, tf.Tensor]
  ) -> dict[str, tf.Tensor]:
    """Normalises one example and marks it real (not padding)."""
    p = self.settings.preprocessing
    return {
        "image": preprocess.normalize(example["image"], p.mean, p.std),
        "label": example["label"],
        "mask": tf.constant(True),
    }

  def _padded_batches(
      self, ds: tf.data.Dataset, batch_size: int
  ) -> Iterator[Batch]:
    """`ds` in batches, padded so every process yields as many."""
    size = self.settings.preprocessing.image_size
    padding = tf.data.Dataset.from_tensors({
        "image": tf.zeros([size, size, 3], tf.float32),
        "label": tf.constant(0, tf.int32),
        "mask": tf.constant(False),
    }).repeat()
    ds = ds.concatenate(padding).batch(batch_size, drop_remainder=True)
    return numpy_batches(
        ds.take(
            num_eval_batches(len(self.split), batch_size, self.process_count)
        )
    )
