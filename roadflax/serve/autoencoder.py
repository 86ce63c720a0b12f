"""A workdir's trained autoencoder, to show what the encoder keeps of an image.

The classifier's encoder starts from the reconstruction stage's, so its
reconstruction of an upload is a glimpse of what the classifier builds on:
texture it keeps, detail it drops. The web app shows it beside each
prediction.
"""

import dataclasses
import os
from typing import Any

import numpy as np

from roadflax.models import roadnet, steps
from roadflax.results import visuals
from roadflax.runs import workdirs


@dataclasses.dataclass
class Autoencoder:
  """The best checkpoint of the last stage of a workdir that reconstructs."""

  params: Any
  model: roadnet.RoadNet
  mean: tuple[float, ...]
  std: tuple[float, ...]
  stage_dir: str
  step: int

  def __post_init__(self):
    self._reconstruct = steps.jit_reconstruct_step(self.model)

  @classmethod
  def load(cls, workdir: str) -> "Autoencoder | None":
    """The last reconstruction (or joint) stage with checkpoints, or None.

    Raises:
      UserError: `workdir` is not a workdir, or the stage's checkpoints cannot
        be used (none complete yet, or another model's).
    """
    run = workdirs.load_run(workdir)
    stages = workdirs.trained_stages(
        workdir, lambda objective: objective.reconstructs
    )
    if not stages:
      return None
    stage_dir = os.path.join(workdir, stages[-1])
    params, model, step = workdirs.load_best_params(stage_dir, run)
    return cls(
        params, model, tuple(run["mean"]), tuple(run["std"]), stage_dir, step
    )

  def reconstruct(self, images: np.ndarray) -> np.ndarray:
    """uint8 [N, S, S, 3] reconstructions of preprocessed images [N, S, S, 3].

    The decoder's output is normalised like its input and overshoots 0..255,
    so it is mapped back and clipped.
    """
    reconstructions = self._reconstruct(self.params, images)
    return visuals.denormalize(np.asarray(reconstructions), self.mean, self.std)
