"""Random training-time changes of a preprocessed image: crop, flip and
brightness (`config.data.augment`).

Stateless: an augmented image is a function of its example's seed alone, so a
resumed epoch augments every example exactly as an uninterrupted one would.
"""

import dataclasses
from typing import Any

import tensorflow as tf

from roadflax.errors import UserError

# Aspect-ratio jitter of the random crop.
_CROP_ASPECT_RANGE = (3 / 4, 4 / 3)


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Which random changes training applies, and how strong."""

  flip: bool
  crop_scale: float
  brightness: float

  @classmethod
  def from_config(cls, augment_config: Any) -> "Augmentation":
    """Reads and checks `config.data.augment`.

    Raises:
      UserError: a value out of its range.
    """
    a = cls(
        flip=bool(augment_config.flip),
        crop_scale=float(augment_config.crop_scale),
        brightness=float(augment_config.brightness),
    )
    if not 0 < a.crop_scale <= 1:
      raise UserError(
          f"--config.data.augment.crop_scale={a.crop_scale} must "
          "be in (0, 1] (1.0 = no crop)"
      )
    if not 0 <= a.brightness <= 1:
      raise UserError(
          f"--config.data.augment.brightness={a.brightness} must "
          "be in [0, 1] (0 = off)"
      )
    return a


def augment(
    image: tf.Tensor, example_seed: tf.Tensor, a: Augmentation, image_size: int
) -> tf.Tensor:
  """Random crop, flip and brightness of a uint8 [S, S, 3] image.

  Args:
    image: uint8 [image_size, image_size, 3].
    example_seed: int64 [2], a stateless seed; the result depends on it alone.
    a: the changes to make.
    image_size: S.

  Returns:
    float32 [S, S, 3] in 0..255.
  """
  crop_seed, flip_seed, brightness_seed = tf.unstack(
      tf.random.experimental.stateless_split(example_seed, 3)
  )
  if a.crop_scale < 1:
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed,
        min_object_covered=0.0,
        aspect_ratio_range=_CROP_ASPECT_RANGE,
        area_range=(a.crop_scale, 1.0),
        use_image_if_no_bounding_boxes=True,
    )
    channels = image.shape[-1]
    image = tf.image.resize(
        tf.slice(image, begin, size),
        [image_size, image_size],
        method="bilinear",
    )
    # The crop's size is drawn, so its channels' count is lost; keep the
    # static shape whole (`preprocess.normalize` is fast on a known shape).
    image.set_shape([image_size, image_size, channels])
  image = tf.cast(image, tf.float32)
  if a.flip:
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    # A branch, not tf.where: on the CPU, selecting with a broadcast scalar
    # costs more than the rest of the augmentation (0.4 ms an image at 224).
    unflipped = image
    image = tf.cond(
        flip, lambda: tf.image.flip_left_right(unflipped), lambda: unflipped
    )
  if a.brightness > 0:
    delta = tf.random.stateless_uniform(
        [], brightness_seed, -a.brightness, a.brightness
    )
    image = tf.clip_by_value(image + 255.0 * delta, 0.0, 255.0)
  return image
