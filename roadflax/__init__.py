"""roadflax: road-surface classifiers from an AlexNet-style autoencoder, in JAX/Flax.

    import roadflax
    model = roadflax.load("runs/demo")      # a workdir or an export folder
    result = model.predict(["road.jpg"])    # paths, bytes, PIL images, arrays
    result.classes, result.probabilities

`import roadflax` alone stays light: JAX and TensorFlow load with `load`.
"""

__version__ = "0.3.0"


def load(
    path: str,
    stage: str | None = None,
    unsure_below: float | None = None,
    runtime: str = "auto",
):
  """A trained model (`roadflax.serve.model.Model`): the best classifier of a
  workdir (`stage`, by default its last classification stage) or an export
  written by `--mode=export`; predictions whose top probability is below
  `unsure_below` (default `serve.model.UNSURE_BELOW`) are flagged `unsure`.
  A workdir predicts with `runtime`: "auto" (the fastest runtime that
  `--mode=runtimes` built and checked for its checkpoint, else JAX), "jax",
  "onnx", "onnx_int8", "openvino", "openvino_int8", "saved_model", "tflite"
  or "tflite_int8"."""
  from roadflax.serve import model  # the heavy imports, on first use

  return model.load(path, stage, unsure_below, runtime)
