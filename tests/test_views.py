"""The two random views a contrastive objective compares."""

import jax
import jax.numpy as jnp
import numpy as np

from roadflax.models import views


def test_views_have_the_images_shape_and_differ_from_each_other():
  images = jnp.asarray(
      np.random.default_rng(0).normal(size=(4, 67, 67, 3)), jnp.float32
  )
  first, second = jax.jit(views.two_views)(images, jax.random.key(0))
  assert first.shape == second.shape == images.shape
  assert np.all(np.isfinite(first)) and np.all(np.isfinite(second))
  per_image = jnp.mean(jnp.abs(first - second), axis=(1, 2, 3))
  assert bool(jnp.all(per_image > 1e-3))
  again, _ = jax.jit(views.two_views)(images, jax.random.key(0))
  np.testing.assert_array_equal(first, again)


def test_a_crop_of_a_constant_image_keeps_its_colour_up_to_the_colour_change():
  # A flat image stays flat under any crop, flip, brightness and contrast;
  # only its level and saturation move.
  images = jnp.broadcast_to(jnp.asarray([0.5, -0.2, 0.1]), (2, 70, 90, 3))
  first, _ = views.two_views(images, jax.random.key(3))
  spread = jnp.std(first, axis=(1, 2))
  assert float(jnp.max(spread)) < 1e-4


def test_the_crop_zooms_into_the_image():
  # Left half 0, right half 1: a crop of part of the area and a resize back
  # shows the edge at another place in some view.
  image = jnp.concatenate(
      [jnp.zeros((64, 32, 1)), jnp.ones((64, 32, 1))], axis=1
  )
  image = jnp.broadcast_to(image, (16, 64, 64, 1)).repeat(3, axis=-1)
  first, _ = views.two_views(image, jax.random.key(1))
  grey = jnp.mean(first, axis=(1, 3))  # [n, width]
  edges = jnp.argmax(jnp.abs(jnp.diff(grey, axis=-1)), axis=-1)
  assert len(set(np.asarray(edges).tolist())) > 3
