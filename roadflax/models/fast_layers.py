"""Fast equivalents of two of the network's layers, with the same parameters.

XLA:CPU runs AlexNet's large-stride first convolution and its mirror, the
4x-strided transposed convolution, far below the machine's matrix-product
speed; these compute the same outputs another way. Both hold exactly the
parameters of the Flax layer they replace, so checkpoints do not depend on
which one ran.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

# Keras's default kernel initialiser, as the published model used.
GLOROT = nn.initializers.glorot_uniform()


class StridedConvTranspose(nn.Module):
  """`nn.ConvTranspose` with `strides == (s, s)` and end padding, computed fast.

  XLA computes a strided transposed convolution as a convolution over an
  input dilated with zeros, so a 4x stride spends 15/16 of its work on zeros
  (and its gradient is as slow). The same output is a stride-1 convolution
  with a ceil(k/s)-tap kernel producing s*s*features channels, rearranged
  depth-to-space ("sub-pixel" convolution). The parameters are exactly those
  of `nn.ConvTranspose(features, (k, k), strides=(s, s),
  padding=[(k - 1, k - 1 + extra)] * 2)`, so checkpoints do not change.
  """

  features: int
  kernel_size: int
  stride: int
  out_hw: tuple[int, int]  # output size: (in - 1) * stride + kernel + extra
  dtype: Any = jnp.float32  # of the computation; the parameters are float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, s = self.kernel_size, self.stride
    kernel = self.param("kernel", GLOROT, (k, k, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    taps = -(-k // s)
    # Output pixel s*q + r is the sum over t < taps of input q + t - (taps - 1)
    # times kernel tap s*t + s - 1 - r - front; taps below 0 read the zeros
    # padded in front of the kernel.
    front = taps * s - k
    padded = jnp.pad(kernel, ((front, 0), (front, 0), (0, 0), (0, 0)))
    index = (
        s * jnp.arange(taps)[:, None] + (s - 1) - jnp.arange(s)[None, :]
    )  # [taps, s]
    sub = padded[index][:, :, index]  # [taps, s, taps, s, in, out]
    sub = sub.transpose(0, 2, 4, 1, 3, 5).reshape(
        taps, taps, x.shape[-1], s * s * self.features
    )
    rows, cols = (-(-n // s) for n in self.out_hw)
    x = jnp.pad(
        x,
        (
            (0, 0),
            (taps - 1, rows - x.shape[1]),
            (taps - 1, cols - x.shape[2]),
            (0, 0),
        ),
    )
    y = jax.lax.conv_general_dilated(
        x, sub, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = y.reshape(y.shape[0], rows, cols, s, s, self.features).transpose(
        0, 1, 3, 2, 4, 5
    )
    y = y.reshape(y.shape[0], rows * s, cols * s, self.features)
    return y[:, : self.out_hw[0], : self.out_hw[1]] + bias


# PatchConv's patch matrices beat XLA:CPU's convolution from about this many
# output pixels on (measured for conv1: 2.5x forward at 128x128 inputs, 30x30
# outputs; slower at 96x96, 22x22 outputs).
_PATCHES_FROM_OUTPUT_PIXELS = 30 * 30


class PatchConv(nn.Module):
  """`nn.Conv(features, (k, k), strides=(s, s), padding="VALID")`, computed on
  CPUs as one matrix product per image.

  XLA:CPU runs a large-stride convolution such as AlexNet's 11x11 stride-4
  first layer far below the machine's matrix-product speed. Here the image is
  cut into s x s blocks (space to depth), each output pixel's ceil(k/s)^2
  neighbouring blocks are stacked into a patch matrix, and that is multiplied
  by the kernel, zero-padded to whole blocks; `lax.map` goes one image at a
  time so the patch matrix (5 MB at 224x224) stays in cache. At 224x224 the
  layer's forward pass runs 2.7x and its weight gradient 2.2x faster here than
  `lax.conv`. Small outputs, and other backends, use the convolution. The
  parameters are exactly `nn.Conv`'s, so checkpoints do not change.
  """

  features: int
  kernel_size: int
  stride: int
  patches: bool | None = (
      None  # None: patch matrices on CPUs, for large outputs.
  )
  dtype: Any = jnp.float32  # of the computation; the parameters are float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, s = self.kernel_size, self.stride
    kernel = self.param("kernel", GLOROT, (k, k, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    n, height, width, channels = x.shape
    rows, cols = (height - k) // s + 1, (width - k) // s + 1
    patches = self.patches
    if patches is None:
      patches = (
          jax.default_backend() == "cpu"
          and rows * cols >= _PATCHES_FROM_OUTPUT_PIXELS
      )
    if not patches:
      y = jax.lax.conv_general_dilated(
          x, kernel, (s, s), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
      return y + bias
    taps = -(-k // s)  # blocks per output pixel along each axis
    # Output pixel (r, c) reads input blocks r..r+taps-1, c..c+taps-1; pixels
    # past the input, if any, meet the kernel's zero padding.
    h, w = s * (rows + taps - 1), s * (cols + taps - 1)
    x = jnp.pad(
        x, ((0, 0), (0, max(0, h - height)), (0, max(0, w - width)), (0, 0))
    )
    blocks = x[:, :h, :w].reshape(n, h // s, s, w // s, s, channels)
    blocks = blocks.transpose(0, 1, 3, 2, 4, 5).reshape(
        n, h // s, w // s, s * s * channels
    )
    padded = jnp.pad(
        kernel, ((0, taps * s - k), (0, taps * s - k), (0, 0), (0, 0))
    )
    weights = padded.reshape(taps, s, taps, s, channels, self.features)
    weights = weights.transpose(0, 2, 1, 3, 4, 5).reshape(-1, self.features)

    def one_image(image_blocks: jax.Array) -> jax.Array:
      patch_matrix = jnp.concatenate(
          [
              image_blocks[i : i + rows, j : j + cols]
              for i in range(taps)
              for j in range(taps)
          ],
          axis=-1,
      )  # [rows, cols, taps * taps * s * s * channels]
      return patch_matrix @ weights

    return jax.lax.map(one_image, blocks) + bias
