"""A stage's best classifier as one function of uint8 pixels.

Exports and `roadflax.load` share `TrainedClassifier.pixels_function`: its
input is what `preprocess.preprocess_image` makes of a file (decoded, turned
upright, Lanczos-resized to the model's size, contrast applied) as uint8
[N, S, S, 3]; normalisation, the network and the softmax are inside it. So an
exported file and the JAX model take the same input and every runtime leaves
the image handling to one place.
"""

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from roadflax.data.preprocess import Preprocessing
from roadflax.models import roadnet, steps
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

  @classmethod
  def load(cls, workdir: str, stage: str | None = None) -> "TrainedClassifier":
    """`stage`'s best checkpoint (default: the last classification stage).

    Raises:
      UserError: `workdir` has no such trained stage.
    """
    stage = workdirs.classifier_stage(workdir, stage)
    run = workdirs.load_run(workdir)
    params, model, step = workdirs.load_best_params(
        os.path.join(workdir, stage), run
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
    )

  @property
  def image_size(self) -> int:
    return self.preprocessing.image_size

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

  def _probabilities(
      self, conv1_patches: bool | None
  ) -> Callable[[Any, jax.Array], jax.Array]:
    model = self.model.clone(conv1_patches=conv1_patches)
    mean = np.asarray(self.preprocessing.mean, np.float32)
    std = np.asarray(self.preprocessing.std, np.float32)

    def probabilities(params: Any, pixels: jax.Array) -> jax.Array:
      images = (pixels.astype(jnp.float32) / 255.0 - mean) / std
      return steps.predict_step(params, images, model=model)

    return probabilities


def reference_probabilities(
    classifier: TrainedClassifier, pixels: np.ndarray, batch_size: int = 32
) -> np.ndarray:
  """The JAX model's probabilities for uint8 pixels, with the plain conv1 the
  exports hold, in batches: what every export is measured against."""
  function = classifier.jit_pixels_function(conv1_patches=False)
  return np.concatenate([
      np.asarray(function(pixels[start : start + batch_size]))
      for start in range(0, len(pixels), batch_size)
  ])
