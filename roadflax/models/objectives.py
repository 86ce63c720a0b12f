"""What a stage minimises: reconstruction, classification, both, or a
contrastive loss between two views of each image.

An `Objective` is a small static description (hashable, so it can be a static
argument of a jitted step) and `objective_outputs` turns (params, batch) into
the loss and the per-example values that metrics average.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from roadflax.models import test_time, views
from roadflax.models.roadnet import RoadNet

OBJECTIVES = ("reconstruction", "classification", "joint", "contrastive")
CORRUPTIONS = ("none", "noise", "mask")
MASK_PATCH = 16  # pixels on a side of each patch `mask` hides


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  label_smoothing: float = 0.0
  reconstruction_weight: float = 1.0
  # Per-class loss weights (a tuple so that the objective stays hashable).
  class_weights: tuple[float, ...] | None = None
  corruption: str = "none"
  corruption_amount: float = 0.0
  contrastive_temperature: float = 0.1

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
    """The parameter trees this objective reads (and so can train).

    A contrastive objective trains the head's fc1 and fc2 as its projection;
    a classifier that starts from it starts from them too (with new logits).
    """
    trees = {"encoder"}
    if self.reconstructs or head_input == "decoder":
      trees.add("decoder")
    if self.classifies or self.name == "contrastive":
      trees.add("head")
    return frozenset(trees)


def objective_from_config(stage_config: Any) -> Objective:
  return Objective(
      name=stage_config.objective,
      label_smoothing=float(stage_config.label_smoothing),
      reconstruction_weight=float(stage_config.reconstruction_weight),
      corruption=stage_config.corruption,
      corruption_amount=float(stage_config.corruption_amount),
      contrastive_temperature=float(stage_config.contrastive_temperature),
  )


def corrupt(
    images: jax.Array, corruption: str, amount: float, rng: jax.Array
) -> jax.Array:
  """A denoising autoencoder's input: `images` with Gaussian noise of std
  `amount` added, or a share `amount` of MASK_PATCH-pixel patches set to 0
  (the data set's mean colour, in normalised units)."""
  if corruption == "noise":
    return images + amount * jax.random.normal(rng, images.shape, images.dtype)
  if corruption == "mask":
    n, height, width, _ = images.shape
    rows, cols = -(-height // MASK_PATCH), -(-width // MASK_PATCH)
    keep = jax.random.bernoulli(rng, 1.0 - amount, (n, rows, cols, 1))
    keep = jnp.repeat(jnp.repeat(keep, MASK_PATCH, axis=1), MASK_PATCH, axis=2)
    return images * keep[:, :height, :width]
  return images


def contrastive_loss(
    embeddings: jax.Array, temperature: float
) -> tuple[jax.Array, jax.Array]:
  """SimCLR's NT-Xent over 2n embeddings, rows i and i + n two views of one
  image: per row, the cross-entropy of finding its partner among the other
  2n - 1 by cosine similarity / `temperature`, and whether it is the nearest."""
  z = embeddings / jnp.linalg.norm(embeddings, axis=-1, keepdims=True).clip(
      1e-6
  )
  rows = z.shape[0]
  similarity = jnp.where(
      jnp.eye(rows, dtype=bool), -jnp.inf, z @ z.T / temperature
  )
  partner = (jnp.arange(rows) + rows // 2) % rows
  log_p = jax.nn.log_softmax(similarity, axis=-1)
  loss = -jnp.take_along_axis(log_p, partner[:, None], axis=-1)[:, 0]
  return loss, jnp.argmax(similarity, axis=-1) == partner


def _contrastive_outputs(
    objective: Objective, model: RoadNet, params: Any, images: jax.Array,
    rng: jax.Array,
) -> dict[str, jax.Array]:  # fmt: skip
  first, second = views.two_views(images, rng)
  embeddings, state = model.apply(
      {"params": params},
      jnp.concatenate([first, second]),
      method=RoadNet.embed,
      mutable=["intermediates"],
  )
  loss, found = contrastive_loss(embeddings, objective.contrastive_temperature)
  n = images.shape[0]
  return {
      "latent_rms": state["intermediates"]["encoder"]["rms"][0],
      "loss": (loss[:n] + loss[n:]) / 2,
      "pair_accuracy": (found[:n].astype(jnp.float32) + found[n:]) / 2,
  }


def objective_outputs(
    objective: Objective,
    model: RoadNet,
    params: Any,
    batch: dict[str, jax.Array],
    *,
    train: bool,
    dropout_rng: jax.Array | None = None,
    tta: str = "none",
) -> dict[str, jax.Array]:
  """Per-example values: `loss`, and `logits` and/or `squared_error` (or
  for `contrastive`, `pair_accuracy`: the share of the image's two views
  whose nearest embedding is the other); and `latent_rms`, the encoder
  output's root mean square over the batch.

  The reconstruction error is the mean squared error on the normalised image,
  per example (in training the input may be corrupted; the target never is);
  the cross-entropy is weighted per class when asked to. Out of training, a
  classifier's logits are those of test-time augmentation `tta`
  (`test_time`), the reconstruction that of the image itself.
  """
  images = batch["image"]
  if objective.name == "contrastive":
    # Out of training the views are fixed, so validation losses compare.
    rng = jax.random.key(0) if dropout_rng is None else dropout_rng
    return _contrastive_outputs(
        objective, model, params, images, jax.random.fold_in(rng, 2)
    )
  rngs = {"dropout": dropout_rng} if dropout_rng is not None else {}
  variables = {"params": params}
  inputs = images
  if train and objective.reconstructs and objective.corruption != "none":
    inputs = corrupt(
        images,
        objective.corruption,
        objective.corruption_amount,
        jax.random.fold_in(dropout_rng, 1),
    )
  augmented = not train and objective.classifies and tta != "none"
  if augmented:
    inputs = test_time.views(inputs, tta)
  apply = functools.partial(
      model.apply, variables, inputs, mutable=["intermediates"]
  )
  if objective.name == "joint":
    (logits, reconstruction), state = apply(train=train, rngs=rngs)
  elif objective.name == "classification":
    logits, state = apply(train=train, rngs=rngs, method=RoadNet.classify)
  else:
    reconstruction, state = apply(method=RoadNet.reconstruct)
  if augmented:
    logits = test_time.average(logits, tta)
    if objective.reconstructs:
      reconstruction = test_time.first_view(reconstruction, tta)

  outputs = {"latent_rms": state["intermediates"]["encoder"]["rms"][0]}
  loss = jnp.zeros(images.shape[0], jnp.float32)
  if objective.classifies:
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(
        jax.nn.one_hot(batch["label"], num_classes), objective.label_smoothing
    )
    cross_entropy = optax.softmax_cross_entropy(logits, targets)
    if objective.class_weights is not None:
      cross_entropy *= jnp.asarray(objective.class_weights)[batch["label"]]
    outputs["logits"] = logits
    loss += cross_entropy
  if objective.reconstructs:
    squared_error = jnp.mean(
        jnp.square(reconstruction - images), axis=(1, 2, 3)
    )
    outputs["squared_error"] = squared_error
    weight = objective.reconstruction_weight if objective.classifies else 1.0
    loss += weight * squared_error
  outputs["loss"] = loss
  return outputs
