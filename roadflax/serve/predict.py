"""A trained classifier loaded from a workdir, and `--mode=predict`."""

import dataclasses
import os
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np
from absl import logging

from roadflax.data import image_folder, preprocess
from roadflax.models import roadnet, steps
from roadflax.runs import workdirs
from roadflax.errors import UserError
from roadflax.files import atomic_write_json

# Images per model call when predicting files or uploads.
PREDICT_BATCH_SIZE = 32


def in_batches(
    function: Callable[[np.ndarray], Any],
    images: np.ndarray,
    batch_size: int = PREDICT_BATCH_SIZE,
) -> np.ndarray:
  """`function(images)`, called on batches of at most `batch_size` images.

  A jitted model compiles once per batch shape, so a last, smaller batch is
  padded to a power of two: any number of images costs a few compilations
  (1, 2, 4, ... up to `batch_size` images), and memory stays that of one batch.
  """
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start : start + batch_size]
    padded = np.zeros(
        (min(batch_size, 1 << (len(chunk) - 1).bit_length()), *chunk.shape[1:]),
        chunk.dtype,
    )
    padded[: len(chunk)] = chunk
    outputs.append(np.asarray(function(padded))[: len(chunk)])
  return np.concatenate(outputs)


@dataclasses.dataclass
class Classifier:
  """A stage's best classifier with the preprocessing it was trained with."""

  params: Any
  model: roadnet.RoadNet
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
        {key: run[key] for key in ("image_size", "contrast", "mean", "std")}
    )
    return cls(
        params, model, tuple(run["class_names"]), data_config, stage_dir, step
    )

  def predict(self, images: np.ndarray) -> np.ndarray:
    """Probabilities [N, classes] for preprocessed images [N, S, S, 3]."""
    return np.asarray(self._predict(self.params, images))

  def predict_files(
      self, paths: Sequence[str], batch_size: int = PREDICT_BATCH_SIZE
  ) -> list[dict[str, Any]]:
    """The class and probabilities of each file, in order.

    A file that is not a readable image gets an `"error"` instead, so one bad
    file in a folder does not cost the others their predictions. Files are
    read `batch_size` at a time: memory does not grow with their number.
    """
    results = []
    for start in range(0, len(paths), batch_size):
      chunk = paths[start : start + batch_size]
      images, errors = [], {}
      for path in chunk:
        try:
          images.append(preprocess.load_image(path, self.data_config))
        except UserError as error:
          errors[path] = str(error)
      probabilities = iter(
          in_batches(self.predict, np.stack(images), batch_size)
          if images
          else ()
      )
      for path in chunk:
        if path in errors:
          results.append({"path": path, "error": errors[path]})
          continue
        p = next(probabilities)
        results.append({
            "path": path,
            "class": self.class_names[int(np.argmax(p))],
            "probabilities": {n: float(q) for n, q in zip(self.class_names, p)},
        })
    return results


def image_paths(inputs: Sequence[str]) -> list[str]:
  """Files as given, and the image files found under folders (sorted)."""
  paths = []
  for item in inputs:
    if os.path.isdir(item):
      found = sorted(
          os.path.join(d, f)
          for d, _, files in os.walk(item)
          for f in files
          if f.lower().endswith(image_folder.IMAGE_EXTENSIONS)
      )
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
) -> None:
  if not inputs:
    raise UserError(
        "nothing to predict: give --input=PATH (image files or folders)"
    )
  classifier = Classifier.load(workdir, stage)
  results = classifier.predict_files(image_paths(inputs))
  predictions = [r for r in results if "error" not in r]
  skipped = [r for r in results if "error" in r]
  if not predictions:
    more = (
        f" (and {len(skipped) - 1} more unreadable files)"
        if len(skipped) > 1
        else ""
    )
    raise UserError(f"{skipped[0]['error']}{more}")
  for result in results:
    if "error" in result:
      logging.warning("skipped: %s", result["error"])
      continue
    probabilities = ", ".join(
        f"{n} {p:.3f}" for n, p in result["probabilities"].items()
    )
    print(f"{result['path']}: {result['class']}  ({probabilities})")
  if skipped:
    logging.warning(
        "%d of %d files were skipped as unreadable", len(skipped), len(results)
    )
  if output:
    atomic_write_json(
        output,
        {
            "workdir": workdir,
            "stage_dir": classifier.stage_dir,
            "checkpoint_step": classifier.step,
            "predictions": predictions,
            "skipped": skipped,
        },
    )
    logging.info("wrote %d predictions to %s", len(predictions), output)
