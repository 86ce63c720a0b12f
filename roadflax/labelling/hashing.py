"""A perceptual hash, to drop frames that look alike from a labelling queue.

A difference hash (dHash): the image shrunk to 9x8 grey pixels, one bit per
pair of horizontal neighbours (is the left one brighter?). Re-encoding,
resizing and small changes of exposure leave it nearly unchanged, so the
frames a parked or slow car films over and over differ in a few bits, while
two different stretches of road differ in about half of the 64.
"""

import numpy as np
from PIL import Image

BITS = 64
# Hashes at most this many bits apart are the same picture (about 10% of
# the bits: what re-encoding and a slight shift of the camera change).
NEAR_BITS = 6


def dhash(pixels: np.ndarray) -> int:
  """The 64-bit difference hash of uint8 RGB pixels [H, W, 3]."""
  grey = Image.fromarray(pixels).convert("L").resize((9, 8), Image.BILINEAR)
  values = np.asarray(grey, np.int16)
  bits = (values[:, :-1] > values[:, 1:]).flatten()
  return int.from_bytes(np.packbits(bits).tobytes(), "big")


def distance(a: int, b: int) -> int:
  """How many bits two hashes differ in."""
  return (a ^ b).bit_count()
