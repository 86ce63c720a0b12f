"""The AlexNet-style convolutional autoencoder and its classification head.

One Flax module, `RoadNet`, holds three parameter trees with fixed names:
`encoder` (AlexNet's convolutions), `decoder` (their mirror, reconstructing the
input image) and `head` (AlexNet's dense layers). Objectives use it through
`reconstruct`, `classify` and `__call__` (both at once), so every stage of a
run shares one parameter layout and a checkpoint of any stage can seed another;
`encode` and `classify_latent` are `classify` in two halves (for saliency).

Layers follow Keras semantics (the published model was Keras): glorot-uniform
kernels, zero biases, `VALID` / `SAME` padding as in `tf.keras`.

`dtype` is what convolutions and dense layers compute in; the parameters and
the outputs (logits, reconstruction) are float32 whatever it is.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from roadflax.errors import UserError
from roadflax.models import precision
from roadflax.models.fast_layers import GLOROT, PatchConv, StridedConvTranspose

HEAD_INPUTS = ("latent", "decoder")

_Conv = functools.partial(nn.Conv, kernel_init=GLOROT)
_ConvTranspose = functools.partial(nn.ConvTranspose, kernel_init=GLOROT)
_Dense = functools.partial(nn.Dense, kernel_init=GLOROT)


def _pool_size(size: int) -> int:
  """Output size of a 3x3 stride-2 VALID max pool."""
  return (size - 3) // 2 + 1


@dataclasses.dataclass(frozen=True)
class FeatureSizes:
  """Spatial size (one dimension) after each down-sampling layer."""

  conv1: int
  pool1: int
  pool2: int
  pool5: int


def feature_sizes(size: int) -> FeatureSizes:
  """Sizes along one image dimension of `size` pixels (may be < 1 if too small)."""
  conv1 = (size - 11) // 4 + 1
  pool1 = _pool_size(conv1)
  pool2 = _pool_size(pool1)
  return FeatureSizes(conv1, pool1, pool2, _pool_size(pool2))


def _smallest_size() -> int:
  size = 11
  while feature_sizes(size).pool5 < 1:
    size += 1
  return size


MIN_IMAGE_SIZE = _smallest_size()  # 67: the head's pool5 output is then 1x1


def check_image_size(height: int, width: int) -> None:
  """Raises a UserError for inputs the network cannot take."""
  if min(height, width) < MIN_IMAGE_SIZE:
    raise UserError(
        f"image size {height}x{width} is below the minimum of "
        f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} that this network accepts "
        f"(set data.image_size >= {MIN_IMAGE_SIZE})"
    )


def _resize(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear up-sampling to an exact size (the encoder's sizes are not 2x).

  Without antialiasing, which only down-sampling uses, so that jax2onnx (which
  converts no other resize) can export a decoder head.
  """
  return jax.image.resize(
      x, (x.shape[0], height, width, x.shape[3]), "bilinear", antialias=False
  )


NORMS = ("none", "group")
_GROUPS = 32  # divides every width of the network (96, 256, 384)


class _Norm(nn.Module):
  """GroupNorm after a convolution, or nothing (the published network).

  GroupNorm rather than BatchNorm: it has no running statistics to carry,
  so steps stay pure functions of (params, batch) and evaluation equals
  training's forward pass; it adds 2 parameters per channel.
  """

  kind: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind == "group":
      return nn.GroupNorm(num_groups=_GROUPS, dtype=self.dtype, name="norm")(x)
    return x


class Encoder(nn.Module):
  """AlexNet's convolutions; returns the encoded state (conv6)."""

  norm: str = "none"
  conv1_patches: bool | None = None  # PatchConv's choice; None: by backend
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(_Conv, padding="SAME", dtype=self.dtype)
    norm = functools.partial(_Norm, self.norm, dtype=self.dtype)
    conv1 = PatchConv(
        96, 11, 4, patches=self.conv1_patches, dtype=self.dtype, name="conv1"
    )
    x = nn.relu(norm(name="conv1_norm")(conv1(x)))
    # window_shape by keyword: the max_pool that jax2onnx puts in place of
    # Flax's while it converts (export) takes it no other way.
    x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="VALID")
    x = nn.relu(norm(name="conv2_norm")(conv(256, (5, 5), name="conv2")(x)))
    x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="VALID")
    for name, features in (
        ("conv3", 384),
        ("conv4", 384),
        ("conv5", 256),
        ("conv6", 256),
    ):
      x = nn.relu(
          norm(name=f"{name}_norm")(conv(features, (3, 3), name=name)(x))
      )
    # For the training-health check; a no-op unless "intermediates" is mutable.
    rms = jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32))))
    self.sow("intermediates", "rms", rms)
    return x


class Decoder(nn.Module):
  """The encoder's mirror; reconstructs an image of the encoder's input size."""

  norm: str = "none"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self,
      latent: jax.Array,
      image_hw: tuple[int, int],
      *,
      features_only: bool = False,
  ) -> jax.Array:
    """The float32 reconstruction, or with `features_only` the 96-channel map
    at conv2's spatial size (what `head_input='decoder'` reads)."""
    deconv = functools.partial(_ConvTranspose, padding="SAME", dtype=self.dtype)
    norm = functools.partial(_Norm, self.norm, dtype=self.dtype)
    sizes = [feature_sizes(s) for s in image_hw]
    x = latent
    for name, features in (
        ("deconv6", 256),
        ("deconv5", 384),
        ("deconv4", 384),
        ("deconv3", 256),
    ):
      x = deconv(features, (3, 3), name=name)(x)
      x = nn.relu(norm(name=f"{name}_norm")(x))
    x = _resize(x, sizes[0].pool1, sizes[1].pool1)
    x = deconv(96, (5, 5), name="deconv2")(x)
    x = nn.relu(norm(name="deconv2_norm")(x))
    if features_only:
      return x
    x = _resize(x, sizes[0].conv1, sizes[1].conv1)
    # A VALID stride-4 transpose gives (conv1 - 1) * 4 + 11 pixels, up to three
    # short of the input; padding at the end restores the exact size.
    deconv1 = StridedConvTranspose(
        3, 11, 4, tuple(image_hw), self.dtype, name="deconv1"
    )
    return deconv1(x).astype(jnp.float32)


class Head(nn.Module):
  """AlexNet's pool5 and dense layers; returns float32 logits."""

  num_classes: int
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  units: int = 4096  # of fc1 and fc2

  @nn.compact
  def __call__(
      self, x: jax.Array, *, train: bool, embed: bool = False
  ) -> jax.Array:
    """Logits; with `embed`, fc2's output before its ReLU (float32), the
    embedding a contrastive objective compares (fc1 and fc2 its projection)."""
    dropout = functools.partial(
        nn.Dropout, self.dropout_rate, deterministic=not train
    )
    x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="VALID")
    x = x.reshape((x.shape[0], -1))
    x = dropout()(nn.relu(_Dense(self.units, dtype=self.dtype, name="fc1")(x)))
    x = _Dense(self.units, dtype=self.dtype, name="fc2")(x)
    if embed:
      return x.astype(jnp.float32)
    x = dropout()(nn.relu(x))
    logits = _Dense(self.num_classes, dtype=self.dtype, name="logits")(x)
    return logits.astype(jnp.float32)


class RoadNet(nn.Module):
  """Encoder, decoder and head; methods pick the path an objective needs."""

  num_classes: int
  head_input: str = "latent"
  dropout_rate: float = 0.5
  norm: str = "none"  # normalisation after each convolution: none | group
  head_units: int = 4096  # of the head's fc1 and fc2
  # conv1 as patch matrices (True), as a convolution (False: what exporters
  # convert), or by backend and size (None); the parameters are the same.
  conv1_patches: bool | None = None
  dtype: Any = jnp.float32  # of the computation (`precision`)

  def setup(self):
    if self.head_input not in HEAD_INPUTS:
      raise UserError(
          f"model.head_input must be one of {HEAD_INPUTS}, got"
          f" {self.head_input!r}"
      )
    if self.norm not in NORMS:
      raise UserError(f"model.norm must be one of {NORMS}, got {self.norm!r}")
    self.encoder = Encoder(self.norm, self.conv1_patches, self.dtype)
    self.decoder = Decoder(self.norm, self.dtype)
    self.head = Head(
        self.num_classes, self.dropout_rate, self.dtype, self.head_units
    )

  def _head_features(
      self, latent: jax.Array, image_hw: tuple[int, int]
  ) -> jax.Array:
    if self.head_input == "decoder":
      return self.decoder(latent, image_hw, features_only=True)
    return latent

  def __call__(
      self, images: jax.Array, *, train: bool = False
  ) -> tuple[jax.Array, jax.Array]:
    """(logits, reconstruction) from one encoder pass; also initialises every tree."""
    image_hw = images.shape[1:3]
    latent = self.encoder(images)
    logits = self.head(self._head_features(latent, image_hw), train=train)
    return logits, self.decoder(latent, image_hw)

  def classify(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    return self.classify_latent(
        self.encode(images), images.shape[1:3], train=train
    )

  def encode(self, images: jax.Array) -> jax.Array:
    """The encoder's output: its last convolutional feature map (conv6,
    after its ReLU), [N, h, w, 256]."""
    return self.encoder(images)

  def classify_latent(
      self,
      latent: jax.Array,
      image_hw: tuple[int, int],
      *,
      train: bool = False,
  ) -> jax.Array:
    """The logits of `encode`'s output for images of size `image_hw`."""
    return self.head(self._head_features(latent, image_hw), train=train)

  def embed(self, images: jax.Array) -> jax.Array:
    """The head's fc2 output before its ReLU, [N, head_units], float32."""
    latent = self.encode(images)
    return self.head(
        self._head_features(latent, images.shape[1:3]), train=False, embed=True
    )

  def reconstruct(self, images: jax.Array) -> jax.Array:
    return self.decoder(self.encoder(images), images.shape[1:3])


def create_model(model_config: Any, num_classes: int) -> RoadNet:
  """The model a config's `model` block describes, computing in its dtype."""
  return RoadNet(
      num_classes=num_classes,
      head_input=model_config.head_input,
      dropout_rate=model_config.dropout_rate,
      norm=model_config.norm,
      head_units=model_config.head_units,
      dtype=precision.compute_dtype(model_config.dtype),
  )


def init_params(model: RoadNet, rng: jax.Array, image_size: int) -> dict:
  """Parameters for square `image_size` inputs (the head's width depends on it)."""
  check_image_size(image_size, image_size)
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  return model.init({"params": rng}, images)["params"]


def count_params(tree: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
