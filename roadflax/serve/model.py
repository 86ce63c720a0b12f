"""`roadflax.load(...).predict(images)`: a trained model from Python.

    model = roadflax.load("runs/demo")       # a workdir, or an export folder
    result = model.predict(["a.jpg", b"...", pil_image, uint8_array])
    result.classes, result.probabilities, result.unsure
    why = model.explain(["a.jpg"])           # a workdir's only: Grad-CAM
    why.pixels, why.heatmaps

Every item goes through training's preprocessing (`preprocess`): files and
bytes are decoded and turned upright by their EXIF orientation, PIL images
by `ImageOps.exif_transpose`; then all are Lanczos-resized to the model's
size and given the contrast it was trained with. A workdir predicts with
the runtime `runtime` names (`export.choice`: "auto", the fastest one built
and checked for its checkpoint by `--mode=runtimes`, else JAX) and explains
with JAX; an export with its own runtime (`export.runtimes`), from the same
uint8 pixels. Both give probabilities scaled by the temperature the stage's
calibration uses (calibration.json's `temperature`: 1 where its guard kept
it, `training.calibrate`), and `unsure` is read from those.
"""

import collections
import dataclasses
import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from roadflax.data import preprocess
from roadflax.data.preprocess import Preprocessing
from roadflax.errors import UserError
from roadflax.export import choice, runtimes
from roadflax.export.trained import TrainedClassifier

# Images per model call.
PREDICT_BATCH_SIZE = 32
# A prediction whose top probability is below this is flagged `unsure`.
UNSURE_BELOW = 0.6


def in_batches(
    function: Callable[[np.ndarray], Any],
    images: np.ndarray,
    batch_size: int = PREDICT_BATCH_SIZE,
) -> np.ndarray:
  """`function(images)`, called on batches of at most `batch_size` images.

  A jitted model compiles once per batch shape, so a last, smaller batch is
  padded to a power of two: any number of images costs a few compilations
  (1, 2, 4, ... up to `batch_size` images), and memory stays that of one batch.
  A function that returns a tuple of arrays gives a tuple of arrays.
  """
  if not len(images):  # nothing would tell the outputs' shapes
    raise ValueError("in_batches needs at least one image")
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start : start + batch_size]
    padded = np.zeros(
        (min(batch_size, 1 << (len(chunk) - 1).bit_length()), *chunk.shape[1:]),
        chunk.dtype,
    )
    padded[: len(chunk)] = chunk
    result = function(padded)
    parts = result if isinstance(result, tuple) else (result,)
    outputs.append([np.asarray(part)[: len(chunk)] for part in parts])
  joined = tuple(np.concatenate(column) for column in zip(*outputs))
  return joined if isinstance(result, tuple) else joined[0]


@dataclasses.dataclass(frozen=True)
class Predictions:
  """What `Model.predict` found for each item, in the order given.

  An item that could not be read has class None, a row of NaN
  probabilities and its reason in `errors`; the others are unaffected.
  `unsure` flags the items whose top probability is below the model's
  `unsure_below` (never an unreadable one).
  """

  classes: list[str | None]
  probabilities: np.ndarray  # float32 [N, len(class_names)]
  errors: list[str | None]
  class_names: tuple[str, ...]
  unsure: list[bool]

  def __len__(self) -> int:
    return len(self.classes)


@dataclasses.dataclass(frozen=True)
class Explanations(Predictions):
  """`Predictions`, and for each item what the model saw and where it saw
  its predicted class.

  `pixels` are the item as the model took it (preprocessed, before
  normalising); `heatmaps` its Grad-CAM map (`models.saliency`): 1 where
  the evidence for the predicted class is strongest, 0 where there is none.
  An unreadable item has zero pixels and a NaN map.
  """

  pixels: np.ndarray  # uint8 [N, S, S, 3]
  heatmaps: np.ndarray  # float32 [N, S, S], 0..1


class Model:
  """A trained classifier and the preprocessing it was trained with."""

  def __init__(
      self,
      probabilities: Callable[[np.ndarray], np.ndarray],
      class_names: Sequence[str],
      preprocessing: Preprocessing,
      source: str,
      unsure_below: float = UNSURE_BELOW,
      explain: Callable[[np.ndarray], tuple[Any, Any]] | None = None,
      runtime: str = "jax",
  ):
    """`probabilities` maps uint8 pixels [N, S, S, 3] to [N, classes];
    `explain` to those and heat maps [N, S, S] (None: a model without
    gradients, such as an export); `runtime` names what computes
    `probabilities` (`export.choice.RUNTIMES`)."""
    if not 0 <= unsure_below <= 1:
      raise UserError(f"unsure_below={unsure_below} is not a probability")
    self._probabilities = probabilities
    self._explain = explain
    self.class_names = tuple(class_names)
    self.preprocessing = preprocessing
    self.source = source
    self.unsure_below = unsure_below
    self.runtime = runtime

  @classmethod
  def of_classifier(
      cls,
      classifier: TrainedClassifier,
      unsure_below: float = UNSURE_BELOW,
      runtime: str = "auto",
  ) -> "Model":
    """A workdir's classifier, predicting with `runtime` (`choice.choose`)
    and explaining with JAX.

    Raises:
      UserError: as `choice.choose`.
    """
    chosen = choice.choose(classifier, runtime)
    return cls(
        chosen.export.probabilities
        if chosen.export
        else classifier.jit_pixels_function(),
        classifier.class_names,
        classifier.preprocessing,
        os.path.join(classifier.workdir, classifier.stage),
        unsure_below,
        classifier.explain_function(),
        chosen.runtime,
    )

  def __repr__(self) -> str:
    return (
        f"Model({self.source!r}, classes={list(self.class_names)},"
        f" image_size={self.preprocessing.image_size},"
        f" runtime={self.runtime!r})"
    )

  def predict(
      self, images: Any, batch_size: int = PREDICT_BATCH_SIZE
  ) -> Predictions:
    """Classifies each image.

    Args:
      images: one image or a sequence of them; an image is a file path, the
        bytes of a JPEG or PNG, a PIL image, or a uint8 RGB array [H, W, 3]
        of any size; a uint8 array [N, H, W, 3] is N images.
      batch_size: images per model call; memory stays that of one batch.

    Raises:
      UserError: `images` as a whole is not something to classify (a float
        or wrongly shaped array, an unknown type). A single unreadable file
        or undecodable bytes is not raised: its entry in `errors` says why.
    """
    items = _items(images)
    errors: list[str | None] = [None] * len(items)
    probabilities = self._no_probabilities(len(items))
    for places, pixels in self._readable(items, batch_size, errors):
      probabilities[places] = in_batches(
          self._probabilities, pixels, batch_size
      )
    return Predictions(**self._outcomes(probabilities, errors))

  def explain(
      self, images: Any, batch_size: int = PREDICT_BATCH_SIZE
  ) -> Explanations:
    """Classifies each image as `predict` does, with its Grad-CAM heat map.

    Raises:
      UserError: as `predict`; or the model has no gradients (an export).
    """
    if self._explain is None:
      raise UserError(
          f"{self.source} cannot explain its predictions: an export has no"
          " gradients; give the workdir it was exported from"
      )
    items = _items(images)
    errors: list[str | None] = [None] * len(items)
    size = self.preprocessing.image_size
    probabilities = self._no_probabilities(len(items))
    seen = np.zeros((len(items), size, size, 3), np.uint8)
    heatmaps = np.full((len(items), size, size), np.nan, np.float32)
    for places, pixels in self._readable(items, batch_size, errors):
      seen[places] = pixels
      probabilities[places], heatmaps[places] = in_batches(
          self._explain, pixels, batch_size
      )
    return Explanations(
        **self._outcomes(probabilities, errors), pixels=seen, heatmaps=heatmaps
    )

  def _readable(
      self, items: list[Any], batch_size: int, errors: list[str | None]
  ) -> Iterator[tuple[list[int], np.ndarray]]:
    """(places, uint8 pixels) of the readable items of each `batch_size`
    items in turn; an unreadable item's reason goes to `errors[place]`."""
    for start in range(0, len(items), batch_size):
      pixels, places = [], []
      chunk = range(start, min(start + batch_size, len(items)))
      for place, seen in zip(
          chunk, self._many_pixels(items[start : start + batch_size])
      ):
        if isinstance(seen, UserError):
          errors[place] = str(seen)
        else:
          pixels.append(seen)
          places.append(place)
      if pixels:
        yield places, np.stack(pixels)

  def _many_pixels(self, items: list[Any]) -> list[Any]:
    """`pixels` of each item, or the UserError that stopped it; arrays of
    one shape (a video's frames) are resized together, in one call."""
    found: list[Any] = [None] * len(items)
    arrays = collections.defaultdict(list)  # shape: places
    for place, item in enumerate(items):
      if isinstance(item, np.ndarray):
        arrays[item.shape].append(place)
        continue
      try:
        found[place] = self.pixels(item)
      except UserError as error:
        found[place] = error
    p = self.preprocessing
    for places in arrays.values():
      batch = np.stack([items[place] for place in places])
      resized = preprocess.resize_and_contrast(
          tf.constant(batch), p.image_size, p.contrast
      ).numpy()
      for place, pixels in zip(places, resized):
        found[place] = pixels
    return found

  def _no_probabilities(self, count: int) -> np.ndarray:
    return np.full((count, len(self.class_names)), np.nan, np.float32)

  def _outcomes(
      self, probabilities: np.ndarray, errors: list[str | None]
  ) -> dict[str, Any]:
    """The fields of `Predictions` from the probabilities and errors."""
    return {
        "classes": [
            None if error else self.class_names[int(np.argmax(row))]
            for row, error in zip(probabilities, errors)
        ],
        "probabilities": probabilities,
        "errors": errors,
        "class_names": self.class_names,
        "unsure": [
            error is None and float(row.max()) < self.unsure_below
            for row, error in zip(probabilities, errors)
        ],
    }

  def pixels(self, image: Any) -> np.ndarray:
    """One image as the model sees it, before normalising: uint8 [S, S, 3].

    Raises:
      UserError: the image cannot be read.
    """
    p = self.preprocessing
    if isinstance(image, (str, os.PathLike)):
      return preprocess.file_pixels(os.fspath(image), p)
    if isinstance(image, (bytes, bytearray)):
      return preprocess.bytes_pixels(bytes(image), p)
    if isinstance(image, Image.Image):
      image = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    return preprocess.resize_and_contrast(
        tf.constant(image), p.image_size, p.contrast
    ).numpy()


def _items(images: Any) -> list[Any]:
  """`images` as a list of single images; whole-input mistakes raised."""
  if isinstance(images, np.ndarray):
    _check_array(images, "the array")
    return list(images) if images.ndim == 4 else [images]
  if isinstance(images, (str, os.PathLike, bytes, bytearray, Image.Image)):
    return [images]
  if not isinstance(images, Iterable):
    raise UserError(
        f"cannot classify a {type(images).__name__}: give file paths, image"
        " bytes, PIL images or uint8 RGB arrays"
    )
  items = list(images)
  for number, item in enumerate(items):
    if isinstance(item, np.ndarray):
      _check_array(item, f"item {number}", images=False)
    elif not isinstance(
        item, (str, os.PathLike, bytes, bytearray, Image.Image)
    ):
      raise UserError(
          f"item {number} is a {type(item).__name__}: give file paths, image"
          " bytes, PIL images or uint8 RGB arrays"
      )
  return items


def _check_array(array: np.ndarray, name: str, images: bool = True) -> None:
  shapes = "[H, W, 3] or [N, H, W, 3]" if images else "[H, W, 3]"
  if array.ndim not in ((3, 4) if images else (3,)) or array.shape[-1] != 3:
    raise UserError(
        f"{name} has shape {array.shape}; give RGB images as uint8 {shapes}"
    )
  if array.dtype != np.uint8:
    raise UserError(
        f"{name} is {array.dtype}; give uint8 pixels 0..255 (for floats in"
        " 0..1: (x * 255).round().astype(np.uint8))"
    )
  if min(array.shape[-3:-1]) == 0:
    raise UserError(f"{name} has shape {array.shape}: an image without pixels")


def load(
    path: str,
    stage: str | None = None,
    unsure_below: float | None = None,
    runtime: str = "auto",
) -> Model:
  """A trained model: a workdir's classifier, or an export folder.

  Args:
    path: a roadflax workdir (its best checkpoint of `stage`, by default the
      last classification stage), or a folder written by `--mode=export`.
    stage: for a workdir, which classification stage.
    unsure_below: predictions less confident than this are flagged `unsure`
      (default `UNSURE_BELOW`).
    runtime: for a workdir, what predicts (`export.choice.CHOICES`): "auto"
      the fastest runtime `--mode=runtimes` built and checked for its
      checkpoint, else JAX; or one by name.

  Raises:
    UserError: `path` is neither, has no trained classifier, or the runtime
      named cannot be used.
  """
  if unsure_below is None:
    unsure_below = UNSURE_BELOW
  if runtimes.is_export(path):
    if stage is not None:
      raise UserError(f"{path} is an export: it has no stages to choose from")
    if runtime != "auto":
      raise UserError(
          f"{path} is an export: it runs with its own format's runtime, not"
          f" runtime={runtime!r}; give the workdir it was exported from to"
          " choose one"
      )
    export = runtimes.load_export(path)
    return Model(
        export.probabilities,
        export.class_names,
        export.preprocessing,
        path,
        unsure_below,
        runtime=export.format,
    )
  return Model.of_classifier(
      TrainedClassifier.load(path, stage), unsure_below, runtime
  )
