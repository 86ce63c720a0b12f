"""Training-time augmentation (`data.augment`): the same image for the same
seed, each change off until asked for, images of before with the new changes
off, rotation without empty corners, values in 0..255, checked settings."""

import math

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from roadflax.configs import default
from roadflax.data import augment
from roadflax.errors import UserError

SIZE = 32
OFF = dict(flip=False, crop_scale=1.0, brightness=0.0)
# Every change on, strongly.
EVERY = dict(
    flip=True,
    crop_scale=0.1,
    brightness=0.3,
    crop_aspect=2.0,
    vertical_flip=True,
    rotate_degrees=180.0,
    contrast=0.5,
    saturation=0.5,
    hue=0.2,
    white_balance=0.3,
    grayscale=0.3,
    gamma=2.0,
    blur_probability=0.5,
    blur_sigma=1.5,
)
# Each new change on its own, as strong as it gets with a 1-in-2 chance or
# more of changing an image.
EACH_NEW = [
    dict(crop_scale=0.3, crop_aspect=3.0),
    dict(vertical_flip=True),
    dict(rotate_degrees=30.0),
    dict(contrast=0.5),
    dict(saturation=0.5),
    dict(hue=0.2),
    dict(white_balance=0.3),
    dict(grayscale=0.5),
    dict(gamma=2.0),
    dict(blur_probability=0.5, blur_sigma=2.0),
]


def _image(seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))


def _seed(i):
  return tf.constant([11, i], tf.int64)


def _augment(image, i, **changes):
  a = augment.Augmentation(**{**OFF, **changes})
  return augment.augment(image, _seed(i), a, SIZE).numpy()


def _before(image, seed, flip, crop_scale, brightness):
  """The augmentation as it was before the new changes, op for op."""
  crop_seed, flip_seed, brightness_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3)
  )
  if crop_scale < 1:
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(crop_scale, 1.0),
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.image.resize(
        tf.slice(image, begin, size), [SIZE, SIZE], method="bilinear"
    )
  image = tf.cast(image, tf.float32)
  if flip and tf.random.stateless_uniform([], flip_seed) < 0.5:
    image = tf.image.flip_left_right(image)
  if brightness > 0:
    delta = tf.random.stateless_uniform(
        [], brightness_seed, -brightness, brightness
    )
    image = tf.clip_by_value(image + 255.0 * delta, 0.0, 255.0)
  return image.numpy()


def test_the_new_keys_off_give_the_images_of_before():
  config = default.get_config().data.augment
  a = augment.Augmentation.from_config(config)
  assert a == augment.Augmentation(flip=True, crop_scale=0.8, brightness=0.1)
  image = _image()
  for i in range(6):
    for crop_scale in (0.8, 0.3):
      old = dict(flip=True, crop_scale=crop_scale, brightness=0.1)
      np.testing.assert_array_equal(
          _augment(image, i, **old), _before(image, _seed(i), **old)
      )


def test_all_off_is_the_image_itself():
  image = _image()
  np.testing.assert_array_equal(
      _augment(image, 0), image.numpy().astype(np.float32)
  )


def test_an_image_is_a_function_of_its_seed_alone():
  image = _image()
  first = _augment(image, 3, **EVERY)
  np.testing.assert_array_equal(_augment(image, 3, **EVERY), first)
  assert not np.array_equal(_augment(image, 4, **EVERY), first)
  # As the input pipeline runs it, in a graph: bit for bit from one graph to
  # the next (as a resumed run builds it again), and the eager image within
  # rounding (the graph's ops are fused).
  a = augment.Augmentation(**EVERY)
  graphs = [
      tf.function(lambda x, s: augment.augment(x, s, a, SIZE))(image, _seed(3))
      for _ in range(2)
  ]
  np.testing.assert_array_equal(graphs[0].numpy(), graphs[1].numpy())
  np.testing.assert_allclose(graphs[0].numpy(), first, atol=1e-2)


@pytest.mark.parametrize("changes", EACH_NEW, ids=lambda c: "+".join(sorted(c)))
def test_each_new_change_changes_images_when_on(changes):
  """(Off, each is nothing: `test_all_off_is_the_image_itself`.)"""
  image = _image()
  pixels = image.numpy().astype(np.float32)
  changed = [
      not np.allclose(_augment(image, i, **changes), pixels, atol=1e-3)
      for i in range(8)
  ]
  assert sum(changed) >= 2


def test_one_change_turned_on_leaves_the_others_draws_alone():
  image = _image()
  colour = dict(flip=True, saturation=0.5, hue=0.2)
  for i in range(4):
    np.testing.assert_allclose(
        _augment(image, i, **colour, blur_probability=1.0, blur_sigma=1e-3),
        _augment(image, i, **colour),
        atol=1e-3,
    )


def test_values_stay_in_0_to_255_with_a_static_shape():
  image = tf.constant(
      np.where(np.random.default_rng(1).random((SIZE, SIZE, 3)) < 0.5, 0, 255),
      tf.uint8,
  )
  for i in range(16):
    out = _augment(image, i, **EVERY)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
  a = augment.Augmentation(**EVERY)
  traced = tf.function(
      lambda x: augment.augment(x, _seed(0), a, SIZE)
  ).get_concrete_function(tf.TensorSpec([SIZE, SIZE, 3], tf.uint8))
  assert traced.structured_outputs.shape == (SIZE, SIZE, 3)


def test_colour_changes_keep_grey_grey_and_grayscale_makes_grey():
  grey = tf.constant(np.full((SIZE, SIZE, 3), 100, np.uint8))
  for i in range(4):
    out = _augment(grey, i, saturation=0.5, hue=0.5, contrast=0.5)
    np.testing.assert_allclose(out, 100.0, atol=1e-3)
  image = _image()
  greyed = [_augment(image, i, grayscale=1.0) for i in range(2)]
  for out in greyed:
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-3)
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-3)


def test_a_turned_crop_never_reaches_outside_its_box():
  """The output's outer corners (pixel edges at -0.5 and S - 0.5) fall
  inside the crop box, and one of them on its edge: the least zoom that
  leaves no corner empty."""
  rng = np.random.default_rng(0)
  for _ in range(200):
    height, width = rng.uniform(8, SIZE, 2)
    top, left = rng.uniform(0, SIZE - height), rng.uniform(0, SIZE - width)
    angle = rng.uniform(-math.pi, math.pi)
    t = augment._turned_crop_transform(
        *(tf.constant(v, tf.float32) for v in (top, left, height, width)),
        tf.constant(angle, tf.float32),
        SIZE,
    ).numpy()
    corners = np.array([[-0.5, -0.5], [SIZE - 0.5, -0.5], [-0.5, SIZE - 0.5]])
    corners = np.concatenate([corners, [[SIZE - 0.5, SIZE - 0.5]]])
    x = t[0] * corners[:, 0] + t[1] * corners[:, 1] + t[2] + 0.5
    y = t[3] * corners[:, 0] + t[4] * corners[:, 1] + t[5] + 0.5
    slack = np.concatenate(
        [x - left, left + width - x, y - top, top + height - y]
    )
    assert slack.min() > -1e-3
    assert slack.min() < 1e-3


def test_rotation_turns_the_image_about_its_centre():
  """A dot at the centre stays there; one off centre moves around it."""
  image = np.zeros((SIZE, SIZE, 3), np.uint8)
  image[15:17, 15:17] = 255
  image[15:17, 22:24] = 255
  outs = [
      _augment(tf.constant(image), i, rotate_degrees=90.0) for i in range(4)
  ]
  for out in outs:
    assert out[15:17, 15:17].min() > 128
  assert (
      len({tuple(np.argwhere(out[..., 0] > 128).mean(0)) for out in outs}) > 1
  )


@pytest.mark.parametrize(
    "key, value",
    [
        ("crop_aspect", 0.5),
        ("rotate_degrees", -5.0),
        ("rotate_degrees", 270.0),
        ("contrast", 1.5),
        ("saturation", -0.1),
        ("hue", 0.7),
        ("white_balance", 1.0),
        ("grayscale", 2.0),
        ("gamma", 0.5),
        ("blur_probability", 1.5),
        ("blur_sigma", 50.0),
    ],
)
def test_a_value_out_of_range_is_one_line_naming_the_key(key, value):
  config = default.get_config().data.augment
  config[key] = value
  with pytest.raises(UserError, match=f"^--config.data.augment.{key}=") as e:
    augment.Augmentation.from_config(config)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("probability, sigma", [(0.5, 0.0), (0.0, 2.0)])
def test_blur_needs_both_its_keys(probability, sigma):
  config = default.get_config().data.augment
  config.update(blur_probability=probability, blur_sigma=sigma)
  with pytest.raises(UserError, match="set both, or both to 0"):
    augment.Augmentation.from_config(config)


def test_a_config_from_before_the_new_keys_reads_them_as_off():
  old = ml_collections.ConfigDict(
      dict(flip=True, crop_scale=0.8, brightness=0.1)
  )
  assert augment.Augmentation.from_config(old) == augment.Augmentation(
      flip=True, crop_scale=0.8, brightness=0.1
  )
