"""One image as the model sees it, the same for training, evaluation,
prediction, the web app and model export, so they can never drift apart.

  preprocess_image(image_bytes, image_size, contrast)     uint8 [S, S, 3]
      decode_image (turned upright by its EXIF orientation), then
      resize_and_contrast (Lanczos to a square, PIL's contrast); what the
      caches store.
  normalize(image, mean, std)                             float32 [S, S, 3]
      the model input.
  load_image(path, data_config), preprocess_bytes(image_bytes, data_config)
      both, for one file or upload; UserError if it is no readable image.
  file_pixels(path, p), bytes_pixels(image_bytes, p)       uint8 [S, S, 3]
      the same before normalising (what `roadflax.load` and exports take).
  decode_files(split, p, columns), decode_records(ds, p)
      `preprocess_image` over a data set of files or encoded records.

`Preprocessing.from_config` reads and checks the settings, `data.image_size`,
`data.contrast`, `data.mean` and `data.std` (stored with a trained model).

Unreadable files: files failing `image_folder`'s cheap check never get here.
One that passes it but still fails to decode is dropped and logged by tf.data
(`decode_files`, `decode_records`) rather than crashing a run, and refused
with a UserError by `load_image` and `preprocess_bytes`.
"""

import dataclasses
import functools
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from roadflax.data import exif
from roadflax.data.contract import FolderSplit
from roadflax.data.image_folder import check_image_bytes
from roadflax.data.image_folder import check_image_file
from roadflax.errors import UserError

# TF only feeds the host; the accelerators' memory belongs to JAX.
tf.config.set_visible_devices([], "GPU")

# ITU-R 601-2 luma, as PIL's convert("L") that ImageEnhance.Contrast uses.
_LUMA = (0.299, 0.587, 0.114)

# Names what `decode_image` does, for caches of decoded images: raise it when
# that changes. 2: EXIF orientation applied.
DECODING_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """What turns a file into model input; all that prediction needs."""

  image_size: int
  contrast: float
  mean: tuple[float, ...]
  std: tuple[float, ...]

  @classmethod
  def from_config(cls, data_config: Any) -> "Preprocessing":
    """Reads and checks `data_config.{image_size,contrast,mean,std}`, the only
    fields it reads (a trained model's stored settings have just these).

    Raises:
      UserError: a value the preprocessing cannot use.
    """
    image_size = data_config.image_size
    if not isinstance(image_size, int) or image_size <= 0:
      raise UserError(
          f"--config.data.image_size={image_size!r} must be a positive integer"
      )
    contrast = float(data_config.contrast)
    if contrast <= 0:
      raise UserError(
          f"--config.data.contrast={contrast} must be > 0 "
          "(1.0 = off, 0 makes every image flat grey)"
      )
    mean = tuple(float(m) for m in data_config.mean)
    std = tuple(float(s) for s in data_config.std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
      raise UserError(
          "--config.data.mean and --config.data.std need three "
          "values, std all > 0"
      )
    return cls(image_size=image_size, contrast=contrast, mean=mean, std=std)


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
  """Decodes a JPEG or PNG (whatever its file name says) to uint8 [H, W, 3].

  The image is turned upright as its EXIF orientation says (`exif`), as a
  browser shows it. Grayscale and RGBA become RGB; 16-bit PNGs are reduced to
  their high byte by the decoder, i.e. scaled to 0..255 rather than wrapped.
  """
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  orientation = tf.numpy_function(
      _exif_orientation, [image_bytes], tf.int32, stateful=False
  )
  return upright(image, orientation)


def _exif_orientation(image_bytes: Any) -> np.int32:
  # A bytes object inside tf.data, a 0-d object array when called eagerly.
  data = (
      image_bytes.item() if isinstance(image_bytes, np.ndarray) else image_bytes
  )
  return np.int32(exif.orientation(data))


def upright(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
  """Turns [H, W, C] pixels stored in EXIF `orientation` (1-8) upright.

  Each of the eight is a transpose (5-8) followed by reversals of the rows
  and/or columns, so the graph is one transpose and one reversal with
  computed arguments: a branch per orientation (`tf.switch_case`) cost a
  quarter of a second to build for every pipeline.
  """
  o = tf.reshape(tf.cast(orientation, tf.int32), []) - 1
  transposed = tf.transpose(
      image, tf.where(o >= 4, [1, 0, 2], [0, 1, 2]), name="transpose_5_to_8"
  )
  # Orientations 1..8: reverse the columns (axis 1), the rows (axis 0).
  columns = tf.gather([False, True, True, False, False, True, True, False], o)
  rows = tf.gather([False, False, True, True, False, False, True, True], o)
  axes = tf.boolean_mask([1, 0], tf.stack([columns, rows]))
  turned = tf.reverse(transposed, axes)
  turned.set_shape([None, None, image.shape[-1]])
  return turned


def resize_and_contrast(
    image: tf.Tensor, image_size: int, contrast: float
) -> tf.Tensor:
  """Resizes to a square and raises contrast as the published recipe does.

  The recipe resizes the whole frame (240x360 in the original data) to
  `image_size` squared, ignoring aspect, with Lanczos; then applies PIL's
  `ImageEnhance.Contrast(contrast)`: a blend with the image's mean grey level,
  `mean + contrast * (x - mean)`, clipped and truncated to uint8 as PIL does.

  Args:
    image: [H, W, 3], any real or integer dtype in 0..255; or a batch of
      them [N, H, W, 3], each image treated alone (one call for a batch of
      video frames is several times faster than one per frame).
    image_size: side of the output.
    contrast: blend factor; 1.0 leaves the image unchanged.

  Returns:
    uint8 [image_size, image_size, 3] (or [N, ...] for a batch).
  """
  resized = tf.image.resize(
      image, [image_size, image_size], method="lanczos3", antialias=True
  )
  # Lanczos rings past 0..255; PIL resizes into uint8 before the contrast.
  pixels = tf.round(tf.clip_by_value(resized, 0.0, 255.0))
  # Each image's mean grey level, [..., 1, 1, 1].
  luma = tf.reduce_sum(pixels * _LUMA, axis=-1)
  grey = tf.round(tf.reduce_mean(luma, axis=[-2, -1], keepdims=True))[..., None]
  enhanced = grey + contrast * (pixels - grey)
  return tf.cast(tf.floor(tf.clip_by_value(enhanced, 0.0, 255.0)), tf.uint8)


def normalize(
    image: tf.Tensor, mean: Sequence[float], std: Sequence[float]
) -> tf.Tensor:
  """Maps 0..255 pixels (uint8 or float) to float32 `(x / 255 - mean) / std`.

  For an image of known shape, `mean` and `std` become constants of its whole
  shape: the same arithmetic, bit for bit, but TensorFlow's CPU kernels
  broadcast a [3] operand about ten times slower than they combine equal
  shapes (0.45 against 0.05 ms an image at 224).
  """
  scaled = tf.cast(image, tf.float32) / 255.0
  shape = scaled.shape if scaled.shape.is_fully_defined() else [len(mean)]

  def full(values: Sequence[float]) -> tf.Tensor:
    return tf.constant(np.broadcast_to(np.asarray(values, np.float32), shape))

  return (scaled - full(mean)) / full(std)


def preprocess_image(
    image_bytes: tf.Tensor, image_size: int, contrast: float
) -> tf.Tensor:
  """The per-image preprocessing of every path: bytes to uint8 [S, S, 3].

  What the caches store; augmentation (training only) and `normalize` follow.
  """
  return resize_and_contrast(decode_image(image_bytes), image_size, contrast)


def load_image(path: str, data_config: Any) -> np.ndarray:
  """Reads one image file as the model sees it: float32 [S, S, 3].

  Args:
    path: a JPEG or PNG file.
    data_config: needs only `image_size`, `contrast`, `mean` and `std`.

  Raises:
    UserError: `path` is missing or not a readable JPEG or PNG, or
      `data_config` holds an unusable value.
  """
  p = Preprocessing.from_config(data_config)
  return normalize(file_pixels(path, p), p.mean, p.std).numpy()


def preprocess_bytes(image_bytes: bytes, data_config: Any) -> np.ndarray:
  """`load_image` for an image already in memory, such as a web upload.

  Raises:
    UserError: the bytes are not a readable JPEG or PNG, or `data_config`
      holds an unusable value.
  """
  p = Preprocessing.from_config(data_config)
  return normalize(bytes_pixels(image_bytes, p), p.mean, p.std).numpy()


def file_pixels(path: str, p: Preprocessing) -> np.ndarray:
  """`preprocess_image` of one file: uint8 [S, S, 3].

  Raises:
    UserError: `path` is missing or not a readable JPEG or PNG.
  """
  reason = check_image_file(path)
  if reason is not None:
    raise UserError(
        f"{path} is not a readable image ({reason}); give a JPEG or PNG file"
    )
  with open(path, "rb") as f:
    return _pixels_from_bytes(f.read(), p, path)


def bytes_pixels(image_bytes: bytes, p: Preprocessing) -> np.ndarray:
  """`preprocess_image` of one encoded image in memory: uint8 [S, S, 3].

  Raises:
    UserError: the bytes are not a readable JPEG or PNG.
  """
  reason = check_image_bytes(image_bytes)
  if reason is not None:
    raise UserError(f"the image is not readable ({reason}); give a JPEG or PNG")
  return _pixels_from_bytes(image_bytes, p, "the image")


def _pixels_from_bytes(
    image_bytes: bytes, p: Preprocessing, name: str
) -> np.ndarray:
  """`preprocess_image` of one encoded image, eagerly: uint8 [S, S, 3].

  Raises:
    UserError: the bytes do not decode; the message names `name`.
  """
  try:
    image = preprocess_image(tf.constant(image_bytes), p.image_size, p.contrast)
  except tf.errors.OpError as e:
    # TF appends its op trace ("{{function_node ...}}"); the first clause is
    # what a user can act on.
    reason = (
        (e.message or type(e).__name__).splitlines()[0].split("{{")[0].strip()
    )
    raise UserError(
        f"{name} could not be decoded ({reason}); give a JPEG or PNG"
    ) from e
  return image.numpy()


def decode_files(
    split: FolderSplit, p: Preprocessing, columns: dict[str, np.ndarray]
) -> tf.data.Dataset:
  """`columns` plus each example's "label" and uint8 "image", read from its file.

  Args:
    split: the files.
    p: the preprocessing.
    columns: per-example arrays, one of them "index" into the split.

  Returns:
    A dataset of dicts, without the examples whose file fails to decode.
  """
  paths = np.asarray(split.paths)[columns["index"]]
  columns = {**columns, "label": split.labels[columns["index"]]}
  ds = tf.data.Dataset.from_tensor_slices((paths, columns))
  ds = ds.map(
      functools.partial(_from_file, p=p), num_parallel_calls=tf.data.AUTOTUNE
  )
  return ds.ignore_errors(log_warning=True)


def _from_file(
    path: tf.Tensor, example: dict[str, tf.Tensor], *, p: Preprocessing
) -> dict[str, tf.Tensor]:
  image = preprocess_image(tf.io.read_file(path), p.image_size, p.contrast)
  return {**example, "image": image}


def decode_records(ds: tf.data.Dataset, p: Preprocessing) -> tf.data.Dataset:
  """{"encoded", "label"} records to {"image": uint8 [S, S, 3], "label"},
  without the records that fail to decode."""

  def decode(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return {
        "image": preprocess_image(example["encoded"], p.image_size, p.contrast),
        "label": example["label"],
    }

  return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(
      log_warning=True
  )
