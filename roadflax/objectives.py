"""What a stage minimises: reconstruction, classification, or both.

An `Objective` is a small static description (hashable, so it can be a static
argument of a jitted step) and `objective_outputs` turns (params, batch) into
the loss and the per-example values that metrics average.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from roadflax.models import RoadNet

OBJECTIVES = ("reconstruction", "classification", "joint")


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  label_smoothing: float = 0.0
  reconstruction_weight: float = 1.0
  # Per-class loss weights (a tuple so that the objective stays hashable).
  class_weights: tuple[float, ...] | None = None

  @property
  def classifies(self) -> bool:
    return self.name in ("classification", "joint")

  @property
  def reconstructs(self) -> bool:
    return self.name in ("reconstruction", "joint")

  @property
  def best_metric(self) -> tuple[str, str]:
    """(validation metric, 'max' | 'min') that picks a stage's best checkpoint."""
    return ("accuracy", "max") if self.classifies else ("loss", "min")

  def trees(self, head_input: str) -> frozenset[str]:
    """The parameter trees this objective reads (and so can train)."""
    trees = {"encoder"}
    if self.reconstructs or head_input == "decoder":
      trees.add("decoder")
    if self.classifies:
      trees.add("head")
    return frozenset(trees)


def objective_from_config(stage_config: Any) -> Objective:
  return Objective(
      name=stage_config.objective,
      label_smoothing=float(stage_config.label_smoothing),
      reconstruction_weight=float(stage_config.reconstruction_weight))


def objective_outputs(objective: Objective, model: RoadNet, params: Any,
                      batch: dict[str, jax.Array], *, train: bool,
                      dropout_rng: jax.Array | None = None) -> dict[str, jax.Array]:
  """Per-example values: `loss`, and `logits` and/or `squared_error`.

  The reconstruction error is the mean squared error on the normalised image,
  per example; the cross-entropy is weighted per class when asked to.
  """
  images = batch["image"]
  rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
  variables = {"params": params}
  if objective.name == "joint":
    logits, reconstruction = model.apply(variables, images, train=train, rngs=rngs)
  elif objective.name == "classification":
    logits = model.apply(variables, images, train=train, rngs=rngs, method=RoadNet.classify)
  else:
    reconstruction = model.apply(variables, images, method=RoadNet.reconstruct)

  outputs = {}
  loss = jnp.zeros(images.shape[0], jnp.float32)
  if objective.classifies:
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], num_classes),
                                  objective.label_smoothing)
    cross_entropy = optax.softmax_cross_entropy(logits, targets)
    if objective.class_weights is not None:
      cross_entropy *= jnp.asarray(objective.class_weights)[batch["label"]]
    outputs["logits"] = logits
    loss += cross_entropy
  if objective.reconstructs:
    squared_error = jnp.mean(jnp.square(reconstruction - images), axis=(1, 2, 3))
    outputs["squared_error"] = squared_error
    weight = objective.reconstruction_weight if objective.classifies else 1.0
    loss += weight * squared_error
  outputs["loss"] = loss
  return outputs
