"""Uploads to the web app: each file checked, decoded as in training, and
classified (with its Grad-CAM heat map, and reconstructed); plain Python, no
Streamlit.

Each bad file (empty, truncated, not an image, too many pixels) gets its own
error while the others still get predictions.
"""

import dataclasses
import hashlib
import io
import os
import pathlib
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
from PIL import Image

from roadflax.data import exif, image_folder, preprocess
from roadflax.errors import UserError
from roadflax.results import visuals
from roadflax.serve import model, predict
from roadflax.serve.autoencoder import Autoencoder

# PNG signature (8), IHDR length and type (8), width and height (8).
_PNG_BIT_DEPTH_AT = 24
# Colour modes, as PIL names them, that decoding turns into RGB.
_COLOUR_MODES = {
    "1": "black-and-white",
    "L": "grayscale",
    "LA": "grayscale",
    "I": "grayscale",
    "I;16": "grayscale",
    "I;16B": "grayscale",
    "P": "palette",
    "PA": "palette",
    "CMYK": "CMYK",
}


@dataclasses.dataclass
class Upload:
  """One file and what the classifier and the autoencoder make of it."""

  name: str
  error: str | None = None  # why the file got no prediction
  note: str | None = None  # what decoding changed (colour mode, bit depth)
  model_input: np.ndarray | None = None  # float32 [S, S, 3], normalised
  model_view: np.ndarray | None = None  # uint8 [S, S, 3], before normalising
  probabilities: np.ndarray | None = None  # float32 [classes]
  heatmap: np.ndarray | None = None  # float32 [S, S] in 0..1: Grad-CAM
  reconstruction: np.ndarray | None = None  # uint8 [S, S, 3]


def describe_uploads(
    files: Sequence[tuple[str, bytes]],
    classifier: predict.Classifier,
    autoencoder: Autoencoder | None,
    *,
    max_pixels: int,
    explain: Callable[[np.ndarray], tuple[Any, Any]] | None = None,
    reconstruct: Callable[[np.ndarray], Any] | None = None,
) -> list[Upload]:
  """Classifies (and reconstructs) every readable file; the rest get errors.

  A bad file must not cost the others their predictions, so each problem is
  recorded on its file's `Upload` rather than raised. The readable images go
  through each model together, in batches (`model.in_batches`).

  Args:
    files: (name, contents) pairs, in the order to show them.
    classifier: the model that predicts.
    autoencoder: the model that reconstructs, or None for no reconstructions.
    max_pixels: files with more pixels than this are refused undecoded.
    explain: the classifier's `TrainedClassifier.explain_function()`: uint8
      pixels [N, S, S, 3] to (probabilities, Grad-CAM heat maps); given, it
      predicts in place of `classifier.predict`, in the same pass.
    reconstruct: given, it reconstructs in place of
      `autoencoder.reconstruct` (the app's batched one, `batcher.Batcher`).

  Returns:
    One `Upload` per file, in order: with `error` set, or with a prediction.
  """
  uploads = [
      _read_upload(name, data, classifier.data_config, max_pixels)
      for name, data in files
  ]
  readable = [upload for upload in uploads if upload.error is None]
  if not readable:
    return uploads
  images = np.stack([upload.model_input for upload in readable])
  if explain is None:
    probabilities = model.in_batches(classifier.predict, images)
    heatmaps = [None] * len(readable)
  else:
    views = np.stack([upload.model_view for upload in readable])
    probabilities, heatmaps = model.in_batches(explain, views)
  reconstructions = (
      model.in_batches(reconstruct or autoencoder.reconstruct, images)
      if autoencoder is not None
      else [None] * len(readable)
  )
  for upload, p, heatmap, reconstruction in zip(
      readable, probabilities, heatmaps, reconstructions
  ):
    upload.probabilities, upload.heatmap = p, heatmap
    upload.reconstruction = reconstruction
  return uploads


def _read_upload(
    name: str,
    data: bytes,
    data_config: ml_collections.ConfigDict,
    max_pixels: int,
) -> Upload:
  """Checks and preprocesses one file, the cheapest checks first.

  The pixel count comes from the header, before anything is decoded, so a
  huge image (a decompression bomb, or just a 200-megapixel scan) is refused
  without allocating its pixels.
  """
  reason = image_folder.check_image_bytes(data)
  if reason is not None:
    return Upload(name, error=f"{reason}; upload a JPEG or PNG")
  try:
    with Image.open(io.BytesIO(data)) as image:
      (width, height), note = image.size, _decoding_note(image, data)
  except Image.DecompressionBombError as error:
    return Upload(name, error=f"too large ({error})")
  except OSError:  # PIL's UnidentifiedImageError is one.
    return Upload(name, error="damaged image header; upload a JPEG or PNG")
  if width * height > max_pixels:
    return Upload(
        name,
        error=(
            f"too large: {width:,} x {height:,} pixels"
            f" ({width * height / 1e6:.1f} megapixels) is over the limit of"
            f" {max_pixels / 1e6:g} megapixels; shrink the image or raise the"
            " limit in the sidebar"
        ),
    )
  try:
    model_input = preprocess.preprocess_bytes(data, data_config)
  except UserError:  # Its reason is TensorFlow's op trace, no help here.
    return Upload(
        name,
        error="damaged image data, it cannot be decoded; upload a JPEG or PNG",
    )
  model_view = visuals.denormalize(
      model_input, data_config.mean, data_config.std
  )
  return Upload(name, note=note, model_input=model_input, model_view=model_view)


def _decoding_note(image: Image.Image, data: bytes) -> str | None:
  """What decoding changed, for files that are not plain 8-bit RGB.

  Not an error: training decodes every image the same way. But whoever
  uploads a 16-bit or transparent PNG should know what the model did not see,
  and whoever uploads a phone photo why its pixels were turned.
  """
  changes = []
  if exif.orientation(data) != exif.UPRIGHT:
    changes.append("turned upright as its EXIF orientation says")
  if image.mode not in ("RGB", "RGBA"):
    changes.append(f"{_COLOUR_MODES.get(image.mode, image.mode)} to RGB")
  if image.format == "PNG" and data[_PNG_BIT_DEPTH_AT] == 16:
    changes.append("16 to 8 bits per channel")
  if image.has_transparency_data:
    changes.append("transparency dropped")
  return f"Decoded as in training: {', '.join(changes)}." if changes else None


def digest(data: bytes) -> str:
  """A file's contents in 64 hex digits (SHA-256): the same for the same
  contents under any name, so the app classifies each file once."""
  return hashlib.sha256(data).hexdigest()


def example_files(folder: str) -> list[tuple[str, bytes]]:
  """(name, contents) of the images under `folder`, as if uploaded.

  Raises:
    UserError: `folder` does not exist or holds no image file.
  """
  return [
      (os.path.basename(path), pathlib.Path(path).read_bytes())
      for path in predict.image_paths([folder])
  ]
