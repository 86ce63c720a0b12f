"""A stage's best classifier as one function of uint8 pixels.

Exports and `roadflax.load` share `TrainedClassifier.pixels_function`: its
input is what `preprocess.preprocess_image` makes of a file (decoded, turned
upright, Lanczos-resized to the model's size, contrast applied) as uint8
[N, S, S, 3]; normalisation, the network and the softmax, scaled by the
stage's fitted temperature (STAGE/calibration.json), are inside it, and so
is the test-time augmentation the run evaluated it with (run.json's `tta`,
`models.test_time`). So an exported file and the JAX model take the same
input, give the same calibrated probabilities, and every runtime leaves the
image handling to one place. `explain_function` adds each prediction's
Grad-CAM heat map.
"""

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from roadflax.data.preprocess import Preprocessing
from roadflax.models import roadnet, saliency, steps
from roadflax.runs import workdirs

# What run.json holds of the preprocessing.
_PREPROCESSING_FIELDS = ("image_size", "contrast", "mean", "std")


@dataclasses.dataclass(frozen=True)
class TrainedClassifier:
  """The best checkpoint of a classification stage and what it needs."""

  params: Any
  model: roadnet.RoadNet
  class_names: tuple[str, ...]
  preprocessing: Preprocessing
  workdir: str
  stage: str
  step: int
  # The stage's calibration.json; None for a stage trained before
  # calibration existed and not evaluated since (temperature 1).
  calibration: dict[str, Any] | None = None
  # The test-time augmentation it was evaluated and calibrated with.
  tta: str = "none"

  @classmethod
  def load(cls, workdir: str, stage: str | None = None) -> "TrainedClassifier":
    """`stage`'s best checkpoint (default: the last classification stage).

    Raises:
      UserError: `workdir` has no such trained stage.
    """
    stage = workdirs.classifier_stage(workdir, stage)
    run = workdirs.load_run(workdir)
    stage_dir = os.path.join(workdir, stage)
    params, model, step = workdirs.load_best_params(stage_dir, run)
    calibration = workdirs.read_calibration(stage_dir)
    if calibration is None:
      logging.warning(
          "%s has no %s: its probabilities are not calibrated;"
          " --mode=evaluate --workdir=%s calibrates it",
          stage_dir,
          workdirs.CALIBRATION_FILE,
          workdir,
      )
    elif "guard" not in calibration and calibration["temperature"] < 1:
      logging.warning(
          "%s's temperature %.3g sharpens, fitted before the guard that"
          " bounds such a temperature at 1 without independent evidence;"
          " --mode=evaluate --workdir=%s refits it",
          stage_dir,
          calibration["temperature"],
          workdir,
      )
    return cls(
        params=params,
        model=model,
        class_names=tuple(run["class_names"]),
        preprocessing=Preprocessing.from_config(
            ml_collections.ConfigDict(
                {key: run[key] for key in _PREPROCESSING_FIELDS}
            )
        ),
        workdir=workdir,
        stage=stage,
        step=step,
        calibration=calibration,
        tta=workdirs.recorded(run, "tta"),
    )

  @property
  def image_size(self) -> int:
    return self.preprocessing.image_size

  @property
  def calibrated(self) -> bool:
    return self.calibration is not None

  @property
  def temperature(self) -> float:
    """What the logits are divided by before the softmax."""
    return self.calibration["temperature"] if self.calibrated else 1.0

  def pixels_function(
      self, *, conv1_patches: bool | None = None
  ) -> Callable[[jax.Array], jax.Array]:
    """probabilities(pixels): uint8 [N, S, S, 3] -> float32 [N, classes],
    with the parameters inside the function (what a converter wants).

    Args:
      conv1_patches: as `RoadNet.conv1_patches`; exporters pass False, since
        the CPU patch-matrix form of conv1 is a loop that converters do not
        take.
    """
    return functools.partial(self._probabilities(conv1_patches), self.params)

  def jit_pixels_function(
      self, *, conv1_patches: bool | None = None
  ) -> Callable[[np.ndarray], jax.Array]:
    """`pixels_function`, jit-compiled with the parameters as an argument
    (not baked into the program as constants)."""
    return functools.partial(
        jax.jit(self._probabilities(conv1_patches)), self.params
    )

  def explain_function(
      self,
  ) -> Callable[[np.ndarray], tuple[jax.Array, jax.Array]]:
    """explain(pixels): uint8 [N, S, S, 3] -> (the probabilities of
    `pixels_function`, float32 [N, classes]; the Grad-CAM heat map of each
    image's predicted class, float32 [N, S, S] in 0..1), jit-compiled as one
    forward and one backward pass (`models.saliency`); with test-time
    augmentation, the map is the image's own for the class its views
    predict."""

    def explain(params: Any, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
      images = self._normalised(pixels)
      if self.tta == "none":
        logits, heatmaps = saliency.grad_cam(self.model, params, images)
        return steps.probabilities(logits, self.temperature), heatmaps
      probabilities = steps.predict_step(
          params,
          images,
          model=self.model,
          temperature=self.temperature,
          tta=self.tta,
      )
      _, heatmaps = saliency.grad_cam(
          self.model, params, images, jnp.argmax(probabilities, axis=-1)
      )
      return probabilities, heatmaps

    return functools.partial(jax.jit(explain), self.params)

  def _probabilities(
      self, conv1_patches: bool | None
  ) -> Callable[[Any, jax.Array], jax.Array]:
    model = self.model.clone(conv1_patches=conv1_patches)

    def probabilities(params: Any, pixels: jax.Array) -> jax.Array:
      return steps.predict_step(
          params,
          self._normalised(pixels),
          model=model,
          temperature=self.temperature,
          tta=self.tta,
      )

    return probabilities

  def _normalised(self, pixels: jax.Array) -> jax.Array:
    """uint8 pixels as the network takes them: (x / 255 - mean) / std."""
    mean = np.asarray(self.preprocessing.mean, np.float32)
    std = np.asarray(self.preprocessing.std, np.float32)
    return (pixels.astype(jnp.float32) / 255.0 - mean) / std


def reference_probabilities(
    classifier: TrainedClassifier, pixels: np.ndarray, batch_size: int = 32
) -> np.ndarray:
  """The JAX model's probabilities for uint8 pixels (temperature-scaled as
  the exports' are), with the plain conv1 the exports hold, in batches: what
  every export is measured against."""
  function = classifier.jit_pixels_function(conv1_patches=False)
  return np.concatenate([
      np.asarray(function(pixels[start : start + batch_size]))
      for start in range(0, len(pixels), batch_size)
  ])
