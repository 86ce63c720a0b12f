"""Local features of a small grayscale thumbnail: where an image's distinct
details are, and what each looks like, for finding near-duplicates.

A whole-image perceptual hash (a difference hash of a 9x8 thumbnail) cannot
see that two frames are crops of one photograph: moving a window over a road
texture by 2% of its width changes an eighth of the hash's 64 bits, by 4% a
quarter, and by 10% half (as many as an unrelated texture). Local features
can. Points are found where a blob stands out from its surroundings
(extrema of a difference of Gaussians across position and scale, as in
SIFT), so the same detail is found again in another crop, at another zoom or
exposure. Each point is described by histograms of gradient directions in a
4x4 grid around it (SIFT's layout, without its rotation: photos are not
rotated between crops), which survive small misalignments that a pixel hash
does not.

Pure numpy (Gaussian blurs by FFT); about 8 ms of CPU an image, the
thumbnail decoded at a reduced JPEG scale.
"""

import dataclasses
import functools

import numpy as np
from PIL import Image

SHORT_SIDE = 128  # Thumbnail pixels along the image's shorter side.
MAX_POINTS = 60  # The strongest points kept per image.
GRID = 4  # Cells per side of a descriptor.
BINS = 8  # Gradient directions per cell.
DESCRIPTOR_SIZE = GRID * GRID * BINS

_SIGMA0 = 1.6  # The first blur of each octave, in its pixels.
_LEVELS = 3  # Scales per octave.
_OCTAVES = 2  # Octaves searched: blobs of about 2 to 8 thumbnail pixels.
_STEP = 2 ** (1 / _LEVELS)
_SIGMAS = _SIGMA0 * _STEP ** np.arange(_LEVELS + 3)
_CAMERA_BLUR = 0.5  # Blur assumed in a freshly resized image.
_MIN_RESPONSE = 0.01  # Weakest blob kept, on an image of unit contrast.
_EDGE_RATIO = 10.0  # Points on edges (not blobs) slide along them: dropped.
_CELL_SIGMAS = 3.0  # A cell's width in units of its point's scale.
_SAMPLES = 16  # Gradient samples per side of a descriptor.
_CLIP = 0.2  # Descriptor entries clipped here (SIFT's remedy for glare).
_PAD = int(np.ceil(3 * _SIGMAS[-1]))  # Reflected border of the blurs.

_OFFSETS = ((np.arange(_SAMPLES) + 0.5) / _SAMPLES - 0.5).astype(np.float32)
_WEIGHTS = np.exp(-(_OFFSETS[:, None] ** 2 + _OFFSETS[None, :] ** 2) * 2)
_CELLS = (np.arange(_SAMPLES) * GRID) // _SAMPLES
_CELL_OF_SAMPLE = (_CELLS[:, None] * GRID + _CELLS[None, :]).ravel()


@dataclasses.dataclass(frozen=True)
class Features:
  """An image's points and their descriptors.

  Attributes:
    points: float32 [n, 3], each point's row, column and scale, in units of
      the image's shorter side (so images of any size compare).
    descriptors: float32 [n, DESCRIPTOR_SIZE], unit length.
    extent: the last row and column, in the same units.
  """

  points: np.ndarray
  descriptors: np.ndarray
  extent: tuple[float, float]

  def __len__(self) -> int:
    return len(self.points)


def thumbnail(image: Image.Image) -> np.ndarray:
  """The image as float32 grayscale, SHORT_SIDE pixels along its shorter
  side, with zero mean and unit contrast (so exposure does not matter).

  A JPEG is decoded at a reduced scale where that still leaves enough
  pixels, which makes decoding several times faster.
  """
  size = tuple(
      max(1, round(side * SHORT_SIDE / min(image.size))) for side in image.size
  )
  image.draft("L", size)  # A JPEG: decoded at the smallest scale >= size.
  gray = image.convert("L").resize(size, Image.Resampling.BILINEAR)
  pixels = np.asarray(gray, np.float32)
  return (pixels - pixels.mean()) / (pixels.std() + 1.0)


def features(pixels: np.ndarray) -> Features:
  """The strongest MAX_POINTS points of a `thumbnail` and their descriptors."""
  extent = tuple((side - 1) / min(pixels.shape) for side in pixels.shape)
  found, described = [], []
  octave, blur = pixels, _CAMERA_BLUR
  for scale in (2**o for o in range(_OCTAVES)):
    if min(octave.shape) < 16:
      break
    blurred = _gaussian_stack(octave, blur)
    points = _blobs(blurred[1:] - blurred[:-1])
    if len(points):
      described.append(_describe(blurred, points))
      found.append(points * np.array([scale, scale, scale, 1], np.float32))
    # The next octave starts from twice the first blur, at half the size.
    octave, blur = blurred[_LEVELS][::2, ::2], _SIGMA0
  if not found:
    empty = np.zeros((0, 3), np.float32)
    return Features(empty, np.zeros((0, DESCRIPTOR_SIZE), np.float32), extent)
  points, descriptors = np.concatenate(found), np.concatenate(described)
  strongest = np.argsort(-points[:, 3], kind="stable")[:MAX_POINTS]
  return Features(
      points[strongest, :3] / min(pixels.shape), descriptors[strongest], extent
  )


def _gaussian_stack(image: np.ndarray, blur: float) -> np.ndarray:
  """`image` (already blurred by `blur`) blurred to each of _SIGMAS, by FFT,
  padded by reflection so the borders do not wrap around: [levels, h, w]."""
  padded = np.pad(image, _PAD, mode="symmetric")
  transfer = _transfer(padded.shape, blur)
  blurred = np.fft.irfft2(np.fft.rfft2(padded)[None] * transfer, s=padded.shape)
  height, width = image.shape
  return blurred[:, _PAD : _PAD + height, _PAD : _PAD + width].astype(
      np.float32
  )


@functools.lru_cache(maxsize=16)
def _transfer(shape: tuple[int, int], blur: float) -> np.ndarray:
  """The Fourier transforms of the Gaussians that blur an image of `shape`
  from `blur` to each of _SIGMAS: [levels, rows, columns // 2 + 1]."""
  rows = np.fft.fftfreq(shape[0])[:, None]
  columns = np.fft.rfftfreq(shape[1])[None, :]
  frequency = 2 * np.pi**2 * (rows**2 + columns**2)
  variance = np.maximum(_SIGMAS**2 - blur**2, 0)[:, None, None]
  return np.exp(-frequency[None] * variance).astype(np.float32)


def _blobs(dog: np.ndarray) -> np.ndarray:
  """Extrema of a difference-of-Gaussians stack over scale and position,
  refined to a fraction of a pixel, that are blobs and whose descriptor
  window fits in the image: float32 [n, 4] (row, column, scale, strength)."""
  levels, height, width = dog.shape
  strength = np.abs(dog)
  # The largest strength in each 3x3 neighbourhood, by rows then columns.
  rows = np.maximum(
      np.maximum(strength[:, :-2], strength[:, 1:-1]), strength[:, 2:]
  )
  peak = np.maximum(
      np.maximum(rows[:, :, :-2], rows[:, :, 1:-1]), rows[:, :, 2:]
  )
  inner = strength[1:-1, 1:-1, 1:-1]
  s, y, x = np.nonzero((inner >= peak[1:-1]) & (inner > _MIN_RESPONSE))
  # The strongest few suffice: MAX_POINTS are kept, of those that pass.
  strongest = np.argsort(-inner[s, y, x], kind="stable")[: 8 * MAX_POINTS]
  s, y, x = s[strongest] + 1, y[strongest] + 1, x[strongest] + 1
  value = dog[s, y, x]
  is_max, is_min = np.ones(len(s), bool), np.ones(len(s), bool)
  for ds in (-1, 0, 1):
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        if ds or dy or dx:
          other = dog[s + ds, y + dy, x + dx]
          is_max &= value > other
          is_min &= value < other
  keep = is_max | is_min
  s, y, x, value = s[keep], y[keep], x[keep], value[keep]
  dyy = dog[s, y + 1, x] + dog[s, y - 1, x] - 2 * value
  dxx = dog[s, y, x + 1] + dog[s, y, x - 1] - 2 * value
  dss = dog[s + 1, y, x] + dog[s - 1, y, x] - 2 * value
  dxy = (
      dog[s, y + 1, x + 1]
      - dog[s, y + 1, x - 1]
      - dog[s, y - 1, x + 1]
      + dog[s, y - 1, x - 1]
  ) / 4
  trace, determinant = dxx + dyy, dxx * dyy - dxy**2
  blob = (determinant > 0) & (
      trace**2 * _EDGE_RATIO < (_EDGE_RATIO + 1) ** 2 * determinant
  )
  row = y + _vertex((dog[s, y + 1, x] - dog[s, y - 1, x]) / 2, dyy)
  column = x + _vertex((dog[s, y, x + 1] - dog[s, y, x - 1]) / 2, dxx)
  sigma = _SIGMA0 * _STEP ** (
      s + _vertex((dog[s + 1, y, x] - dog[s - 1, y, x]) / 2, dss)
  )
  half = GRID * _CELL_SIGMAS * sigma / 2
  fits = (
      (row >= half)
      & (column >= half)
      & (row + half <= height - 1)
      & (column + half <= width - 1)
  )
  keep = blob & fits
  return np.stack(
      [row[keep], column[keep], sigma[keep], np.abs(value[keep])], axis=1
  ).astype(np.float32)


def _vertex(slope: np.ndarray, curvature: np.ndarray) -> np.ndarray:
  """Offset of a parabola's vertex from the middle sample, within half a pixel."""
  safe = np.where(curvature == 0, 1e-9, curvature)
  return np.clip(-slope / safe, -0.5, 0.5)


def _describe(blurred: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Upright SIFT-style descriptors of `points` in their own blur level:
  float32 [n, DESCRIPTOR_SIZE]."""
  count = len(points)
  row, column, sigma = points[:, 0], points[:, 1], points[:, 2]
  level = np.clip(
      np.rint(np.log(sigma / _SIGMA0) / np.log(_STEP)).astype(np.int32),
      0,
      len(_SIGMAS) - 1,
  )
  span = GRID * _CELL_SIGMAS * sigma
  _, height, width = blurred.shape
  rows = np.rint(
      row[:, None, None] + _OFFSETS[None, :, None] * span[:, None, None]
  )
  columns = np.rint(
      column[:, None, None] + _OFFSETS[None, None, :] * span[:, None, None]
  )
  # Samples lie inside the image with a pixel to spare (`_blobs`).
  rows, columns = np.broadcast_arrays(
      np.clip(rows, 1, height - 2).astype(np.int32),
      np.clip(columns, 1, width - 2).astype(np.int32),
  )
  level = np.broadcast_to(level[:, None, None], rows.shape)
  dy = blurred[level, rows + 1, columns] - blurred[level, rows - 1, columns]
  dx = blurred[level, rows, columns + 1] - blurred[level, rows, columns - 1]
  magnitude = (np.hypot(dy, dx) * _WEIGHTS).reshape(count, -1)
  direction = (
      np.arctan2(dy, dx).reshape(count, -1) / (2 * np.pi) * BINS
  ) % BINS
  low = direction.astype(np.int32)
  share = direction - low
  cell = (np.arange(count)[:, None] * GRID * GRID + _CELL_OF_SAMPLE) * BINS
  size = count * DESCRIPTOR_SIZE
  histogram = np.bincount(
      (cell + low).ravel(), (magnitude * (1 - share)).ravel(), size
  ) + np.bincount(
      (cell + (low + 1) % BINS).ravel(), (magnitude * share).ravel(), size
  )
  histogram = histogram.reshape(count, DESCRIPTOR_SIZE)
  histogram = np.minimum(_unit(histogram), _CLIP)
  return _unit(histogram).astype(np.float32)


def _unit(vectors: np.ndarray) -> np.ndarray:
  return vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9)


def mirrored(found: Features, horizontal: bool, vertical: bool) -> Features:
  """The features `found` would have in the image flipped left-right and/or
  top-bottom, by moving each descriptor's cells and directions (cheaper
  than finding them again, and as exact up to rounding)."""
  cells = np.arange(GRID)
  row_cells = cells[::-1] if vertical else cells
  column_cells = cells[::-1] if horizontal else cells
  bins = np.arange(BINS)
  if horizontal:  # A direction's column part changes sign: t -> pi - t.
    bins = (BINS // 2 - bins) % BINS
  if vertical:  # Its row part changes sign: t -> -t.
    bins = (-bins) % BINS
  order = (
      (row_cells[:, None, None] * GRID + column_cells[None, :, None]) * BINS
      + bins[None, None, :]
  ).ravel()
  points = found.points.copy()
  last_row, last_column = found.extent
  if vertical:
    points[:, 0] = last_row - points[:, 0]
  if horizontal:
    points[:, 1] = last_column - points[:, 1]
  return Features(points, found.descriptors[:, order], found.extent)
