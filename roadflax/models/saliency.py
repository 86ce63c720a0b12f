"""Grad-CAM (Selvaraju et al., 2017): where in an image lies the evidence for
the class the network predicts.

For each image, the predicted class's logit is differentiated with respect to
the encoder's last convolutional feature map A (conv6 after its ReLU,
[h, w, K]: `RoadNet.encode`); each channel's weight w_k is the spatial mean
of its gradient, and the map is ReLU(sum_k w_k A_k): the places whose
features raise the class's logit. It is resized bilinearly to the input's
size and divided by its maximum, so 1 is the image's hottest place and 0 adds
nothing to the class (a map with no positive place is all 0).

One forward pass gives the logits and, by `jax.vjp`, one backward pass the
gradients of the whole batch: the images do not interact (no batch
statistics, no dropout at inference), so the gradient of the sum of each
image's predicted logit is each image's own.
"""

from typing import Any

import jax
import jax.numpy as jnp

from roadflax.models.roadnet import RoadNet


def grad_cam(
    model: RoadNet,
    params: Any,
    images: jax.Array,
    classes: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """(logits [N, classes], heat maps float32 [N, H, W] in 0..1) of the
  predicted class of each normalised image of `images` [N, H, W, 3], or of
  `classes` [N] when given (the class test-time augmentation predicts);
  pure, to be jit-compiled by the caller."""
  variables = {"params": params}
  image_hw = images.shape[1:3]
  features = model.apply(variables, images, method=RoadNet.encode)
  logits, pullback = jax.vjp(
      lambda latent: model.apply(
          variables, latent, image_hw, method=RoadNet.classify_latent
      ),
      features,
  )
  if classes is None:
    classes = jnp.argmax(logits, axis=-1)
  predicted = jax.nn.one_hot(classes, logits.shape[-1], dtype=logits.dtype)
  (gradients,) = pullback(predicted)
  weights = jnp.mean(gradients.astype(jnp.float32), axis=(1, 2), keepdims=True)
  cam = jax.nn.relu(jnp.sum(weights * features.astype(jnp.float32), axis=-1))
  cam = jax.image.resize(cam, (cam.shape[0], *image_hw), "bilinear")
  peak = jnp.max(cam, axis=(1, 2), keepdims=True)
  return logits, jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1), 0.0)
