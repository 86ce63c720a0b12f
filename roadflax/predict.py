"""A trained classifier loaded from a workdir, and `--mode=predict`."""

import dataclasses
import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from roadflax import image_folder, input_pipeline, models, steps, workdirs
from roadflax.errors import UserError
from roadflax.files import atomic_write_json


@dataclasses.dataclass
class Classifier:
  """A stage's best classifier with the preprocessing it was trained with."""
  params: Any
  model: models.RoadNet
  class_names: tuple[str, ...]
  data_config: ml_collections.ConfigDict  # image_size, contrast, mean, std
  stage_dir: str
  step: int

  def __post_init__(self):
    self._predict = steps.jit_predict_step(self.model)

  @classmethod
  def load(cls, workdir: str, stage: str | None = None) -> "Classifier":
    """The best checkpoint of `stage` (default: the last classification stage)."""
    run = workdirs.load_run(workdir)
    stage_dir = os.path.join(workdir, workdirs.classifier_stage(workdir, stage))
    params, model, step = workdirs.load_best_params(stage_dir, run)
    data_config = ml_collections.ConfigDict(
        {key: run[key] for key in ("image_size", "contrast", "mean", "std")})
    return cls(params, model, tuple(run["class_names"]), data_config, stage_dir, step)

  def predict(self, images: np.ndarray) -> np.ndarray:
    """Probabilities [N, classes] for preprocessed images [N, S, S, 3]."""
    return np.asarray(self._predict(self.params, images))

  def predict_files(self, paths: Sequence[str], batch_size: int = 32) -> list[dict[str, Any]]:
    results = []
    for start in range(0, len(paths), batch_size):
      chunk = paths[start:start + batch_size]
      images = np.stack([input_pipeline.load_image(p, self.data_config) for p in chunk])
      for path, probabilities in zip(chunk, self.predict(images)):
        results.append({
            "path": path,
            "class": self.class_names[int(np.argmax(probabilities))],
            "probabilities": {n: float(p) for n, p in zip(self.class_names, probabilities)},
        })
    return results


def image_paths(inputs: Sequence[str]) -> list[str]:
  """Files as given, and the image files found under folders (sorted)."""
  paths = []
  for item in inputs:
    if os.path.isdir(item):
      found = sorted(os.path.join(d, f) for d, _, files in os.walk(item) for f in files
                     if f.lower().endswith(image_folder.IMAGE_EXTENSIONS))
      if not found:
        raise UserError(f"{item} holds no .jpg, .jpeg or .png file")
      paths += found
    elif os.path.isfile(item):
      paths.append(item)
    else:
      raise UserError(f"{item}: no such file or folder")
  return paths


def predict_main(workdir: str, inputs: Sequence[str], output: str | None,
                 stage: str | None = None) -> None:
  if not inputs:
    raise UserError("nothing to predict: give --input=PATH (image files or folders)")
  classifier = Classifier.load(workdir, stage)
  results = classifier.predict_files(image_paths(inputs))
  for result in results:
    probabilities = ", ".join(f"{n} {p:.3f}" for n, p in result["probabilities"].items())
    print(f"{result['path']}: {result['class']}  ({probabilities})")
  if output:
    atomic_write_json(output, {"workdir": workdir, "stage_dir": classifier.stage_dir,
                               "checkpoint_step": classifier.step, "predictions": results})
    logging.info("wrote %d predictions to %s", len(results), output)
