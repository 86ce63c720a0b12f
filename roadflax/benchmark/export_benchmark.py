"""Every export of one trained workdir, side by side with JAX:

  python -m roadflax.benchmark.export_benchmark --model=runs/demo \
      --exports=exports/demo

exports the workdir's classifier in each format (`--mode=export`'s own
code), and reports per format: the time the export took, the model file's
size, its parity with JAX on the test split (as written into its
`roadflax_export.json`) and its latency per image, in a batch of 32 and one
image at a time, as a ratio to the JAX model's measured in the same process
(medians of `--latency_repeats` runs). Results go to stdout and
EXPORTS/export_benchmark.{json,md}. (Its flags are named apart from the
command's, with which it shares absl's flag registry in tests.)
"""

import json
import os
import statistics
import time
from typing import Any, Callable

import numpy as np
from absl import app, flags

from roadflax.datasets import sources
from roadflax.export import exporters, runtimes, samples
from roadflax.export.trained import TrainedClassifier
from roadflax.files import files_under
from roadflax.runs import workdirs

FLAGS = flags.FLAGS
# Not `required=True`: that would bind every parse of absl's flags in a
# process that imports this module (the tests'), not only this command's.
flags.DEFINE_string("model", None, "A trained workdir.")
flags.DEFINE_string("exports", None, "Where the exports go.")
flags.DEFINE_multi_enum(
    "export_format",
    list(runtimes.FORMATS),
    runtimes.FORMATS,
    "Formats to export.",
)
flags.DEFINE_integer("latency_repeats", 5, "Timed runs per latency figure.")

# Images per batch in the batched latency figure.
BATCH = 32


def _median_seconds(
    function: Callable[[np.ndarray], Any], pixels: np.ndarray, repeats: int
) -> float:
  """Median wall time of `function(pixels)`, after one untimed warm-up."""
  np.asarray(function(pixels))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    np.asarray(function(pixels))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _latencies(
    function: Callable[[np.ndarray], Any], pixels: np.ndarray, repeats: int
) -> dict[str, float]:
  """Milliseconds per image in a batch of `BATCH` and for one image."""
  return {
      "batch_ms": 1e3 * _median_seconds(function, pixels, repeats) / BATCH,
      "single_ms": 1e3 * _median_seconds(function, pixels[:1], repeats),
  }


def _size_bytes(path: str) -> int:
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(file) for file in files_under(path))


def measure(
    workdir: str, output: str, formats: list[str], repeats: int
) -> dict[str, Any]:
  """The figures of every format of `workdir`'s classifier."""
  classifier = TrainedClassifier.load(workdir)
  dataset = sources.load_dataset(workdirs.run_config(workdir, None).data)
  pixels, _ = samples.read_pixels(
      dataset.splits["test"], classifier.preprocessing, BATCH
  )
  pixels = np.resize(pixels, (BATCH, *pixels.shape[1:]))  # a full batch
  figures = {
      "workdir": workdir,
      "image_size": classifier.image_size,
      "jax": _latencies(classifier.jit_pixels_function(), pixels, repeats),
      "formats": {},
  }
  for format_name in formats:
    directory = os.path.join(output, format_name)
    start = time.perf_counter()
    exporters.export_model(workdir, None, format_name, directory)
    seconds = time.perf_counter() - start
    metadata = runtimes.read_metadata(directory)
    export = runtimes.load_export(directory)
    figures["formats"][format_name] = {
        "export_seconds": seconds,
        "bytes": _size_bytes(os.path.join(directory, metadata["file"])),
        "parity": metadata["parity"],
        **_latencies(export.probabilities, pixels, repeats),
    }
  return figures


def table(figures: dict[str, Any]) -> str:
  """The figures as a Markdown table."""
  jax_figures = figures["jax"]
  lines = [
      (
          f"Exports of {figures['workdir']} ({figures['image_size']} px);"
          f" latency per image, batch of {BATCH} / one image, and its ratio to"
          f" JAX's in the same run (JAX: {jax_figures['batch_ms']:.2f} /"
          f" {jax_figures['single_ms']:.2f} ms)."
      ),
      "",
      (
          "| format | export s | file MB | parity on the test split |"
          " ms/image, batch | speed vs JAX | ms, one image | speed vs JAX |"
      ),
      "|---|---:|---:|---|---:|---:|---:|---:|",
  ]
  for name, f in figures["formats"].items():
    p = f["parity"]
    parity = (
        f"max \\|p - p_jax\\| {p['max_abs_difference']:.1e}, top-1"
        f" agreement {p['top1_agreement']:.1%}, accuracy"
        f" {p['accuracy']:.1%} (JAX {p['jax_accuracy']:.1%}) on"
        f" {p['images']} images"
        + ("" if p["within_bound"] else ", OUTSIDE its bound")
    )
    lines.append(
        f"| {name} | {f['export_seconds']:.0f} | {f['bytes'] / 1e6:.1f} |"
        f" {parity} | {f['batch_ms']:.2f} |"
        f" {jax_figures['batch_ms'] / f['batch_ms']:.2f}x |"
        f" {f['single_ms']:.2f} |"
        f" {jax_figures['single_ms'] / f['single_ms']:.2f}x |"
    )
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  del argv
  if not FLAGS.model or not FLAGS.exports:
    raise app.UsageError("give --model=WORKDIR and --exports=DIR")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.makedirs(FLAGS.exports, exist_ok=True)
  figures = measure(
      FLAGS.model, FLAGS.exports, FLAGS.export_format, FLAGS.latency_repeats
  )
  with open(os.path.join(FLAGS.exports, "export_benchmark.json"), "w") as f:
    json.dump(figures, f, indent=2)
  with open(os.path.join(FLAGS.exports, "export_benchmark.md"), "w") as f:
    f.write(table(figures))
  print(table(figures))


if __name__ == "__main__":
  app.run(main)
