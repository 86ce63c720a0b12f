"""An export folder run again by its format's own runtime, never by JAX.

  load_export(directory).probabilities(pixels)    float32 [N, classes]

An export folder holds the model file, `roadflax_export.json` (what the
model takes and gives, where it came from, its measured parity with JAX: what
`is_export` looks for) and `model_card.md`. Its input is uint8 pixels as
`preprocess.preprocess_image` makes them, [N, S, S, 3]; normalisation, the
network and the softmax are inside the file.

The runtimes are optional packages (`pip install 'roadflax[export]'`):
TensorFlow runs a SavedModel, LiteRT (`ai-edge-litert`) a TFLite file and
ONNX Runtime an ONNX file.
"""

import abc
import importlib
import os
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf

from roadflax.data.preprocess import Preprocessing
from roadflax.errors import UserError
from roadflax.files import read_json

FORMATS = ("saved_model", "tflite", "tflite_int8", "onnx")
METADATA_FILE = "roadflax_export.json"
CARD_FILE = "model_card.md"
# The model file (or folder) of each format, inside the export folder.
MODEL_FILES = {
    "saved_model": "saved_model",
    "tflite": "model.tflite",
    "tflite_int8": "model_int8.tflite",
    "onnx": "model.onnx",
}
# Names of the model's input and output, in every format.
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
# The optional packages (import names) that run each format; exporting needs
# them too, since an export is measured against JAX when it is written.
RUNTIME_PACKAGES = {
    "saved_model": (),
    "tflite": ("ai_edge_litert",),
    "tflite_int8": ("ai_edge_litert",),
    "onnx": ("onnxruntime",),
}


def require_packages(format_name: str, packages: tuple[str, ...]) -> None:
  """Imports `packages`.

  Raises:
    UserError: one is missing, naming the format that needs it.
  """
  missing = []
  for package in packages:
    try:
      importlib.import_module(package)
    except ImportError:
      missing.append(package)
  if missing:
    raise UserError(
        f"the {format_name} format needs {' and '.join(missing)}: install"
        " roadflax's export extra (pip install '.[export]' in its checkout)"
    )


def is_export(path: str) -> bool:
  """Whether `path` is a folder written by `--mode=export`."""
  return os.path.isfile(os.path.join(path, METADATA_FILE))


def read_metadata(directory: str) -> dict[str, Any]:
  """The export's `roadflax_export.json`.

  Raises:
    UserError: `directory` is not an export.
  """
  if not is_export(directory):
    raise UserError(
        f"{directory} is not a roadflax export (no {METADATA_FILE}); write one"
        " with --mode=export"
    )
  metadata = read_json(os.path.join(directory, METADATA_FILE))
  if metadata.get("format") not in FORMATS:
    raise UserError(
        f"{os.path.join(directory, METADATA_FILE)} names the format"
        f" {metadata.get('format')!r}, not one of {', '.join(FORMATS)}"
    )
  return metadata


class Export(abc.ABC):
  """An export folder and the runtime of its format.

  Attributes:
    directory: the export folder.
    metadata: its `roadflax_export.json`.
    class_names: the classes, in the order of the probabilities' columns.
    preprocessing: what turns a file into the model's input (`image_size`,
      `contrast`; `mean` and `std` are applied inside the model).
  """

  def __init__(self, directory: str, metadata: dict[str, Any]):
    self.directory = directory
    self.metadata = metadata
    # Images per runtime call: what the file takes, or a batch of 32.
    self.batch_size = metadata["input"]["shape"][0] or 32
    self.class_names = tuple(metadata["class_names"])
    self.preprocessing = Preprocessing.from_config(
        ml_collections.ConfigDict(metadata["preprocessing"])
    )
    self.path = os.path.join(directory, metadata["file"])

  @property
  def format(self) -> str:
    return self.metadata["format"]

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.directory!r})"

  def probabilities(self, pixels: np.ndarray) -> np.ndarray:
    """Class probabilities, float32 [N, classes], of uint8 [N, S, S, 3].

    Raises:
      UserError: `pixels` has another dtype or shape.
    """
    size = self.preprocessing.image_size
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.shape[1:] != (size, size, 3):
      raise UserError(
          f"the export takes uint8 pixels [N, {size}, {size}, 3], got"
          f" {pixels.dtype} {list(pixels.shape)}"
      )
    if not len(pixels):
      return np.zeros((0, len(self.class_names)), np.float32)
    return np.concatenate([
        np.asarray(self._run(pixels[start : start + self.batch_size]))
        for start in range(0, len(pixels), self.batch_size)
    ]).astype(np.float32)

  @abc.abstractmethod
  def _run(self, pixels: np.ndarray) -> np.ndarray:
    """Probabilities of at most `batch_size` images."""


class SavedModelExport(Export):
  """A SavedModel, run by TensorFlow."""

  def __init__(self, directory: str, metadata: dict[str, Any]):
    super().__init__(directory, metadata)
    self._loaded = tf.saved_model.load(self.path)
    self._serve = self._loaded.signatures["serving_default"]

  def _run(self, pixels: np.ndarray) -> np.ndarray:
    outputs = self._serve(**{INPUT_NAME: tf.constant(pixels)})
    return outputs[OUTPUT_NAME].numpy()


class LiteRtExport(Export):
  """A TFLite file, run by LiteRT (one image per call: its input is
  [1, S, S, 3], as phones and accelerators want a fixed shape)."""

  def __init__(self, directory: str, metadata: dict[str, Any]):
    super().__init__(directory, metadata)
    require_packages(self.format, RUNTIME_PACKAGES[self.format])
    from ai_edge_litert import interpreter  # optional: roadflax[export]

    self._interpreter = interpreter.Interpreter(model_path=self.path)
    self._runner = self._interpreter.get_signature_runner("serving_default")

  def _run(self, pixels: np.ndarray) -> np.ndarray:
    return self._runner(**{INPUT_NAME: pixels})[OUTPUT_NAME]


class OnnxExport(Export):
  """An ONNX file, run by ONNX Runtime."""

  def __init__(self, directory: str, metadata: dict[str, Any]):
    super().__init__(directory, metadata)
    require_packages(self.format, RUNTIME_PACKAGES[self.format])
    import onnxruntime  # optional: roadflax[export]

    self._session = onnxruntime.InferenceSession(
        self.path, providers=onnxruntime.get_available_providers()
    )

  def _run(self, pixels: np.ndarray) -> np.ndarray:
    return self._session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]


_RUNTIMES = {
    "saved_model": SavedModelExport,
    "tflite": LiteRtExport,
    "tflite_int8": LiteRtExport,
    "onnx": OnnxExport,
}


def load_export(directory: str) -> Export:
  """The export in `directory`, ready to run.

  Raises:
    UserError: `directory` is not an export, or its format's runtime is not
      installed.
  """
  metadata = read_metadata(directory)
  return _RUNTIMES[metadata["format"]](directory, metadata)
