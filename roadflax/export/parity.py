"""How closely an export follows the JAX model, and the bound it must keep.

Measured when an export is written, on up to `PARITY_IMAGES` test images,
against `trained.reference_probabilities`:

  saved_model, onnx   max |p - p_jax| <= 1e-4   (float32, same arithmetic)
  tflite              max |p - p_jax| <= 1e-3   (float32, fused kernels)
  tflite_int8,        top-1 agreement >= 98% and accuracy within one point
  onnx_int8           of JAX's (int8 probabilities move by up to a few %)
"""

from typing import Any

import numpy as np

# Test images an export is measured on, at most.
PARITY_IMAGES = 1000
# max |p - p_jax| allowed for the float formats.
MAX_DIFFERENCE = {"saved_model": 1e-4, "onnx": 1e-4, "tflite": 1e-3}
# The int8 format's bounds.
MIN_AGREEMENT = 0.98
MAX_ACCURACY_GAP = 0.01


def measure(
    format_name: str,
    probabilities: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray,
) -> dict[str, Any]:
  """The parity of an export's `probabilities` with JAX's `reference`.

  Args:
    format_name: the export's format, which picks the bound.
    probabilities: the export's, float32 [N, classes].
    reference: JAX's for the same images.
    labels: the images' classes, int [N].

  Returns:
    A JSON-able dict: images, max_abs_difference, top1_agreement, accuracy,
    jax_accuracy, bound (in words) and within_bound.
  """
  predicted = np.argmax(probabilities, axis=1)
  expected = np.argmax(reference, axis=1)
  result = {
      "images": int(len(labels)),
      "max_abs_difference": float(np.max(np.abs(probabilities - reference))),
      "top1_agreement": float(np.mean(predicted == expected)),
      "accuracy": float(np.mean(predicted == labels)),
      "jax_accuracy": float(np.mean(expected == labels)),
  }
  if format_name in MAX_DIFFERENCE:
    bound = MAX_DIFFERENCE[format_name]
    result["bound"] = f"max |p - p_jax| <= {bound:g}"
    result["within_bound"] = result["max_abs_difference"] <= bound
  else:
    result["bound"] = (
        f"top-1 agreement >= {MIN_AGREEMENT:.0%} and accuracy within"
        f" {MAX_ACCURACY_GAP * 100:g} point of JAX's"
    )
    result["within_bound"] = bool(
        result["top1_agreement"] >= MIN_AGREEMENT
        # With a margin for rounding: 53/100 - 52/100 is one point.
        and abs(result["accuracy"] - result["jax_accuracy"])
        <= MAX_ACCURACY_GAP + 1e-9
    )
  return result


def summary(parity: dict[str, Any]) -> str:
  """One line of a parity: its figures and whether they keep the bound."""
  return (
      f"on {parity['images']} test images: max |p - p_jax|"
      f" {parity['max_abs_difference']:.2e}, top-1 agreement"
      f" {parity['top1_agreement']:.2%}, accuracy {parity['accuracy']:.4f}"
      f" (JAX {parity['jax_accuracy']:.4f});"
      f" {'within' if parity['within_bound'] else 'OUTSIDE'} the bound"
      f" {parity['bound']}"
  )
