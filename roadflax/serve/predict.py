"""The web app's classifier, and `--mode=predict` (a workdir or an export;
with `--explain`, a workdir's Grad-CAM heat maps as PNG files)."""

import dataclasses
import os
from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import logging

from roadflax.data import image_folder
from roadflax.errors import UserError
from roadflax.export.trained import TrainedClassifier
from roadflax.files import atomic_write_json, files_under
from roadflax.models import steps
from roadflax.serve import explanations, model


@dataclasses.dataclass
class Classifier:
  """A stage's best classifier for the web app: `predict` takes normalised
  images (what the autoencoder beside it takes too), `predict_files` files;
  probabilities are temperature-scaled as the stage's calibration says."""

  trained: TrainedClassifier

  def __post_init__(self):
    self._predict = steps.jit_predict_step(
        self.trained.model, self.trained.temperature, self.trained.tta
    )
    self._model = model.Model.of_classifier(self.trained)

  @classmethod
  def load(cls, workdir: str, stage: str | None = None) -> "Classifier":
    """The best checkpoint of `stage` (default: the last classification stage)."""
    return cls(TrainedClassifier.load(workdir, stage))

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.trained.class_names

  @property
  def data_config(self) -> ml_collections.ConfigDict:
    """image_size, contrast, mean and std."""
    return ml_collections.ConfigDict(
        dataclasses.asdict(self.trained.preprocessing)
    )

  @property
  def stage_dir(self) -> str:
    return os.path.join(self.trained.workdir, self.trained.stage)

  @property
  def step(self) -> int:
    return self.trained.step

  def predict(self, images: np.ndarray) -> np.ndarray:
    """Probabilities [N, classes] for preprocessed images [N, S, S, 3]."""
    return np.asarray(self._predict(self.trained.params, images))

  def predict_files(
      self, paths: Sequence[str], batch_size: int = model.PREDICT_BATCH_SIZE
  ) -> list[dict[str, Any]]:
    """`records` of each file's prediction, in order; `batch_size` files at a
    time, so memory does not grow with their number."""
    return records(paths, self._model.predict(paths, batch_size))


def records(
    paths: Sequence[str], predictions: model.Predictions
) -> list[dict[str, Any]]:
  """One JSON-ready dict per file: its class, probabilities and whether it
  is `unsure`, or the `"error"` that cost it its prediction."""
  results = []
  for path, name, row, error, unsure in zip(
      paths,
      predictions.classes,
      predictions.probabilities,
      predictions.errors,
      predictions.unsure,
  ):
    if error is not None:
      results.append({"path": path, "error": error})
      continue
    results.append({
        "path": path,
        "class": name,
        "probabilities": {
            n: float(q) for n, q in zip(predictions.class_names, row)
        },
        "unsure": unsure,
    })
  return results


def image_paths(inputs: Sequence[str]) -> list[str]:
  """Files as given, and the image files found under folders (sorted)."""
  paths = []
  for item in inputs:
    if os.path.isdir(item):
      found = [
          path
          for path in files_under(item)
          if path.lower().endswith(image_folder.IMAGE_EXTENSIONS)
      ]
      if not found:
        raise UserError(f"{item} holds no .jpg, .jpeg or .png file")
      paths += found
    elif os.path.isfile(item):
      paths.append(item)
    else:
      raise UserError(f"{item}: no such file or folder")
  return paths


def predict_main(
    workdir: str,
    inputs: Sequence[str],
    output: str | None,
    stage: str | None = None,
    *,
    unsure_below: float | None = None,
    explain: bool = False,
    runtime: str = "auto",
) -> None:
  """Prints each input file's class, `unsure` below `unsure_below`; writes
  them to `output` (JSON) when given and, with `explain`, each file's
  explanation (`explanations`) to explanations/ beside `output` (or in the
  current folder).

  Raises:
    UserError: no input, none readable, no model at `workdir`, or `explain`
      with an export.
  """
  if not inputs:
    raise UserError(
        "nothing to predict: give --input=PATH (image files or folders)"
    )
  trained = model.load(workdir, stage, unsure_below, runtime)
  paths = image_paths(inputs)
  found = trained.explain(paths) if explain else trained.predict(paths)
  results = records(paths, found)
  predictions = [r for r in results if "error" not in r]
  skipped = [r for r in results if "error" in r]
  if not predictions:
    more = (
        f" (and {len(skipped) - 1} more unreadable files)"
        if len(skipped) > 1
        else ""
    )
    raise UserError(f"{skipped[0]['error']}{more}")
  _print_records(results)
  if output:
    atomic_write_json(
        output,
        {
            "model": trained.source,
            "predictions": predictions,
            "skipped": skipped,
        },
    )
    logging.info("wrote %d predictions to %s", len(predictions), output)
  if explain:
    folder = os.path.join(
        os.path.dirname(output) if output else "", explanations.FOLDER
    )
    logging.info(
        "wrote %d explanations (each image and its Grad-CAM heat map) to %s",
        explanations.write_explanations(paths, found, folder),
        folder,
    )


def _print_records(results: Sequence[dict[str, Any]]) -> None:
  """A line per prediction; a warning per unreadable file, and their count."""
  skipped = 0
  for result in results:
    if "error" in result:
      logging.warning("skipped: %s", result["error"])
      skipped += 1
      continue
    probabilities = ", ".join(
        f"{n} {p:.3f}" for n, p in result["probabilities"].items()
    )
    unsure = "  unsure" if result["unsure"] else ""
    print(f"{result['path']}: {result['class']}  ({probabilities}){unsure}")
  if skipped:
    logging.warning(
        "%d of %d files were skipped as unreadable", skipped, len(results)
    )
