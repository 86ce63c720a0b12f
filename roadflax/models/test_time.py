"""Test-time augmentation (`config.model.tta`): a classifier's prediction of
an image averaged over views of it that show the same road surface, a pure
function of the batch inside the jitted eval and predict steps (`steps`), so
evaluation, calibration, `--mode=predict`, `roadflax.load`, the app and every
export predict alike.

  none          the image alone (the default; the steps are then unchanged)
  flips         the image, its left-right and up-down mirror images and both
                (4 views)
  flips_rot90   those, and each turned by 90 degrees: all 8 symmetries of a
                square (square inputs only; roadflax's always are)

The views' class probabilities are averaged (the ensemble's predictive
distribution, as TTA is usually defined) rather than their logits: one view
sure of itself does not outvote the rest, and the mean stays a distribution.
Its logarithm stands in for the logits: softmax(log p) = p, so the loss, the
argmax, the confusion counts and the temperature fitted on these "logits"
(`training.calibrate`) all read the averaged prediction unchanged.

The views of each image sit next to each other in the batch the network sees
(image-major), so a batch sharded over devices stays where it is.
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp

TTAS = ("none", "flips", "flips_rot90")


def view_count(tta: str) -> int:
  """How many times the network runs per image."""
  return {"none": 1, "flips": 4, "flips_rot90": 8}[tta]


def views(images: jax.Array, tta: str) -> jax.Array:
  """[N, H, W, C] images -> [N * k, H, W, C]: image i's k views at rows
  i * k ... i * k + k - 1, the first of them the image itself."""
  if tta not in TTAS:
    raise ValueError(f"tta={tta!r} is not one of {', '.join(TTAS)}")
  mirrored = [
      images,
      jnp.flip(images, axis=2),  # left-right
      jnp.flip(images, axis=1),  # up-down
      jnp.flip(images, axis=(1, 2)),  # both: turned 180 degrees
  ]
  every = mirrored if tta != "none" else [images]
  if tta == "flips_rot90":
    if images.shape[1] != images.shape[2]:
      raise ValueError(
          f"tta='flips_rot90' needs square images, not {images.shape[1:3]}"
      )
    every = mirrored + [jnp.rot90(v, axes=(1, 2)) for v in mirrored]
  stacked = jnp.stack(every, axis=1)
  return stacked.reshape(-1, *images.shape[1:])


def average(logits: jax.Array, tta: str) -> jax.Array:
  """[N * k, classes] logits of `views` -> [N, classes]: the log of each
  image's mean softmax probability over its views (float32)."""
  k = view_count(tta)
  per_image = logits.astype(jnp.float32).reshape(-1, k, logits.shape[-1])
  log_p = jax.nn.log_softmax(per_image, axis=-1)
  return jax.nn.logsumexp(log_p, axis=1) - math.log(k)


def first_view(values: jax.Array, tta: str) -> jax.Array:
  """[N * k, ...] per-view values -> [N, ...] of the images themselves."""
  k = view_count(tta)
  return values.reshape(-1, k, *values.shape[1:])[:, 0]


def logits(
    classify: Callable[[jax.Array], jax.Array], images: jax.Array, tta: str
) -> jax.Array:
  """`classify(images)` with test-time augmentation `tta`: for "none"
  exactly `classify(images)`, else `average` over the `views`."""
  if tta == "none":
    return classify(images)
  return average(classify(views(images, tta)), tta)
