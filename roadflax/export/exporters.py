"""`--mode=export`: a stage's classifier as a folder that runs without JAX.

  export_model(workdir, stage, format, output)

(`Samples.read` and `write_export`, the same for several formats of one
classifier) writes OUTPUT/ with the model file (`runtimes.MODEL_FILES`),
`roadflax_export.json` and `model_card.md`, after measuring the file's
parity with JAX on the workdir's test split (`parity`). The int8 formats are
calibrated on training images read with the run's preprocessing. The folder
is written beside OUTPUT and moved into place when complete, so an
interrupted export leaves no folder that looks like an export.
"""

import dataclasses
import os
import shutil
import tempfile
import time
from typing import Any

import ml_collections
import numpy as np
from absl import logging

import roadflax
from roadflax.datasets import sources
from roadflax.errors import UserError
from roadflax.export import cards, converters, parity, runtimes, samples
from roadflax.export.trained import TrainedClassifier, reference_probabilities
from roadflax.files import atomic_write_json, atomic_write_text
from roadflax.files import read_json_if_present
from roadflax.models import test_time
from roadflax.runs import workdirs

# Training images the int8 quantisation is calibrated on, at most.
CALIBRATION_IMAGES = 300


def export_model(
    workdir: str,
    stage: str | None,
    format: str,
    output: str,
    data_config: ml_collections.ConfigDict | None = None,
) -> str:
  """Exports `stage`'s best classifier of `workdir` as `format` to `output`.

  Args:
    workdir: a trained roadflax workdir.
    stage: a classification stage (default: the last one).
    format: one of `runtimes.FORMATS`.
    output: the folder to write: new, empty, or an earlier export (which is
      replaced).
    data_config: where the run's data are now (`config.data`), when not where
      the workdir's config says; as `--mode=evaluate` takes it.

  Returns:
    `output`.

  Raises:
    UserError: an unknown format, its packages missing, `output` holding
      something else, no trained classifier, or data of other classes.
  """
  if format not in runtimes.FORMATS:
    raise UserError(
        f"--format={format!r} is not one of {', '.join(runtimes.FORMATS)}"
    )
  runtimes.require_packages(
      format,
      converters.CONVERTER_PACKAGES[format] + runtimes.RUNTIME_PACKAGES[format],
  )
  _check_output(output)
  start = time.time()
  classifier = TrainedClassifier.load(workdir, stage)
  data = workdirs.run_config(workdir, data_config).data
  measured = Samples.read(
      classifier, data, format in runtimes.QUANTISED_FORMATS
  )
  metadata = write_export(classifier, format, output, measured)
  log = logging.info if metadata["parity"]["within_bound"] else logging.warning
  log(
      "exported %s to %s in %.0f s; parity %s",
      format,
      os.path.join(output, metadata["file"]),
      time.time() - start,
      parity.summary(metadata["parity"]),
  )
  return output


@dataclasses.dataclass(frozen=True)
class Samples:
  """What an export is measured on and calibrated with, read once for any
  number of exports of one classifier."""

  data: ml_collections.ConfigDict
  pixels: np.ndarray  # test images, uint8 [N, S, S, 3]
  labels: np.ndarray  # int [N]
  reference: np.ndarray  # JAX's probabilities of `pixels`
  calibration: np.ndarray | None  # training images, for int8 formats

  @classmethod
  def read(
      cls,
      classifier: TrainedClassifier,
      data: ml_collections.ConfigDict,
      calibrate: bool,
  ) -> "Samples":
    """Up to `parity.PARITY_IMAGES` test images of `data` and, when
    `calibrate`, `CALIBRATION_IMAGES` training images.

    Raises:
      UserError: data of other classes, or no test image readable.
    """
    dataset = sources.load_dataset_for(
        data, classifier.class_names, f"the model in {classifier.workdir}"
    )
    pixels, labels = samples.read_pixels(
        dataset.splits["test"], classifier.preprocessing, parity.PARITY_IMAGES
    )
    if not len(labels):
      raise UserError(
          f"no test image of {dataset.root} could be read to measure the export"
      )
    calibration = None
    if calibrate:
      calibration, _ = samples.read_pixels(
          dataset.splits["train"], classifier.preprocessing, CALIBRATION_IMAGES
      )
    return cls(
        data,
        pixels,
        labels,
        reference_probabilities(classifier, pixels),
        calibration,
    )


def write_export(
    classifier: TrainedClassifier,
    format: str,
    output: str,
    measured: Samples,
) -> dict[str, Any]:
  """Writes `classifier` as `format` to `output` (replacing an earlier
  export there) and returns its metadata, with its parity measured on
  `measured`'s test images."""
  calibration = None
  if format in runtimes.QUANTISED_FORMATS:
    calibration = measured.calibration
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".roadflax-export-", dir=parent)
  os.chmod(staging, 0o755)  # mkdtemp's folder is private to its owner
  try:
    batch = converters.convert(format, classifier, staging, calibration)
    metadata = _metadata(classifier, format, batch, measured.data)
    if calibration is not None:
      metadata["calibration"] = {"split": "train", "images": len(calibration)}
    # The runtime reads the metadata: write it before measuring.
    atomic_write_json(os.path.join(staging, runtimes.METADATA_FILE), metadata)
    export = runtimes.load_export(staging)
    metadata["parity"] = parity.measure(
        format,
        export.probabilities(measured.pixels),
        measured.reference,
        measured.labels,
    )
    atomic_write_json(os.path.join(staging, runtimes.METADATA_FILE), metadata)
    atomic_write_text(
        os.path.join(staging, runtimes.CARD_FILE), cards.model_card(metadata)
    )
    if os.path.exists(output):
      shutil.rmtree(output)
    os.replace(staging, output)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return metadata


def _check_output(output: str) -> None:
  """`output` must be new, an empty folder or an earlier export.

  Raises:
    UserError: it is a file, or a folder holding something else.
  """
  if not os.path.exists(output):
    return
  if not os.path.isdir(output):
    raise UserError(f"--output={output} is a file; give a folder to export to")
  if os.listdir(output) and not runtimes.is_export(output):
    raise UserError(
        f"--output={output} holds files but no earlier export; give a new or"
        " empty folder"
    )


def _metadata(
    classifier: TrainedClassifier,
    format_name: str,
    batch: int | None,
    data: ml_collections.ConfigDict,
) -> dict[str, Any]:
  """The export's `roadflax_export.json`, but for its parity: of a file
  taking `batch` images (None: any number), measured on `data`."""
  size = classifier.image_size
  meaning = (
      "softmax probabilities of the logits divided by"
      f" {classifier.temperature:.6g} (the temperature fitted on the validation"
      " split), one column per class in class_names order"
      if classifier.calibrated and classifier.calibration["fitted"]
      else "softmax probabilities, one column per class in class_names order"
  )
  if classifier.tta != "none":
    meaning += (
        f"; test-time augmentation {classifier.tta!r}: the softmax averaged"
        f" over {test_time.view_count(classifier.tta)} mirrored or turned"
        " views of each image, inside the file"
    )
  if format_name in runtimes.QUANTISED_FORMATS:
    meaning += "; computed in int8 (steps of 1/256) and dequantised to float32"
  trained_on = workdirs.run_config(classifier.workdir, None).data
  return {
      "format": format_name,
      "file": runtimes.MODEL_FILES[format_name],
      "roadflax_version": roadflax.__version__,
      "class_names": list(classifier.class_names),
      "preprocessing": dataclasses.asdict(classifier.preprocessing),
      "input": {
          "name": runtimes.INPUT_NAME,
          "dtype": "uint8",
          "shape": [batch, size, size, 3],
      },
      "output": {
          "name": runtimes.OUTPUT_NAME,
          "dtype": "float32",
          "shape": [batch, len(classifier.class_names)],
          "meaning": meaning,
      },
      "source": {
          "workdir": os.path.abspath(classifier.workdir),
          "stage": classifier.stage,
          "step": classifier.step,
      },
      # The stage's calibration.json (None: not calibrated, temperature 1).
      "temperature_scaling": classifier.calibration,
      "tta": classifier.tta,
      "training_data": {
          "source": trained_on.source,
          "description": cards.describe_data(trained_on),
          "licence": cards.RSCD_LICENCE if cards.is_rscd(trained_on) else None,
      },
      # Where `--mode=evaluate` reads the test split by default.
      "data_config": data.to_dict(),
      "test_report": _test_report(classifier),
  }


def _test_report(classifier: TrainedClassifier) -> dict[str, Any] | None:
  """The stage's test accuracy and per-class F1, if it has a report."""
  report = read_json_if_present(
      os.path.join(classifier.workdir, classifier.stage, "report.json")
  )
  if report is None:
    return None
  return {
      "accuracy": report["accuracy"],
      "num_examples": report["num_examples"],
      "checkpoint_step": report["checkpoint_step"],
      "per_class_f1": {
          name: values["f1"] for name, values in report["per_class"].items()
      },
  }
