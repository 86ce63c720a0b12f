"""tf.data input pipeline: image-folder splits to numpy batches for JAX.

API
  One image, shared by training, evaluation, prediction and the web app so they
  can never drift apart:
    preprocess_image = decode_image -> resize_and_contrast   uint8 [S, S, 3]
    normalize                                  float32 [S, S, 3], model input
    load_image(path, data_config), preprocess_bytes(data, data_config)
      both of the above for one file or upload; UserError if it is no image.
  Batches of an `image_folder.Split`, as numpy dicts, for this process:
    pipeline = SplitPipeline(split, config.data)
    pipeline.train_batches(batch_size=, seed=, epoch=, skip_batches=0)
      {"image": float32 [B, S, S, 3], "label": int32 [B]}
    pipeline.eval_batches(batch_size=)
      the same plus "mask": bool [B], False on padding.
    steps_per_epoch(num_examples, global_batch_size)
    num_eval_batches(num_examples, batch_size, process_count=1)
  Batch sizes given to a pipeline are per process (global / process count).
  pipeline_for(split, config.data) picks the pipeline: SplitPipeline (by
  index) for an image folder's Split, StreamPipeline (bounded memory, same
  methods) for TFDS splits and for `data.cache = "disk"`.

Determinism. An epoch's order is a permutation drawn from (seed, epoch), and
every random augmentation is a stateless function of (seed, epoch, position in
the epoch). So any batch can be rebuilt without replaying the ones before it:
`skip_batches` resumes mid-epoch on exactly the batches an uninterrupted run
would see, skipping file names rather than decoded images.

Multi-host. Each process reads its own strided shard of every global batch; all
processes yield the same number of batches, so collective steps stay in
lockstep. `process_index`/`process_count` default to JAX's.

Caching. With `data.cache = "memory"`, the first call for a split decodes, resizes and
contrasts the whole split once (in parallel) into an in-memory uint8 array,
and every later epoch, and every evaluation, gathers from it instead of
decoding JPEGs. Each process caches the whole split (N x S x S x 3 bytes),
since its training shard changes every epoch. The cache is keyed on the Split
object and freed with it, so pipelines of every stage share it as long as they
are built on the same Split.

Unreadable files. Files failing the cheap check in `image_folder` never reach
this module. A file that passes it but still fails to decode is dropped and
logged by tf.data rather than crashing a run. In training, the shard's first
examples refill the epoch's end, so the batch count holds (but batches after
the bad file shift by one, so a resume past it is not exact); an evaluation
simply leaves it out of its count.
"""

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator, Sequence
import weakref

from absl import logging
import jax
import numpy as np
import tensorflow as tf

from roadflax import files
from roadflax.data import exif
from roadflax.errors import UserError
from roadflax.data.image_folder import check_image_bytes
from roadflax.data.image_folder import check_image_file
from roadflax.data.image_folder import Split

# TF only feeds the host; the accelerators' memory belongs to JAX.
tf.config.set_visible_devices([], "GPU")

AUTOTUNE = tf.data.AUTOTUNE
# ITU-R 601-2 luma, as PIL's convert("L") that ImageEnhance.Contrast uses.
_LUMA = (0.299, 0.587, 0.114)
# Aspect-ratio jitter of the random crop.
_CROP_ASPECT_RANGE = (3 / 4, 4 / 3)
_CACHE_BATCH = 256
# The disk cache: images per shard file, most shards, shards read at once.
_CACHE_SHARD_IMAGES = 2048
_MAX_CACHE_SHARDS = 256
_CACHE_READERS = 8

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class _Preprocessing:
  """What turns a file into model input; all that prediction needs."""
  image_size: int
  contrast: float
  mean: tuple[float, ...]
  std: tuple[float, ...]


def _preprocessing(data_config: Any) -> _Preprocessing:
  """Reads and checks `data_config.{image_size,contrast,mean,std}`."""
  p = _Preprocessing(
      image_size=data_config.image_size,
      contrast=float(data_config.contrast),
      mean=tuple(float(m) for m in data_config.mean),
      std=tuple(float(v) for v in data_config.std))
  if not isinstance(p.image_size, int) or p.image_size <= 0:
    raise UserError(f"data.image_size is {p.image_size!r}; set a positive "
                    "integer")
  if p.contrast < 0:
    raise UserError(f"data.contrast is {p.contrast}; set it >= 0 (1.0 = off)")
  if len(p.mean) != 3 or len(p.std) != 3 or min(p.std) <= 0:
    raise UserError(f"data.mean {p.mean} / data.std {p.std} need 3 values each "
                    "(R, G, B), std all positive")
  return p


@dataclasses.dataclass(frozen=True)
class _Augmentation:
  """Random training-time changes; see `config.data.augment`."""
  flip: bool
  crop_scale: float
  brightness: float


def _augmentation(augment_config: Any) -> _Augmentation:
  """Reads and checks `data_config.augment`."""
  a = _Augmentation(flip=bool(augment_config.flip),
                    crop_scale=float(augment_config.crop_scale),
                    brightness=float(augment_config.brightness))
  if not 0 < a.crop_scale <= 1:
    raise UserError(f"data.augment.crop_scale is {a.crop_scale}; set it in "
                    "(0, 1] (1.0 = no crop)")
  if not 0 <= a.brightness <= 1:
    raise UserError(f"data.augment.brightness is {a.brightness}; set it in "
                    "[0, 1] (0 = off)")
  return a


# ------------------------------------------------------------------ one image


# Names what `decode_image` does, for caches of decoded images: raise it when
# that changes. 2: EXIF orientation applied.
DECODING_VERSION = 2


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
  """Decodes a JPEG or PNG (whatever its file name says) to uint8 [H, W, 3].

  The image is turned upright as its EXIF orientation says (`exif`), as a
  browser shows it. Grayscale and RGBA become RGB; 16-bit PNGs are reduced to
  their high byte by the decoder, i.e. scaled to 0..255 rather than wrapped.
  """
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  orientation = tf.numpy_function(_exif_orientation, [image_bytes], tf.int32,
                                  stateful=False)
  return upright(image, orientation)


def _exif_orientation(image_bytes: Any) -> np.int32:
  # A bytes object inside tf.data, a 0-d object array when called eagerly.
  data = image_bytes.item() if isinstance(image_bytes, np.ndarray) else image_bytes
  return np.int32(exif.orientation(data))


def upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
  """Turns [H, W, C] pixels stored in EXIF `orientation` (1-8) upright."""
  turns = (
      lambda: image,  # 1: upright
      lambda: tf.image.flip_left_right(image),  # 2: mirrored
      lambda: tf.image.rot90(image, 2),  # 3: upside down
      lambda: tf.image.flip_up_down(image),  # 4: mirrored upside down
      lambda: tf.image.transpose(image),  # 5: mirrored along the diagonal
      lambda: tf.image.rot90(image, 3),  # 6: turned left: turn right
      lambda: tf.image.rot90(tf.image.transpose(image), 2),  # 7: anti-diagonal
      lambda: tf.image.rot90(image, 1),  # 8: turned right: turn left
  )
  return tf.switch_case(tf.cast(orientation, tf.int32) - 1, turns)


def resize_and_contrast(image: tf.Tensor, image_size: int,
                        contrast: float) -> tf.Tensor:
  """Resizes to a square and raises contrast as the published recipe does.

  The recipe resizes the whole frame (240x360 in the original data) to
  `image_size` squared, ignoring aspect, with Lanczos; then applies PIL's
  `ImageEnhance.Contrast(contrast)`: a blend with the image's mean grey level,
  `mean + contrast * (x - mean)`, clipped and truncated to uint8 as PIL does.

  Args:
    image: [H, W, 3], any real or integer dtype in 0..255.
    image_size: side of the output.
    contrast: blend factor; 1.0 leaves the image unchanged.

  Returns:
    uint8 [image_size, image_size, 3].
  """
  resized = tf.image.resize(image, [image_size, image_size],
                            method="lanczos3", antialias=True)
  # Lanczos rings past 0..255; PIL resizes into uint8 before the contrast.
  pixels = tf.round(tf.clip_by_value(resized, 0.0, 255.0))
  grey = tf.round(tf.reduce_mean(tf.reduce_sum(pixels * _LUMA, axis=-1)))
  enhanced = grey + contrast * (pixels - grey)
  return tf.cast(tf.floor(tf.clip_by_value(enhanced, 0.0, 255.0)), tf.uint8)


def normalize(image: tf.Tensor, mean: Sequence[float],
              std: Sequence[float]) -> tf.Tensor:
  """Maps 0..255 pixels (uint8 or float) to float32 `(x / 255 - mean) / std`."""
  scaled = tf.cast(image, tf.float32) / 255.0
  return (scaled - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def preprocess_image(image_bytes: tf.Tensor, image_size: int,
                     contrast: float) -> tf.Tensor:
  """The per-image preprocessing of every path: bytes to uint8 [S, S, 3].

  What the cache stores; augmentation (training only) and `normalize` follow.
  """
  return resize_and_contrast(decode_image(image_bytes), image_size, contrast)


def load_image(path: str, data_config: Any) -> np.ndarray:
  """Reads one image file as the model sees it: float32 [S, S, 3].

  Args:
    path: a JPEG or PNG file.
    data_config: needs only `image_size`, `contrast`, `mean` and `std`.

  Raises:
    UserError: `path` is missing or not a readable JPEG or PNG.
  """
  reason = check_image_file(path)
  if reason is not None:
    raise UserError(f"{path} is not a readable image ({reason}); give a JPEG "
                    "or PNG file")
  with open(path, "rb") as f:
    return _model_input(f.read(), _preprocessing(data_config), path)


def preprocess_bytes(image_bytes: bytes, data_config: Any) -> np.ndarray:
  """`load_image` for an image already in memory, such as a web upload.

  Raises:
    UserError: the bytes are not a readable JPEG or PNG.
  """
  reason = check_image_bytes(image_bytes)
  if reason is not None:
    raise UserError(f"the image is not readable ({reason}); give a JPEG or "
                    "PNG")
  return _model_input(image_bytes, _preprocessing(data_config), "the image")


def _model_input(image_bytes: bytes, p: _Preprocessing,
                 name: str) -> np.ndarray:
  """Preprocesses and normalises one image, naming `name` if it fails."""
  try:
    image = preprocess_image(tf.constant(image_bytes), p.image_size, p.contrast)
  except tf.errors.OpError as e:
    # TF appends its op trace ("{{function_node ...}}"); the first clause is
    # what a user can act on.
    reason = (e.message or type(e).__name__).splitlines()[0].split("{{")[0].strip()
    raise UserError(f"{name} could not be decoded ({reason}); give a JPEG or "
                    "PNG") from e
  return normalize(image, p.mean, p.std).numpy()


# -------------------------------------------------------------- augmentation


def _augment(image: tf.Tensor, example_seed: tf.Tensor, a: _Augmentation,
             image_size: int) -> tf.Tensor:
  """Random crop, flip and brightness of a uint8 [S, S, 3] image.

  Stateless: the result is a function of `example_seed` alone.

  Returns:
    float32 [S, S, 3] in 0..255.
  """
  crop_seed, flip_seed, brightness_seed = tf.unstack(
      tf.random.experimental.stateless_split(example_seed, 3))
  if a.crop_scale < 1:
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed, min_object_covered=0.0,
        aspect_ratio_range=_CROP_ASPECT_RANGE, area_range=(a.crop_scale, 1.0),
        use_image_if_no_bounding_boxes=True)
    image = tf.image.resize(tf.slice(image, begin, size),
                            [image_size, image_size], method="bilinear")
  image = tf.cast(image, tf.float32)
  if a.flip:
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.where(flip, tf.image.flip_left_right(image), image)
  if a.brightness > 0:
    delta = tf.random.stateless_uniform([], brightness_seed, -a.brightness,
                                        a.brightness)
    image = tf.clip_by_value(image + 255.0 * delta, 0.0, 255.0)
  return image


# ------------------------------------------------------------------ datasets


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full global batches in an epoch (the remainder is dropped).

  Raises:
    UserError: the split is smaller than one global batch.
  """
  if global_batch_size <= 0:
    raise UserError(f"batch size is {global_batch_size}; set a positive one")
  steps = num_examples // global_batch_size
  if steps == 0:
    raise UserError(f"{num_examples} training images are fewer than one batch "
                    f"of {global_batch_size}; lower batch_size or add images")
  return steps


def num_eval_batches(num_examples: int, batch_size: int,
                     process_count: int = 1) -> int:
  """Batches each process yields to cover `num_examples`, the last padded."""
  return -(-num_examples // (batch_size * process_count))


class SplitPipeline:
  """Batches of one split for this process, epoch after epoch.

  Create one per split and use it for every epoch; with `data.cache`, pipelines
  of the same Split object share one decoded copy of it.
  """

  def __init__(self, split: Split, data_config: Any, *,
               process_index: int | None = None,
               process_count: int | None = None):
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
    self.process_index = (jax.process_index() if process_index is None
                          else process_index)
    self.process_count = (jax.process_count() if process_count is None
                          else process_count)
    if not 0 <= self.process_index < self.process_count:
      raise ValueError(f"process_index {self.process_index} not in "
                       f"[0, {self.process_count})")
    self._preprocessing = _preprocessing(data_config)
    self._augmentation = _augmentation(data_config.augment)
    self._cache = data_config.cache
    self._balance = data_config.balance

  def train_batches(self, *, batch_size: int, seed: int, epoch: int,
                    skip_batches: int = 0) -> Iterator[Batch]:
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
    num_batches = steps_per_epoch(len(self.split),
                                  batch_size * self.process_count)
    if not 0 <= skip_batches <= num_batches:
      raise ValueError(f"skip_batches={skip_batches} outside "
                       f"[0, {num_batches}]")
    rng = np.random.default_rng([seed, epoch])
    if self._balance == "resample":
      order = _balanced_draw(self.split.labels, rng)
    else:
      order = rng.permutation(len(self.split))
    # Global batch k is order[k*B*P : (k+1)*B*P]; this process takes every
    # P-th example of it.
    positions = np.arange(self.process_index,
                          num_batches * batch_size * self.process_count,
                          self.process_count)
    # The shard once more, behind, only refills what decode failures drop.
    stream = np.concatenate([positions[skip_batches * batch_size:], positions])
    ds = self._examples({"index": order[stream], "position": stream})
    ds = ds.map(functools.partial(self._train_example, seed=seed, epoch=epoch),
                num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    return _numpy(ds.take(num_batches - skip_batches))

  def eval_batches(self, *, batch_size: int) -> Iterator[Batch]:
    """Every example of the split once, over all processes, in file order.

    Process p takes examples p, p + P, ...; every process yields
    `num_eval_batches(len(split), batch_size, process_count)` batches, the last
    ones padded with zero images whose mask is False.

    Args:
      batch_size: examples per batch on this process.

    Returns:
      Batches {"image": float32 [B, S, S, 3], "label": int32 [B],
      "mask": bool [B]}.
    """
    index = np.arange(self.process_index, len(self.split), self.process_count)
    ds = self._examples({"index": index}).map(
        self._eval_example, num_parallel_calls=AUTOTUNE)
    return self._padded_batches(ds, batch_size)

  def _padded_batches(self, ds: tf.data.Dataset,
                      batch_size: int) -> Iterator[Batch]:
    """`ds` in batches, padded so every process yields as many."""
    p = self._preprocessing
    padding = tf.data.Dataset.from_tensors({
        "image": tf.zeros([p.image_size, p.image_size, 3], tf.float32),
        "label": tf.constant(0, tf.int32),
        "mask": tf.constant(False),
    }).repeat()
    ds = ds.concatenate(padding).batch(batch_size, drop_remainder=True)
    return _numpy(ds.take(num_eval_batches(len(self.split), batch_size,
                                           self.process_count)))

  def _train_example(self, example: dict[str, tf.Tensor], *, seed: int,
                     epoch: int) -> dict[str, tf.Tensor]:
    """Augments and normalises one example, keyed by its place in the epoch."""
    p = self._preprocessing
    example_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, epoch], tf.int64), example["position"])
    image = _augment(example["image"], example_seed, self._augmentation,
                     p.image_size)
    return {"image": normalize(image, p.mean, p.std), "label": example["label"]}

  def _eval_example(self,
                    example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Normalises one example and marks it real (not padding)."""
    p = self._preprocessing
    return {"image": normalize(example["image"], p.mean, p.std),
            "label": example["label"], "mask": tf.constant(True)}

  def _examples(self, columns: dict[str, np.ndarray]) -> tf.data.Dataset:
    """`columns` plus each example's "label" and uint8 "image".

    Args:
      columns: per-example arrays, one of them "index" into the split.

    Returns:
      A dataset of dicts, without the examples whose file fails to decode.
    """
    if self._cache == "memory":
      return _cached_examples(self.split, self._preprocessing, columns)
    return _decoded_examples(self.split, self._preprocessing, columns)


def _decoded_examples(split: Split, p: _Preprocessing,
                      columns: dict[str, np.ndarray]) -> tf.data.Dataset:
  """`SplitPipeline._examples` by reading and decoding the files."""
  paths = np.asarray(split.paths)[columns["index"]]
  columns = {**columns, "label": split.labels[columns["index"]]}
  ds = tf.data.Dataset.from_tensor_slices((paths, columns))
  ds = ds.map(functools.partial(_from_file, p=p), num_parallel_calls=AUTOTUNE)
  return ds.ignore_errors(log_warning=True)


def _from_file(path: tf.Tensor, example: dict[str, tf.Tensor], *,
               p: _Preprocessing) -> dict[str, tf.Tensor]:
  image = preprocess_image(tf.io.read_file(path), p.image_size, p.contrast)
  return {**example, "image": image}


def _numpy(ds: tf.data.Dataset) -> Iterator[Batch]:
  """Prefetches `ds` in deterministic order, as numpy for JAX."""
  options = tf.data.Options()
  options.deterministic = True
  return ds.prefetch(AUTOTUNE).with_options(options).as_numpy_iterator()


def _balanced_draw(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """len(labels) indices drawn with replacement, every class equally likely."""
  weights = balancing_factors(np.bincount(labels))[labels]
  return rng.choice(len(labels), size=len(labels), p=weights / weights.sum())


def balancing_factors(counts: np.ndarray) -> np.ndarray:
  """total / (classes x count) per class, 0 for a class with no example.

  With these factors every class weighs the same in expectation: as loss
  weights (`data.balance = "class_weights"`), or as the average number of
  copies a balanced stream takes of each example (`"resample"`, one pass over
  the data then yields about one epoch).
  """
  counts = np.asarray(counts, np.float64)
  present = counts > 0
  return np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1)), 0.0)


# ----------------------------------------------------------------- streaming


def pipeline_for(split: Any, data_config: Any, **kwargs: Any) -> "SplitPipeline":
  """The pipeline serving `split`: by index for an image folder's `Split`
  (optionally cached in memory), as a stream for TFDS splits and whenever
  `data.cache` is "disk"."""
  if isinstance(split, Split) and data_config.cache != "disk":
    return SplitPipeline(split, data_config, **kwargs)
  return StreamPipeline(split, data_config, **kwargs)


class StreamPipeline(SplitPipeline):
  """Batches of a split read as a stream, in memory bounded whatever its size.

  Each process reads its own fixed part of the split (`records`), its files
  or record shards in an order drawn from (seed, epoch), through a shuffle
  buffer of `data.shuffle_buffer` examples (still encoded, or preprocessed
  uint8 from the disk cache), decoded in parallel. Augmentation is keyed by
  (seed, epoch, position in the process's stream), and `skip_batches` skips
  records before they are decoded, so a resumed epoch continues exactly.
  `data.balance = "resample"` repeats examples of rare classes and thins
  common ones (`balancing_factors`), still about one pass over the data an epoch.

  The split needs `__len__`, `class_counts(num_classes)` and, unless it is an
  image folder's `Split`, `records(process_index=, process_count=,
  shuffle_seed=)` giving {"encoded": string, "label": int32}.
  """

  def __init__(self, split: Any, data_config: Any, **kwargs: Any):
    super().__init__(split, data_config, **kwargs)
    self._shuffle_buffer = data_config.shuffle_buffer
    self._source = (functools.partial(_folder_records, split) if isinstance(split, Split)
                    else split.records)
    self._disk_cache = (_DiskCache(split, self._preprocessing, data_config.cache_dir,
                                   self.process_index, self.process_count)
                        if self._cache == "disk" else None)
    self._rates = balancing_factors(split.class_counts(0))

  def train_batches(self, *, batch_size: int, seed: int, epoch: int,
                    skip_batches: int = 0) -> Iterator[Batch]:
    """As `SplitPipeline.train_batches`, from this process's stream."""
    num_batches = steps_per_epoch(len(self.split), batch_size * self.process_count)
    if not 0 <= skip_batches <= num_batches:
      raise ValueError(f"skip_batches={skip_batches} outside [0, {num_batches}]")
    epoch_seed = int(np.random.default_rng([seed, epoch]).integers(2**31))
    # Repeated: balanced sampling and decode failures may need a little more
    # than one pass to fill the epoch.
    ds = self._stream(epoch_seed).repeat()
    if self._balance == "resample":
      ds = ds.enumerate().flat_map(functools.partial(
          _copies, seed=epoch_seed, rates=tf.constant(self._rates, tf.float32)))
    ds = ds.shuffle(self._shuffle_buffer, seed=epoch_seed)
    ds = self._decoded(ds.skip(skip_batches * batch_size))
    ds = ds.enumerate(start=skip_batches * batch_size).map(
        lambda position, example: {**example, "position": position})
    ds = ds.map(functools.partial(self._train_example, seed=seed, epoch=epoch),
                num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    return _numpy(ds.take(num_batches - skip_batches))

  def eval_batches(self, *, batch_size: int) -> Iterator[Batch]:
    """As `SplitPipeline.eval_batches`: this process's part once, padded."""
    ds = self._decoded(self._stream(None)).map(self._eval_example,
                                                num_parallel_calls=AUTOTUNE)
    return self._padded_batches(ds, batch_size)

  def _stream(self, shuffle_seed: int | None) -> tf.data.Dataset:
    """This process's records, from the disk cache when there is one."""
    if self._disk_cache is not None:
      return self._disk_cache.load(self._source, shuffle_seed)
    return self._source(process_index=self.process_index,
                        process_count=self.process_count, shuffle_seed=shuffle_seed)

  def _decoded(self, ds: tf.data.Dataset) -> tf.data.Dataset:
    """{"image": uint8 [S, S, 3], "label"}, decoding records that are still
    encoded, without those that fail to decode."""
    if "encoded" not in ds.element_spec:
      return ds
    return _decode_records(ds, self._preprocessing)


def _copies(index: tf.Tensor, example: dict[str, tf.Tensor], *, seed: int,
            rates: tf.Tensor) -> tf.data.Dataset:
  """The example `rate` times, rounded up or down at random (keyed by its
  place in the stream): rare classes are repeated, common ones thinned."""
  rate = tf.gather(rates, example["label"])
  draw = tf.random.stateless_uniform([], tf.stack([tf.constant(seed, tf.int64), index]))
  copies = tf.cast(tf.floor(rate + draw), tf.int64)
  return tf.data.Dataset.from_tensors(example).repeat(copies)


def _decode_records(ds: tf.data.Dataset, p: _Preprocessing) -> tf.data.Dataset:
  def decode(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {"image": preprocess_image(example["encoded"], p.image_size, p.contrast),
            "label": example["label"]}
  return ds.map(decode, num_parallel_calls=AUTOTUNE).ignore_errors(log_warning=True)


def _folder_records(split: Split, *, process_index: int, process_count: int,
                    shuffle_seed: int | None) -> tf.data.Dataset:
  """`StreamPipeline`'s records of an image folder's split: this process's
  strided part, in file order or shuffled with `shuffle_seed`."""
  index = np.arange(process_index, len(split), process_count)
  if shuffle_seed is not None:
    index = np.random.default_rng(shuffle_seed).permutation(index)
  ds = tf.data.Dataset.from_tensor_slices(
      {"path": np.asarray(split.paths)[index], "label": split.labels[index]})
  return ds.map(lambda x: {"encoded": tf.io.read_file(x["path"]), "label": x["label"]},
                num_parallel_calls=AUTOTUNE)


class _DiskCache:
  """A process's part of a split, decoded, resized and contrasted once into
  uint8 record shards on disk, then read shard by shard.

  It lives in `CACHE_DIR/preprocessed/KEY/`, KEY naming the split (its
  `fingerprint`), the preprocessing and the process's part, and appears only
  when complete (written aside, then renamed), so an interrupted first epoch
  leaves nothing half-written behind. It costs S x S x 3 bytes per image.
  """

  def __init__(self, split: Any, p: _Preprocessing, cache_dir: str,
               process_index: int, process_count: int):
    key = json.dumps({"split": split.fingerprint, "image_size": p.image_size,
                      "contrast": p.contrast, "decoding": DECODING_VERSION,
                      "part": [process_index, process_count]},
                     sort_keys=True)
    self.directory = os.path.join(cache_dir or files.default_cache_dir(), "preprocessed",
                                  hashlib.sha256(key.encode()).hexdigest()[:20])
    self._preprocessing = p
    self._part = {"process_index": process_index, "process_count": process_count}
    self._size = -(-len(split) // process_count)

  def load(self, source: Any, shuffle_seed: int | None) -> tf.data.Dataset:
    """The cached records, shards in an order drawn from `shuffle_seed`."""
    if not os.path.isdir(self.directory):
      self._write(source)

    def reader(shards: tf.data.Dataset) -> tf.data.Dataset:
      if shuffle_seed is not None:
        shards = shards.shuffle(_MAX_CACHE_SHARDS, seed=shuffle_seed)
      return shards.interleave(lambda shard: shard, cycle_length=_CACHE_READERS,
                               block_length=1, num_parallel_calls=AUTOTUNE,
                               deterministic=True)
    return tf.data.Dataset.load(self.directory, reader_func=reader).map(
        lambda index, example: example)

  def _write(self, source: Any) -> None:
    p = self._preprocessing
    shards = min(_MAX_CACHE_SHARDS, max(1, self._size // _CACHE_SHARD_IMAGES))
    logging.info("Caching about %d images at %dx%d on disk in %s (%.2f GiB, %d shards).",
                 self._size, p.image_size, p.image_size, self.directory,
                 self._size * p.image_size**2 * 3 / 2**30, shards)
    os.makedirs(os.path.dirname(self.directory), exist_ok=True)
    writing = tempfile.mkdtemp(prefix=".writing-", dir=os.path.dirname(self.directory))
    try:
      ds = _decode_records(source(shuffle_seed=None, **self._part), p).enumerate()
      ds.save(writing, shard_func=lambda index, example: index % shards)
      os.rename(writing, self.directory)
    except OSError:
      if not os.path.isdir(self.directory):  # Not another process's, finished first.
        raise
    finally:
      shutil.rmtree(writing, ignore_errors=True)


# --------------------------------------------------------------------- cache


@dataclasses.dataclass(frozen=True)
class _Cache:
  """A split's preprocessed images, for one (image_size, contrast)."""
  key: tuple[int, float]
  # uint8 [N, S, S, 3]. A variable, not a constant, so tf.data reads it in
  # place instead of copying it into every pipeline.
  images: tf.Variable
  valid: tf.Tensor  # bool [N]: False where the file failed to decode.


# Keyed weakly on the Split, so a cache lives exactly as long as its split and
# serves every pipeline (stage, epoch, evaluation) built on it.
_caches: "weakref.WeakKeyDictionary[Split, _Cache]" = (
    weakref.WeakKeyDictionary())


def _cached_examples(split: Split, p: _Preprocessing,
                     columns: dict[str, np.ndarray]) -> tf.data.Dataset:
  """`SplitPipeline._examples` by gathering from the split's cache."""
  cache = _cached_split(split, p)
  columns = {**columns, "label": split.labels[columns["index"]]}
  ds = tf.data.Dataset.from_tensor_slices(columns)
  ds = ds.filter(functools.partial(_is_cached, valid=cache.valid))
  return ds.map(functools.partial(_from_cache, images=cache.images),
                num_parallel_calls=AUTOTUNE)


def _is_cached(example: dict[str, tf.Tensor], *, valid: tf.Tensor) -> tf.Tensor:
  # Drops the examples `_decoded_examples` drops, so cached and uncached
  # pipelines yield the same batches.
  return tf.gather(valid, example["index"])


def _from_cache(example: dict[str, tf.Tensor], *,
                images: tf.Variable) -> dict[str, tf.Tensor]:
  return {**example, "image": tf.gather(images, example["index"])}


def _cached_split(split: Split, p: _Preprocessing) -> _Cache:
  """The split's cache, built on first use or when the preprocessing changed."""
  key = (p.image_size, p.contrast)
  cache = _caches.get(split)
  if cache is None or cache.key != key:
    _caches.pop(split, None)  # Free the stale cache before building anew.
    cache = _caches[split] = _build_cache(split, p, key)
  return cache


def _build_cache(split: Split, p: _Preprocessing,
                 key: tuple[int, float]) -> _Cache:
  """Decodes the whole split once, in parallel, into memory."""
  n, size = len(split), p.image_size
  logging.info("Caching %d images at %dx%d (%.2f GiB).", n, size, size,
               n * size * size * 3 / 2**30)
  images = tf.Variable(tf.zeros([n, size, size, 3], tf.uint8), trainable=False)
  valid = np.zeros(n, bool)
  ds = _decoded_examples(split, p, {"index": np.arange(n)})
  for batch in ds.batch(_CACHE_BATCH).prefetch(AUTOTUNE):
    images.scatter_update(tf.IndexedSlices(batch["image"], batch["index"]))
    valid[batch["index"].numpy()] = True
  return _Cache(key=key, images=images, valid=tf.constant(valid))
