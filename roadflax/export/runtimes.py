"""An export folder run again by its format's own runtime, never by JAX.

  load_export(directory).probabilities(pixels)    float32 [N, classes]

An export folder holds the model file, `roadflax_export.json` (what the
model takes and gives, where it came from, its measured parity with JAX: what
`is_export` looks for) and `model_card.md`. Its input is uint8 pixels as
`preprocess.preprocess_image` makes them, [N, S, S, 3]; normalisation, the
network and the softmax are inside the file.

The runtimes are optional packages (`pip install 'roadflax[export]'`):
TensorFlow runs a SavedModel, LiteRT (`ai-edge-litert`) a TFLite file, and
ONNX Runtime or OpenVINO an ONNX file (`load_export(directory, engine)`).
Each uses as many threads as the process may use cores.
"""

import abc
import contextlib
import importlib
import importlib.util
import os
from typing import Any, Iterator

import ml_collections
import numpy as np
import tensorflow as tf

from roadflax.data.preprocess import Preprocessing
from roadflax.errors import UserError
from roadflax.files import read_json

FORMATS = ("saved_model", "tflite", "tflite_int8", "onnx", "onnx_int8")
# The formats computed in int8 (calibrated on training images).
QUANTISED_FORMATS = ("tflite_int8", "onnx_int8")
METADATA_FILE = "roadflax_export.json"
CARD_FILE = "model_card.md"
# The model file (or folder) of each format, inside the export folder.
MODEL_FILES = {
    "saved_model": "saved_model",
    "tflite": "model.tflite",
    "tflite_int8": "model_int8.tflite",
    "onnx": "model.onnx",
    "onnx_int8": "model_int8.onnx",
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
    "onnx_int8": ("onnxruntime",),
}
# The engines that run each format, the first the format's own; an engine
# other than the first needs its package too.
ENGINES = {
    "saved_model": ("tensorflow",),
    "tflite": ("litert",),
    "tflite_int8": ("litert",),
    "onnx": ("onnxruntime", "openvino"),
    "onnx_int8": ("onnxruntime", "openvino"),
}
ENGINE_PACKAGES = {
    "tensorflow": (),
    "litert": ("ai_edge_litert",),
    "onnxruntime": ("onnxruntime",),
    "openvino": ("openvino",),
}


def threads() -> int:
  """The cores this process may run on (its affinity, not the machine's)."""
  return len(os.sched_getaffinity(0))


def installed(packages: tuple[str, ...]) -> bool:
  """Whether every one of `packages` (import names) can be imported."""
  return all(importlib.util.find_spec(package) for package in packages)


def require_packages(format_name: str, packages: tuple[str, ...]) -> None:
  """Imports `packages`.

  Raises:
    UserError: one is missing, naming the format (or engine) that needs it.
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

    self._interpreter = interpreter.Interpreter(
        model_path=self.path, num_threads=threads()
    )
    self._runner = self._interpreter.get_signature_runner("serving_default")

  def _run(self, pixels: np.ndarray) -> np.ndarray:
    return self._runner(**{INPUT_NAME: pixels})[OUTPUT_NAME]


class OnnxExport(Export):
  """An ONNX file, run by ONNX Runtime."""

  def __init__(self, directory: str, metadata: dict[str, Any]):
    super().__init__(directory, metadata)
    require_packages(self.format, RUNTIME_PACKAGES[self.format])
    import onnxruntime  # optional: roadflax[export]

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads()
    self._session = onnxruntime.InferenceSession(
        self.path, options, providers=onnxruntime.get_available_providers()
    )

  def _run(self, pixels: np.ndarray) -> np.ndarray:
    return self._session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]


class OpenVinoExport(Export):
  """An ONNX file, run by OpenVINO on the CPU: in bfloat16 where the CPU
  computes it natively (OpenVINO's default there), int8 where the file is
  quantised."""

  def __init__(self, directory: str, metadata: dict[str, Any]):
    super().__init__(directory, metadata)
    with _openvino_telemetry_off():
      require_packages("openvino engine", ENGINE_PACKAGES["openvino"])
      import openvino  # optional: roadflax[export]

    compiled = openvino.Core().compile_model(
        self.path,
        "CPU",
        {"INFERENCE_NUM_THREADS": threads(), "PERFORMANCE_HINT": "LATENCY"},
    )
    self._request = compiled.create_infer_request()

  def _run(self, pixels: np.ndarray) -> np.ndarray:
    # Copied: the request reuses its output buffer on the next call.
    return np.array(self._request.infer({INPUT_NAME: pixels})[OUTPUT_NAME])


@contextlib.contextmanager
def _openvino_telemetry_off() -> Iterator[None]:
  """For importing OpenVINO: its import starts its model converter's usage
  telemetry, which reports to Google Analytics from a forked process (a
  hazard beside JAX's threads) unless the user opted out or it runs in CI
  (`CI=true`, set here for the import alone)."""
  saved = os.environ.get("CI")
  os.environ["CI"] = "true"
  try:
    yield
  finally:
    if saved is None:
      del os.environ["CI"]
    else:
      os.environ["CI"] = saved


_ENGINE_CLASSES = {
    "tensorflow": SavedModelExport,
    "litert": LiteRtExport,
    "onnxruntime": OnnxExport,
    "openvino": OpenVinoExport,
}


def load_export(directory: str, engine: str | None = None) -> Export:
  """The export in `directory`, ready to run by `engine` (one of its
  format's `ENGINES`; default: the format's own).

  Raises:
    UserError: `directory` is not an export, the engine does not run its
      format, or the engine is not installed.
  """
  return open_export(directory, read_metadata(directory), engine)


def open_export(
    directory: str, metadata: dict[str, Any], engine: str | None = None
) -> Export:
  """`load_export` with the metadata given (what the file takes and gives:
  format, file, class_names, preprocessing, input shape).

  Raises:
    UserError: as `load_export`.
  """
  engines = ENGINES[metadata["format"]]
  engine = engine or engines[0]
  if engine not in engines:
    raise UserError(
        f"{directory} is a {metadata['format']} export, which"
        f" {' or '.join(engines)} runs, not {engine}"
    )
  return _ENGINE_CLASSES[engine](directory, metadata)
