"""Random training-time changes of a preprocessed image (`config.data.augment`),
so that a model learns the road's surface rather than the photograph: its
scale and angle (a random resized crop, rotation, flips), its light and
camera (brightness, contrast, saturation, hue, white balance, grayscale,
gamma) and its focus (blur).

Stateless: an augmented image is a function of its example's seed alone, so a
resumed epoch augments every example exactly as an uninterrupted one would.
Every change but the first three (crop, flip, brightness) is off by default
and draws from a seed of its own, folded from the example's: with them off,
an image is bit for bit what it was before they existed, and turning one on
changes no other's draw.

Cost: the colour changes are one 3x3 matrix (and an offset for contrast)
applied in one pass, and the crop and the rotation are one resampling; no
branch costs anything when its change is off.
"""

import dataclasses
import math
from typing import Any, Callable

import tensorflow as tf

from roadflax.errors import UserError

# ITU-R 601-2 luma, the grey level that saturation, grayscale, contrast and
# white balance keep (as `preprocess` and PIL use).
_LUMA = (0.299, 0.587, 0.114)
# Blur kernels reach this many sigmas either side.
_BLUR_REACH = 3.0
_MAX_BLUR_SIGMA = 10.0


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """Which random changes training applies, and how strong (0: off)."""

  flip: bool  # left-right, half the images
  crop_scale: float  # least area of the random crop; 1.0 = no crop
  brightness: float  # delta in [-b, b] of the 0..1 range
  # The widest crop's width / height: aspect drawn log-uniformly in
  # [1 / a, a] (4/3 as it always was).
  crop_aspect: float = 4 / 3
  vertical_flip: bool = False  # up-down, half the images (seen from above)
  # An angle in [-d, d], zoomed in so that no corner is empty.
  rotate_degrees: float = 0.0
  contrast: float = 0.0  # factor in [1 - c, 1 + c] about the mean grey
  saturation: float = 0.0  # factor in [1 - s, 1 + s]
  hue: float = 0.0  # turn of the colour wheel in [-h, h] (0.5 = half)
  # Per-channel gains in [1 - w, 1 + w], scaled to keep the grey level.
  white_balance: float = 0.0
  grayscale: float = 0.0  # probability of a grey image
  gamma: float = 0.0  # exponent log-uniform in [1 / g, g]; 0 = off
  blur_probability: float = 0.0  # of a Gaussian blur ...
  blur_sigma: float = 0.0  # ... of sigma in (0, blur_sigma] pixels

  @classmethod
  def from_config(cls, augment_config: Any) -> "Augmentation":
    """Reads and checks `config.data.augment`; a key missing (a workdir's
    config.json from before it existed) is off.

    Raises:
      UserError: a value out of its range.
    """
    a = cls(**{
        field.name: (bool if field.name.endswith("flip") else float)(
            augment_config[field.name]
        )
        for field in dataclasses.fields(cls)
        if field.name in augment_config
    })
    a._check()
    return a

  def _check(self) -> None:
    unit = "in [0, 1] (0 = off)"
    rules = (
        ("crop_scale", 0 < self.crop_scale <= 1, "in (0, 1] (1.0 = no crop)"),
        (
            "crop_aspect",
            self.crop_aspect >= 1,
            ">= 1 (the widest crop's width / height; 1 = square crops)",
        ),
        ("brightness", 0 <= self.brightness <= 1, unit),
        (
            "rotate_degrees",
            0 <= self.rotate_degrees <= 180,
            "in [0, 180] (0 = off)",
        ),
        ("contrast", 0 <= self.contrast <= 1, unit),
        ("saturation", 0 <= self.saturation <= 1, unit),
        ("hue", 0 <= self.hue <= 0.5, "in [0, 0.5] (0 = off, 0.5 = any hue)"),
        ("white_balance", 0 <= self.white_balance < 1, "in [0, 1) (0 = off)"),
        ("grayscale", 0 <= self.grayscale <= 1, unit),
        (
            "gamma",
            self.gamma == 0 or 1 <= self.gamma <= 10,
            "0 (off) or in [1, 10] (exponents from 1 / gamma to gamma)",
        ),
        ("blur_probability", 0 <= self.blur_probability <= 1, unit),
        (
            "blur_sigma",
            0 <= self.blur_sigma <= _MAX_BLUR_SIGMA,
            f"in [0, {_MAX_BLUR_SIGMA:g}] pixels (0 = off)",
        ),
    )
    for name, ok, rule in rules:
      if not ok:
        raise UserError(
            f"--config.data.augment.{name}={getattr(self, name)} must be {rule}"
        )
    if (self.blur_probability > 0) != (self.blur_sigma > 0):
      raise UserError(
          "--config.data.augment.blur_probability and .blur_sigma blur only"
          " when both are > 0: set both, or both to 0"
      )

  @property
  def recolours(self) -> bool:
    """Whether any change of `_recolour` is on."""
    return any((
        self.contrast,
        self.saturation,
        self.hue,
        self.white_balance,
        self.grayscale,
    ))


def augment(
    image: tf.Tensor, example_seed: tf.Tensor, a: Augmentation, image_size: int
) -> tf.Tensor:
  """The random changes `a` asks for of a uint8 [S, S, 3] image.

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
  angle_seed, vertical_seed, colour_seed, gamma_seed, blur_seed = tf.unstack(
      tf.random.experimental.stateless_split(
          tf.random.experimental.stateless_fold_in(example_seed, 1), 5
      )
  )
  channels = image.shape[-1]
  if a.rotate_degrees > 0:
    image = _crop_and_rotate(image, crop_seed, angle_seed, a, image_size)
    image.set_shape([image_size, image_size, channels])
  elif a.crop_scale < 1:
    begin, size = _crop_box(image, crop_seed, a)
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
    image = _maybe(flip_seed, 0.5, tf.image.flip_left_right, image)
  if a.vertical_flip:
    image = _maybe(vertical_seed, 0.5, tf.image.flip_up_down, image)
  if a.brightness > 0:
    delta = tf.random.stateless_uniform(
        [], brightness_seed, -a.brightness, a.brightness
    )
    image = tf.clip_by_value(image + 255.0 * delta, 0.0, 255.0)
  if a.recolours:
    image = _recolour(image, colour_seed, a)
  if a.gamma > 0:
    log_gamma = math.log(a.gamma)
    exponent = tf.exp(
        tf.random.stateless_uniform([], gamma_seed, -log_gamma, log_gamma)
    )
    # exp(e * log(x)), 3 to 5 times faster than tf.pow on the CPU; clipped,
    # as 255 * (x / 255) ** e may round past 255.
    powered = tf.exp(exponent * tf.math.log(image / 255.0 + 1e-7))
    image = tf.minimum(255.0 * powered, 255.0)
  if a.blur_probability > 0:
    apply_seed, sigma_seed = tf.unstack(
        tf.random.experimental.stateless_split(blur_seed, 2)
    )
    sigma = a.blur_sigma * (1.0 - tf.random.stateless_uniform([], sigma_seed))
    image = _maybe(
        apply_seed,
        a.blur_probability,
        lambda x: _blur(x, sigma, a.blur_sigma),
        image,
    )
  return image


def _maybe(
    seed: tf.Tensor,
    probability: float,
    change: Callable[[tf.Tensor], tf.Tensor],
    image: tf.Tensor,
) -> tf.Tensor:
  """`change(image)` with `probability`, else `image`.

  A branch, not tf.where: on the CPU, selecting with a broadcast scalar
  costs more than the rest of the augmentation (0.4 ms an image at 224).
  """
  apply = tf.random.stateless_uniform([], seed) < probability
  return tf.cond(apply, lambda: change(image), lambda: image)


def _crop_box(
    image: tf.Tensor, seed: tf.Tensor, a: Augmentation
) -> tuple[tf.Tensor, tf.Tensor]:
  """(begin, size) of a random crop of at least `crop_scale` of the area."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image),
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed,
      min_object_covered=0.0,
      aspect_ratio_range=(1 / a.crop_aspect, a.crop_aspect),
      area_range=(a.crop_scale, 1.0),
      use_image_if_no_bounding_boxes=True,
  )
  return begin, size


def _crop_and_rotate(
    image: tf.Tensor,
    crop_seed: tf.Tensor,
    angle_seed: tf.Tensor,
    a: Augmentation,
    image_size: int,
) -> tf.Tensor:
  """The random crop (the whole image when `crop_scale` is 1), turned by a
  random angle in one bilinear resampling, with no empty corner
  (`_turned_crop_transform`).

  Returns:
    float32 [S, S, C].
  """
  if a.crop_scale < 1:
    begin, size = _crop_box(image, crop_seed, a)
  else:
    begin, size = tf.zeros([3], tf.int32), tf.shape(image)
  top, left = tf.unstack(tf.cast(begin[:2], tf.float32))
  height, width = tf.unstack(tf.cast(size[:2], tf.float32))
  degrees = tf.random.stateless_uniform(
      [], angle_seed, -a.rotate_degrees, a.rotate_degrees
  )
  transform = _turned_crop_transform(
      top, left, height, width, degrees * (math.pi / 180.0), image_size
  )
  turned = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(image, tf.float32)[None],
      transforms=transform[None],
      output_shape=tf.constant([image_size, image_size]),
      fill_value=0.0,
      interpolation="BILINEAR",
      # Every sample lies inside the image; one within half a pixel of its
      # edge reads the edge pixel rather than black.
      fill_mode="NEAREST",
  )
  return turned[0]


def _turned_crop_transform(
    top: tf.Tensor,
    left: tf.Tensor,
    height: tf.Tensor,
    width: tf.Tensor,
    angle: tf.Tensor,
    image_size: int,
) -> tf.Tensor:
  """The projective transform, float32 [8], that maps each pixel (x, y) of
  the S x S output to the input pixel it shows: the crop box (pixel edges
  `top`, `left`, `height`, `width`) turned by `angle` radians about its
  centre and shrunk until the turned rectangle fits inside the box, which
  lies inside the image, so no output pixel falls outside it."""
  cos, sin = tf.cos(angle), tf.sin(angle)
  # The largest f at which the turned (f width) x (f height) rectangle's
  # bounding box fits in width x height.
  shrink = tf.minimum(
      width / (width * tf.abs(cos) + height * tf.abs(sin)),
      height / (width * tf.abs(sin) + height * tf.abs(cos)),
  )
  across = shrink * width / image_size  # input pixels per output pixel
  down = shrink * height / image_size
  # Input pixel = m @ (x, y) + offset, pixel centres at integers: output
  # pixel centre p lies at (p + 0.5) / S - 0.5 of the crop from its centre.
  m = [[cos * across, -sin * down], [sin * across, cos * down]]
  half = 0.5 - image_size / 2.0
  offset_x = (m[0][0] + m[0][1]) * half + left + width / 2.0 - 0.5
  offset_y = (m[1][0] + m[1][1]) * half + top + height / 2.0 - 0.5
  return tf.stack(
      [m[0][0], m[0][1], offset_x, m[1][0], m[1][1], offset_y, 0.0, 0.0]
  )


def _recolour(image: tf.Tensor, seed: tf.Tensor, a: Augmentation) -> tf.Tensor:
  """White balance, saturation, hue, grayscale and contrast, in that order,
  as one 3x3 matrix and a grey offset: one pass over the pixels."""
  contrast_seed, saturation_seed, hue_seed, balance_seed, grey_seed = (
      tf.unstack(tf.random.experimental.stateless_split(seed, 5))
  )
  luma = tf.constant([_LUMA])  # [1, 3]
  to_grey = tf.ones([3, 1]) @ luma  # every channel := the pixel's luma
  eye = tf.eye(3)
  matrix = eye
  if a.white_balance > 0:
    gains = tf.random.stateless_uniform(
        [3], balance_seed, 1 - a.white_balance, 1 + a.white_balance
    )
    matrix = tf.linalg.diag(gains / tf.reduce_sum(gains * luma))
  if a.saturation > 0:
    s = tf.random.stateless_uniform(
        [], saturation_seed, 1 - a.saturation, 1 + a.saturation
    )
    matrix = (s * eye + (1 - s) * to_grey) @ matrix
  if a.hue > 0:
    turn = tf.random.stateless_uniform([], hue_seed, -a.hue, a.hue)
    matrix = _hue_rotation(turn * 2 * math.pi) @ matrix
  if a.grayscale > 0:
    grey = tf.random.stateless_uniform([], grey_seed) < a.grayscale
    matrix = tf.where(grey, to_grey @ matrix, matrix)  # 3x3: cheap
  pixels = tf.reshape(image, [-1, 3])
  if a.contrast > 0:
    c = tf.random.stateless_uniform(
        [], contrast_seed, 1 - a.contrast, 1 + a.contrast
    )
    # The recoloured image's mean grey, from the mean pixel (the matrix is
    # linear); rows first: a reduction over the outer axis is the fast one.
    mean_pixel = tf.reduce_mean(tf.reduce_mean(image, axis=0), axis=0)
    mean_grey = tf.reduce_sum(luma @ matrix * mean_pixel)
    out = pixels @ tf.transpose(c * matrix) + (1 - c) * mean_grey
  else:
    out = pixels @ tf.transpose(matrix)
  return tf.clip_by_value(tf.reshape(out, tf.shape(image)), 0.0, 255.0)


def _hue_rotation(angle: tf.Tensor) -> tf.Tensor:
  """The 3x3 rotation of RGB about the grey axis (1, 1, 1) by `angle`
  (Rodrigues' formula): hues turn, grey stays grey."""
  cos, sin = tf.cos(angle), tf.sin(angle)
  cross = tf.constant([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
  return (
      cos * tf.eye(3)
      + (1 - cos) / 3 * tf.ones([3, 3])
      + sin / math.sqrt(3) * cross
  )


def _blur(image: tf.Tensor, sigma: tf.Tensor, max_sigma: float) -> tf.Tensor:
  """A Gaussian blur of `sigma` pixels, rows then columns, with the edges
  mirrored; the kernel's width is fixed by `max_sigma`, its weights by
  `sigma`."""
  radius = math.ceil(_BLUR_REACH * max_sigma)
  taps = tf.range(-radius, radius + 1, dtype=tf.float32)
  weights = tf.exp(-0.5 * tf.square(taps / sigma))
  weights /= tf.reduce_sum(weights)
  padded = tf.pad(
      image[None],
      [[0, 0], [radius, radius], [radius, radius], [0, 0]],
      "REFLECT",
  )
  channels = image.shape[-1]
  kernel = tf.tile(weights[:, None, None, None], [1, 1, channels, 1])
  down = tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")
  across = tf.nn.depthwise_conv2d(
      down, tf.transpose(kernel, [1, 0, 2, 3]), [1, 1, 1, 1], "VALID"
  )
  # Weights summing to 1 within rounding may carry 255 just past it.
  return tf.clip_by_value(across[0], 0.0, 255.0)
