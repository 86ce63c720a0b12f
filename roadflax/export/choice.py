"""The runtime behind a workdir's predictions: built, measured, chosen.

  runtime name     file (format)   run by
  jax              the checkpoint  JAX (what training and Grad-CAM use)
  saved_model      saved_model     TensorFlow
  onnx             onnx            ONNX Runtime
  onnx_int8        onnx_int8       ONNX Runtime
  openvino         onnx            OpenVINO (bfloat16 where the CPU has it)
  openvino_int8    onnx_int8       OpenVINO
  tflite           tflite          LiteRT (one image per call)
  tflite_int8      tflite_int8     LiteRT

`build(workdir, stage)` (`--mode=runtimes`) writes each installed runtime's
file into STAGE/runtimes/FORMAT/ (an export folder, `exporters`), measures
each runtime's agreement with JAX on the workdir's test split and its
images/s at a batch of `SPEED_BATCH`, JAX's too, in this process, and records
them with the checkpoint they were made from in STAGE/runtimes/runtimes.json.

`choose(classifier, runtime)` picks: "auto" the fastest runtime whose
record is of this checkpoint and which may stand in for JAX — a float
runtime within its format's parity bound, a reduced-precision one (int8, or
OpenVINO's bfloat16) with top-1 agreement of at least `MIN_AGREEMENT` —
else JAX; a runtime named outright is used if its file is of this
checkpoint. A missing or stale record falls back to JAX with one line.
"""

import dataclasses
import hashlib
import os
import statistics
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from roadflax.errors import UserError
from roadflax.export import exporters, parity, runtimes
from roadflax.export.trained import TrainedClassifier
from roadflax.files import atomic_write_json, read_json_if_present
from roadflax.runs import workdirs

# name: (format, engine); "jax" has neither.
RUNTIMES: dict[str, tuple[str, str] | None] = {
    "jax": None,
    "saved_model": ("saved_model", "tensorflow"),
    "onnx": ("onnx", "onnxruntime"),
    "onnx_int8": ("onnx_int8", "onnxruntime"),
    "openvino": ("onnx", "openvino"),
    "openvino_int8": ("onnx_int8", "openvino"),
    "tflite": ("tflite", "litert"),
    "tflite_int8": ("tflite_int8", "litert"),
}
CHOICES = ("auto", *RUNTIMES)
# Runtimes that compute in less than float32: judged by top-1 agreement.
REDUCED_PRECISION = ("onnx_int8", "openvino", "openvino_int8", "tflite_int8")
MIN_AGREEMENT = 0.99
FOLDER = "runtimes"
RECORD_FILE = "runtimes.json"
# Images per call when timing, and timed calls (after one warm-up call).
SPEED_BATCH = 32
SPEED_CALLS = 5


def installed(runtime: str) -> bool:
  """Whether this environment has what `runtime` needs (to build and run)."""
  if runtime == "jax":
    return True
  from roadflax.export import converters

  format_name, engine = RUNTIMES[runtime]
  return runtimes.installed(
      converters.CONVERTER_PACKAGES[format_name]
      + runtimes.RUNTIME_PACKAGES[format_name]
      + runtimes.ENGINE_PACKAGES[engine]
  )


def fingerprint(classifier: TrainedClassifier) -> dict[str, Any]:
  """What a runtime's file is made from: the checkpoint's parameters (a
  hash of their bytes), step, temperature and test-time augmentation."""
  digest = hashlib.blake2b(digest_size=16)
  for leaf in jax.tree_util.tree_leaves(jax.device_get(classifier.params)):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return {
      "stage": classifier.stage,
      "step": classifier.step,
      "parameters_hash": digest.hexdigest(),
      "temperature": classifier.temperature,
      "tta": classifier.tta,
  }


def folder(classifier: TrainedClassifier) -> str:
  return os.path.join(classifier.workdir, classifier.stage, FOLDER)


def build(
    workdir: str,
    stage: str | None = None,
    data_config: ml_collections.ConfigDict | None = None,
) -> dict[str, Any]:
  """Writes, measures and records every installed runtime of `stage`'s
  classifier (`--mode=runtimes`); returns the record.

  Raises:
    UserError: no trained classifier, or no readable test image.
  """
  classifier = TrainedClassifier.load(workdir, stage)
  data = workdirs.run_config(workdir, data_config).data
  wanted = [name for name in RUNTIMES if name != "jax" and installed(name)]
  formats = sorted({RUNTIMES[name][0] for name in wanted})
  measured = exporters.Samples.read(
      classifier,
      data,
      any(f in runtimes.QUANTISED_FORMATS for f in formats),
  )
  for format_name in formats:
    start = time.time()
    exporters.write_export(
        classifier,
        format_name,
        os.path.join(folder(classifier), format_name),
        measured,
    )
    logging.info(
        "runtimes: wrote %s in %.0f s", format_name, time.time() - start
    )
  batch = _speed_batch(measured.pixels)
  entries = {
      "jax": {
          "images_per_second": _images_per_second(
              classifier.jit_pixels_function(), batch
          ),
          "within_bound": True,
          "eligible": True,
      }
  }
  for name in wanted:
    format_name, engine = RUNTIMES[name]
    export = runtimes.load_export(
        os.path.join(folder(classifier), format_name), engine
    )
    measure = parity.measure(
        format_name,
        export.probabilities(measured.pixels),
        measured.reference,
        measured.labels,
    )
    eligible = (
        measure["top1_agreement"] >= MIN_AGREEMENT
        if name in REDUCED_PRECISION
        else measure["within_bound"]
    )
    entries[name] = {
        "format": format_name,
        "engine": engine,
        "images_per_second": _images_per_second(export.probabilities, batch),
        **measure,
        "eligible": bool(eligible),
    }
  record = {
      "checkpoint": fingerprint(classifier),
      "speed_batch": SPEED_BATCH,
      "threads": runtimes.threads(),
      "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "runtimes": entries,
  }
  record["auto"] = _by_speed(record)[0]
  atomic_write_json(os.path.join(folder(classifier), RECORD_FILE), record)
  logging.info("runtimes of %s:\n%s", workdir, table(record))
  return record


def _speed_batch(pixels: np.ndarray) -> np.ndarray:
  """`SPEED_BATCH` test images (repeated when there are fewer)."""
  return np.resize(pixels, (SPEED_BATCH, *pixels.shape[1:]))


def _images_per_second(
    probabilities: Callable[[np.ndarray], Any], batch: np.ndarray
) -> float:
  np.asarray(probabilities(batch))  # compiles or warms up
  timings = []
  for _ in range(SPEED_CALLS):
    start = time.perf_counter()
    np.asarray(probabilities(batch))
    timings.append(time.perf_counter() - start)
  return len(batch) / statistics.median(timings)


def table(record: dict[str, Any]) -> str:
  """Markdown: each runtime's images/s, its ratio to JAX, its agreement."""
  jax_speed = record["runtimes"]["jax"]["images_per_second"]
  lines = [
      (
          "| runtime | images/s | vs JAX | top-1 agreement | max abs diff |"
          " stands in for JAX |"
      ),
      "|---|---:|---:|---:|---:|---|",
  ]
  for name, entry in record["runtimes"].items():
    agreement = entry.get("top1_agreement")
    difference = entry.get("max_abs_difference")
    lines.append(
        f"| {name}{' (auto)' if name == record['auto'] else ''} |"
        f" {entry['images_per_second']:.1f} |"
        f" {entry['images_per_second'] / jax_speed:.2f}x |"
        f" {'-' if agreement is None else f'{agreement:.1%}'} |"
        f" {'-' if difference is None else f'{difference:.1e}'} |"
        f" {'yes' if entry['eligible'] else 'no'} |"
    )
  return "\n".join(lines)


def recorded(workdir: str, stage: str) -> list[str]:
  """The runtimes `--mode=runtimes` built for `stage` of `workdir` (none:
  []), whether or not still of its checkpoint."""
  record = read_json_if_present(
      os.path.join(workdir, stage, FOLDER, RECORD_FILE)
  )
  return [] if record is None else list(record["runtimes"])


@dataclasses.dataclass(frozen=True)
class Choice:
  """The runtime that will predict, and why."""

  runtime: str
  export: runtimes.Export | None  # None: JAX
  reason: str


def choose(classifier: TrainedClassifier, runtime: str = "auto") -> Choice:
  """The runtime `runtime` ("auto" or a name in `RUNTIMES`) resolves to for
  `classifier`; the reason is logged in one line.

  Raises:
    UserError: an unknown name; or a runtime named outright whose file is
      missing or stale, or whose packages are not installed.
  """
  if runtime not in CHOICES:
    raise UserError(f"--runtime={runtime!r} is not one of {', '.join(CHOICES)}")
  if runtime == "jax":
    return _logged(classifier, Choice("jax", None, "runtime jax, as asked"))
  record_path = os.path.join(folder(classifier), RECORD_FILE)
  record = read_json_if_present(record_path)
  build_hint = (
      f"--mode=runtimes --workdir={classifier.workdir} builds and measures them"
  )
  if record is None or record["checkpoint"] != fingerprint(classifier):
    why = (
        "none were built"
        if record is None
        else "they are of another checkpoint"
    )
    if runtime != "auto":
      raise UserError(
          f"no {runtime} runtime for {classifier.workdir}'s current"
          f" checkpoint ({why}): {build_hint}"
      )
    return _logged(
        classifier,
        Choice(
            "jax",
            None,
            f"runtime jax: auto found no runtimes ({why}); {build_hint}",
        ),
    )
  if runtime == "auto":
    runtime = next(
        name for name in _by_speed(record) if name == "jax" or installed(name)
    )
    entry = record["runtimes"][runtime]
    reason = (
        f"runtime {runtime} (auto): {entry['images_per_second']:.0f} images/s"
        f" against JAX's {record['runtimes']['jax']['images_per_second']:.0f}"
        " when measured"
    )
    if runtime != "jax":
      reason += (
          f", top-1 agreement with JAX {entry['top1_agreement']:.1%} on"
          f" {entry['images']} test images"
      )
  elif runtime not in record["runtimes"]:
    raise UserError(
        f"no {runtime} runtime was built for {classifier.workdir} (its"
        " packages were not installed then): install them, then"
        f" {build_hint}"
    )
  else:
    reason = f"runtime {runtime}, as asked"
  if runtime == "jax":
    return _logged(classifier, Choice("jax", None, reason))
  format_name, engine = RUNTIMES[runtime]
  export = runtimes.load_export(
      os.path.join(folder(classifier), format_name), engine
  )
  return _logged(classifier, Choice(runtime, export, reason))


def _by_speed(record: dict[str, Any]) -> list[str]:
  """The eligible runtimes, fastest first."""
  eligible = [
      (entry["images_per_second"], name)
      for name, entry in record["runtimes"].items()
      if entry["eligible"]
  ]
  return [name for _, name in sorted(eligible, reverse=True)]


def _logged(classifier: TrainedClassifier, choice: Choice) -> Choice:
  logging.info("%s predicts with %s", classifier.workdir, choice.reason)
  return choice
