"""The conversions of a classifier's pixel function to each format's file.

Every converter takes `TrainedClassifier.pixels_function(conv1_patches=False)`
(uint8 pixels in, probabilities out, the parameters inside), writes one file
or folder, named as `runtimes.MODEL_FILES` says, whose input is called
`pixels` and output `probabilities`, and returns the batch that file takes
(None: any):

  saved_model   jax2tf, batch of any size; the class names are the
                SavedModel's `class_names` variable.
  tflite        jax2tf, then TensorFlow's TFLite converter; batch of one, the
                fixed shape phones' and vehicles' accelerators want.
  tflite_int8   the same, full-integer quantised, calibrated on given images.
  onnx          jax2onnx, batch of any size (of one for a decoder head, whose
                resize jax2onnx converts for a known batch only); the class
                names are in the model's metadata.
  onnx_int8     that ONNX model statically quantised by ONNX Runtime:
                int8 weights (per output channel) and uint8 activations as
                QuantizeLinear/DequantizeLinear pairs, calibrated on given
                images; ONNX Runtime and OpenVINO run it with the CPU's int8
                dot-product units (VNNI, AMX).
"""

import contextlib
import io
import json
import logging
import os
import warnings
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax.experimental import jax2tf

from roadflax.export import runtimes
from roadflax.export.trained import TrainedClassifier

# The optional packages (import names) each converter needs besides its
# runtime's.
CONVERTER_PACKAGES = {
    "saved_model": (),
    "tflite": (),
    "tflite_int8": (),
    "onnx": ("jax2onnx", "onnx"),
    "onnx_int8": ("jax2onnx", "onnx"),
}


def _tf_serving_function(
    classifier: TrainedClassifier, batch: int | None
) -> tf.types.experimental.GenericFunction:
  """The pixel function as a TensorFlow function returning
  {"probabilities": ...}: of any batch (None) or of `batch` images."""
  size = classifier.image_size
  # TensorFlow 2.21 takes a batch of unknown size only if JAX is told the
  # function is polymorphic in it.
  polymorphic = None if batch else [f"(b, {size}, {size}, 3)"]
  probabilities = jax2tf.convert(
      classifier.pixels_function(conv1_patches=False),
      polymorphic_shapes=polymorphic,
      with_gradient=False,
  )

  pixels = tf.TensorSpec(
      [batch, size, size, 3], tf.uint8, name=runtimes.INPUT_NAME
  )

  @tf.function(input_signature=[pixels], autograph=False)
  def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
    return {runtimes.OUTPUT_NAME: probabilities(pixels)}

  return serve


def to_saved_model(classifier: TrainedClassifier, path: str) -> None:
  """Writes a SavedModel folder to `path`: signature `serving_default`, for
  a batch of any size (None)."""
  module = tf.Module()
  module.class_names = tf.Variable(
      list(classifier.class_names), trainable=False, name="class_names"
  )
  module.serve = _tf_serving_function(classifier, batch=None)
  tf.saved_model.save(
      module, path, signatures={"serving_default": module.serve}
  )


def to_tflite(classifier: TrainedClassifier, path: str) -> int:
  """Writes a float32 TFLite file to `path`."""
  with open(path, "wb") as f:
    f.write(_tflite_converter(classifier).convert())
  return 1


def to_tflite_int8(
    classifier: TrainedClassifier, path: str, calibration: np.ndarray
) -> int:
  """Writes a full-integer TFLite file to `path`: int8 weights and
  activations, calibrated on `calibration` (uint8 [N, S, S, 3]); its input
  stays uint8 pixels and its output float32 probabilities (the int8 softmax,
  in steps of 1/256, dequantised)."""

  def representative_dataset() -> Iterator[dict[str, np.ndarray]]:
    for image in calibration:
      yield {runtimes.INPUT_NAME: image[None]}

  converter = _tflite_converter(classifier)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = representative_dataset
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  with warnings.catch_warnings():
    # The calibration runs TensorFlow's own, deprecated, TFLite interpreter.
    warnings.filterwarnings(
        "ignore", r"\s*Warning: tf\.lite\.Interpreter is deprecated"
    )
    model = converter.convert()
  with open(path, "wb") as f:
    f.write(model)
  return 1


def _tflite_converter(classifier: TrainedClassifier) -> tf.lite.TFLiteConverter:
  module = tf.Module()
  module.serve = _tf_serving_function(classifier, batch=1)
  # With the module, the converter keeps the signature (`serving_default`).
  return tf.lite.TFLiteConverter.from_concrete_functions(
      [module.serve.get_concrete_function()], module
  )


def to_onnx(classifier: TrainedClassifier, path: str) -> int | None:
  """Writes an ONNX file to `path`, with the class names in its metadata
  (`class_names`, a JSON list)."""
  import onnx  # optional: roadflax[export]

  try:
    batch, model = None, _onnx_model(classifier, batch=None)
  except jax.errors.InconclusiveDimensionOperation:
    batch, model = 1, _onnx_model(classifier, batch=1)
  onnx.helper.set_model_props(
      model, {"class_names": json.dumps(list(classifier.class_names))}
  )
  onnx.save(model, path)
  return batch


def to_onnx_int8(
    classifier: TrainedClassifier, path: str, calibration: np.ndarray
) -> int | None:
  """Writes an int8 ONNX file to `path`, calibrated on `calibration` (uint8
  [N, S, S, 3]); its input stays uint8 pixels and its output float32
  probabilities."""
  from onnxruntime import quantization  # optional: roadflax[export]

  float_path, prepared_path = path + ".float.onnx", path + ".prepared.onnx"
  try:
    batch = to_onnx(classifier, float_path)
    # Shapes inferred and the graph simplified, as ONNX Runtime advises
    # before quantising.
    quantization.quant_pre_process(float_path, prepared_path)
    reader = _CalibrationReader(calibration, batch or 16)
    quantization.quantize_static(
        prepared_path,
        path,
        reader,
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
    )
  finally:
    for temporary in (float_path, prepared_path):
      if os.path.exists(temporary):
        os.remove(temporary)
  return batch


class _CalibrationReader:
  """ONNX Runtime's calibration data: `images` in batches of `batch`."""

  def __init__(self, images: np.ndarray, batch: int):
    self._batches = iter([
        images[start : start + batch] for start in range(0, len(images), batch)
    ])

  def get_next(self) -> dict[str, np.ndarray] | None:
    images = next(self._batches, None)
    return None if images is None else {runtimes.INPUT_NAME: images}


def _onnx_model(classifier: TrainedClassifier, batch: int | None) -> Any:
  """The ONNX ModelProto of the pixel function, for `batch` images (None:
  any number)."""
  import jax2onnx  # optional: roadflax[export]

  size = classifier.image_size
  shape = (batch or jax.export.symbolic_shape("batch")[0], size, size, 3)
  with _quiet_jax2onnx():
    return jax2onnx.to_onnx(
        classifier.pixels_function(conv1_patches=False),
        [jax.ShapeDtypeStruct(shape, jnp.uint8)],
        model_name="roadflax",
        input_names=[runtimes.INPUT_NAME],
        output_names=[runtimes.OUTPUT_NAME],
    )


class _DropMessages(logging.Filter):
  """Drops log records whose message holds any of `parts`."""

  def __init__(self, parts: tuple[str, ...]):
    super().__init__()
    self.parts = parts

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(part in message for part in self.parts)


# Known, harmless noise of jax2onnx 0.12.5, by logger: tracebacks for two
# dm_pix plugins it cannot import with this JAX (RoadNet uses no dm_pix), and
# a warning for each shape constant it leaves untyped.
_JAX2ONNX_NOISE = {
    "jax2onnx.plugins.plugin_system": ("dm_pix",),
    "onnx_ir.serde": ("value type for shape",),
}


@contextlib.contextmanager
def _quiet_jax2onnx() -> Iterator[None]:
  """Silences jax2onnx's known noise (and its debugging prints on stdout);
  its other warnings and its errors pass."""
  filters = {
      name: _DropMessages(parts) for name, parts in _JAX2ONNX_NOISE.items()
  }
  for name, noise in filters.items():
    logging.getLogger(name).addFilter(noise)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    for name, noise in filters.items():
      logging.getLogger(name).removeFilter(noise)


_CONVERTERS: dict[str, Callable[[TrainedClassifier, str], int | None]] = {
    "saved_model": to_saved_model,
    "tflite": to_tflite,
    "onnx": to_onnx,
}
# The converters that quantise, calibrated on images.
_QUANTISED = {"tflite_int8": to_tflite_int8, "onnx_int8": to_onnx_int8}


def convert(
    format_name: str,
    classifier: TrainedClassifier,
    directory: str,
    calibration: np.ndarray | None = None,
) -> int | None:
  """Writes the `format_name` file of `classifier` into `directory`
  (`runtimes.MODEL_FILES`) and returns the batch it takes (None: any);
  `calibration`: the images quantisation needs."""
  path = os.path.join(directory, runtimes.MODEL_FILES[format_name])
  if format_name in _QUANTISED:
    return _QUANTISED[format_name](classifier, path, calibration)
  return _CONVERTERS[format_name](classifier, path)
