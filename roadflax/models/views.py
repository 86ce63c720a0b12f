"""Two random views of each image, in JAX, for a contrastive objective.

Each view is a random crop of 20-100% of the area (aspect in [3/4, 4/3])
resized back to the image's size, flipped left-right and up-down at random
(road texture seen from above has no up), with random brightness, contrast
and saturation and, for a fifth of the views, no colour: what SimCLR found
a network must be made blind to before it learns anything but colour.

The images are normalised (`data.mean` / `data.std`), so the colour changes
work in those units: brightness adds, contrast scales about the image's
mean, saturation blends with the mean over channels. Computed on the device
inside the jitted step, one random key per step: the views cost no input
pipeline and resume exactly.
"""

import jax
import jax.numpy as jnp

CROP_AREA = (0.2, 1.0)
CROP_ASPECT = 4 / 3
BRIGHTNESS = 0.4  # normalised units: about 0.09 of the [0, 1] range
CONTRAST = 0.4
SATURATION = 0.4
GRAYSCALE = 0.2


def _crop_and_resize(image: jax.Array, rng: jax.Array) -> jax.Array:
  """A random crop of `image` [h, w, c], resized back to [h, w]."""
  height, width = image.shape[:2]
  area_rng, aspect_rng, y_rng, x_rng = jax.random.split(rng, 4)
  area = jax.random.uniform(
      area_rng, (), minval=CROP_AREA[0], maxval=CROP_AREA[1]
  )
  log_aspect = jax.random.uniform(
      aspect_rng, (), minval=-jnp.log(CROP_ASPECT), maxval=jnp.log(CROP_ASPECT)
  )
  aspect = jnp.exp(log_aspect)
  crop_h = jnp.clip(jnp.sqrt(area / aspect), 0.0, 1.0) * height
  crop_w = jnp.clip(jnp.sqrt(area * aspect), 0.0, 1.0) * width
  top = jax.random.uniform(y_rng, ()) * (height - crop_h)
  left = jax.random.uniform(x_rng, ()) * (width - crop_w)
  scale = jnp.stack([height / crop_h, width / crop_w])
  translation = -jnp.stack([top, left]) * scale
  return jax.image.scale_and_translate(
      image, image.shape, (0, 1), scale, translation, "linear"
  )


def _flip(image: jax.Array, rng: jax.Array) -> jax.Array:
  left_right, up_down = jax.random.bernoulli(rng, 0.5, (2,))
  image = jnp.where(left_right, image[:, ::-1], image)
  return jnp.where(up_down, image[::-1], image)


def _colour(image: jax.Array, rng: jax.Array) -> jax.Array:
  b_rng, c_rng, s_rng, g_rng = jax.random.split(rng, 4)
  image = image + jax.random.uniform(
      b_rng, (), minval=-BRIGHTNESS, maxval=BRIGHTNESS
  )
  mean = jnp.mean(image)
  contrast = jax.random.uniform(
      c_rng, (), minval=1 - CONTRAST, maxval=1 + CONTRAST
  )
  image = mean + contrast * (image - mean)
  grey = jnp.mean(image, axis=-1, keepdims=True)
  saturation = jax.random.uniform(
      s_rng, (), minval=1 - SATURATION, maxval=1 + SATURATION
  )
  saturation = jnp.where(
      jax.random.bernoulli(g_rng, GRAYSCALE), 0.0, saturation
  )
  return grey + saturation * (image - grey)


def _view(image: jax.Array, rng: jax.Array) -> jax.Array:
  crop_rng, flip_rng, colour_rng = jax.random.split(rng, 3)
  image = _crop_and_resize(image, crop_rng)
  return _colour(_flip(image, flip_rng), colour_rng)


def two_views(images: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Two independently augmented views of every image in `images` [n, h, w, c]."""
  keys = jax.random.split(rng, (2, images.shape[0]))
  view = jax.vmap(_view)
  return view(images, keys[0]), view(images, keys[1])
