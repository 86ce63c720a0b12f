"""roadtex: the built-in synthetic road-surface data set.

Procedural 240x360 (H x W) colour frames of three dry road surfaces, as seen by
a forward-looking vehicle camera:

* `dry_asphalt_smooth`: a dark bitumen matrix with fine aggregate chips (a few
  bright quartz specks, a few dark pores), sometimes lane paint or tyre marks;
* `dry_concrete_smooth`: a smoother, lighter-on-average slab with a brushed
  (tined) finish, mottling, slab joints and hairline cracks;
* `dry_gravel`: loose stones of many sizes and shades, lit from one side and
  casting shadows onto the stones beneath.

Each class is defined by its texture, not its colour. Everything else -- the
surface albedo range, camera height and tilt (texture shrinks toward the
horizon), roll and yaw, sky or verge at the top, sun and sky light, cast
shadow bands, haze, auto-exposure, white balance, tone curve, lens blur and
sensor noise -- is drawn from one distribution shared by all classes, so that
global colour and brightness statistics barely separate them.

Frames are written once, on first use, as an ordinary image-folder tree
`ROOT/{train,val,test}/CLASS/NNNNNN.jpg`, so they go through the same reader as
real data. Each image is rendered from its own random generator seeded with
(seed, split, class, index): the files do not depend on generation order or
on how many worker processes made them.
"""

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image
import tqdm

from roadflax.errors import UserError

CLASS_NAMES: tuple[str, ...] = ("dry_asphalt_smooth", "dry_concrete_smooth", "dry_gravel")
IMAGE_HEIGHT, IMAGE_WIDTH = 240, 360
SPLITS = ("train", "val", "test")

_VERSION = 1  # bump whenever the rendered images change, to invalidate caches
_MARKER = "roadtex.json"
_JPEG_QUALITY = 90
_CHUNK = 25  # images per worker task
_LATTICE = 64  # period of the value-noise lattices, in cells (a power of two)


# ----------------------------------------------------------------------------
# Geometry: where each pixel lands on the ground plane.


@dataclasses.dataclass(frozen=True)
class _View:
  """Ground-plane coordinates of every pixel, for one camera pose.

  Ground units ("texture units") are pixels of the bottom row of a 240-row
  frame at unit zoom, so texture sizes below read as pixels near the bottom.
  """
  x: np.ndarray  # HxW, across the road
  z: np.ndarray  # HxW, along the road (away from the camera)
  foot: np.ndarray  # HxW, ground units covered by one pixel along z
  sky: np.ndarray  # HxW in [0, 1]: 1 above the horizon, soft at the edge


def _sample_view(rng: np.random.Generator, height: int, width: int) -> _View:
  """A random pinhole camera over a flat road.

  With the horizon at row `v_h` (above the frame, or in it for frames with a
  sliver of sky), a ground point's distance is proportional to 1 / (v - v_h):
  across the road the texture scales with (v - v_h), along it with its square
  (foreshortening), so far texture is both smaller and flatter.
  """
  roll = rng.uniform(-0.06, 0.06)
  yaw = rng.uniform(-0.15, 0.15)
  zoom = np.exp(rng.uniform(np.log(0.75), np.log(1.3))) * height / IMAGE_HEIGHT
  if rng.random() < 0.25:  # horizon in the frame: a band of sky at the top
    v_h = rng.uniform(0.03, 0.13) * height
  else:  # looking down: texture at the top is 40% to 90% of its bottom size
    top_scale = rng.uniform(0.4, 0.9)
    v_h = -top_scale * height / (1.0 - top_scale)
  cy, cx = height / 2.0, width / 2.0
  v = np.arange(height, dtype=np.float32)[:, None] + 0.5 - cy
  u = np.arange(width, dtype=np.float32)[None, :] + 0.5 - cx
  v_rot = cy + v * np.cos(roll) + u * np.sin(roll)
  u_rot = u * np.cos(roll) - v * np.sin(roll)
  span = height - v_h  # bottom row to horizon
  above = v_rot - v_h
  sky = np.clip(1.0 - above / 1.5, 0.0, 1.0).astype(np.float32)
  depth = span / np.maximum(above, 0.02 * span)  # 1 at the bottom row
  x = u_rot * depth / zoom
  z = span * depth / zoom
  x, z = x * np.cos(yaw) - z * np.sin(yaw), x * np.sin(yaw) + z * np.cos(yaw)
  return _View(x=x.astype(np.float32), z=z.astype(np.float32),
               foot=(depth * depth / zoom).astype(np.float32), sky=sky)


def _fade(view: _View, size: float) -> np.ndarray:
  """How visible a detail of `size` ground units is at each pixel (0..1).

  Details under about a pixel would alias into noise; a camera averages them
  away instead, so their contrast fades out as they shrink toward the horizon.
  """
  return np.clip((size / view.foot - 1.0) * 0.5, 0.0, 1.0)


# ----------------------------------------------------------------------------
# Procedural primitives, evaluated at each pixel's ground coordinates.


def _value_noise(rng: np.random.Generator, view: _View, wavelength: float,
                 channels: int = 1, stretch: float = 1.0) -> np.ndarray:
  """Smooth value noise in [0, 1], channels x H x W, one lattice cell per `wavelength`.

  `stretch` > 1 elongates the features across the road (a brushed finish).
  Each lattice point stores its cell's four corners, so one gather per pixel
  fetches everything the interpolation needs (a fancy-indexed gather is the
  expensive part).
  """
  n = _LATTICE
  values = rng.random((n, n, channels), dtype=np.float32)
  corners = np.concatenate(
      [values, np.roll(values, -1, 1), np.roll(values, -1, 0),
       np.roll(values, (-1, -1), (0, 1))], axis=2).reshape(n * n, 4 * channels)
  a = view.x / (wavelength * stretch) + rng.uniform(0, n)
  b = view.z / wavelength + rng.uniform(0, n)
  ia, ib = np.floor(a), np.floor(b)
  fa, fb = a - ia, b - ib
  index = (ib.astype(np.int32) & (n - 1)) * n + (ia.astype(np.int32) & (n - 1))
  # Strided views, not a transposed copy: numpy's transpose is slow here.
  c = np.moveaxis(np.take(corners, index, axis=0).reshape(*a.shape, 4, channels), (2, 3), (0, 1))
  sa, sb = fa * fa * (3 - 2 * fa), fb * fb * (3 - 2 * fb)
  top = c[0] + (c[1] - c[0]) * sa
  bottom = c[2] + (c[3] - c[2]) * sa
  return top + (bottom - top) * sb


def _grain(rng: np.random.Generator, view: _View, amplitude: float, size: float) -> np.ndarray:
  """Per-pixel grain (zero mean) for details of about `size` ground units or less.

  Drawn in screen space (cheap): what matters at this scale is only that its
  contrast falls off with distance like that of real sub-pixel texture.
  """
  noise = rng.random(view.x.shape, dtype=np.float32) - 0.5
  return noise * (amplitude * 2.0) * np.minimum(1.0, size / view.foot)


@dataclasses.dataclass(frozen=True)
class _Stones:
  """One layer of stones on a jittered grid; all fields HxW."""
  inside: np.ndarray  # bool: the pixel shows a stone of this layer
  shadow: np.ndarray  # bool: outside, but in the shadow of this cell's stone
  lit: np.ndarray  # Lambert shading of the stone's dome (0..1)
  tone: np.ndarray  # the stone's own albedo factor
  tint: np.ndarray  # the stone's own red-blue colour shift
  fade: np.ndarray  # visibility of stones this size (see `_fade`)


def _stones(rng: np.random.Generator, view: _View, cell: float, fill: float,
            tone: np.ndarray, light: np.ndarray, wobble: np.ndarray,
            radius: tuple[float, float] = (0.3, 0.5)) -> _Stones:
  """Elliptical stones, at most one per `cell`-sized ground cell.

  Each stone lies wholly inside its cell, so a pixel only has to look at its
  own cell: one gather, whatever the number of stones. Layers of different
  cell sizes, drawn over one another, hide the grid. `tone` holds candidate
  albedo factors (one is drawn per stone), `light` the unit light direction
  (across, along, up) and `wobble` (HxW, about -0.5..0.5) roughens outlines.
  """
  n = _LATTICE
  count = n * n
  r = rng.uniform(*radius, count).astype(np.float32)
  aspect = rng.uniform(0.55, 1.0, count).astype(np.float32)
  angle = rng.uniform(0, np.pi, count).astype(np.float32)
  table = np.stack([
      rng.uniform(r, 1 - r),  # centre across, in cell units
      rng.uniform(r, 1 - r),  # centre along
      1 / r,
      1 / (r * aspect),
      np.cos(angle),
      np.sin(angle),
      np.where(rng.random(count) < fill, 1.0, 0.0),
      rng.choice(tone, count),
      rng.normal(0, 0.08, count),
  ], axis=1).astype(np.float32)
  a = view.x / cell + rng.uniform(0, n)
  b = view.z / cell + rng.uniform(0, n)
  ia, ib = np.floor(a), np.floor(b)
  index = (ib.astype(np.int32) & (n - 1)) * n + (ia.astype(np.int32) & (n - 1))
  cx, cz, inv_major, inv_minor, cos, sin, present, stone_tone, tint = (
      np.moveaxis(np.take(table, index, axis=0), 2, 0))
  dx, dz = a - ia - cx, b - ib - cz
  p = (dx * cos + dz * sin) * inv_major
  q = (dz * cos - dx * sin) * inv_minor
  d2 = p * p + q * q + wobble
  inside = (d2 < 1.0) & (present > 0)
  # Shadow: the stone's outline shifted away from the light.
  shift = 0.6 / inv_major
  sx, sz = dx + light[0] * shift, dz + light[1] * shift
  ps = (sx * cos + sz * sin) * inv_major
  qs = (sz * cos - sx * sin) * inv_major
  shadow = ~inside & (present > 0) & (ps * ps + qs * qs + wobble < 1.0)
  # Lambert shading of a dome: normal ~ (dx/r, dz/r, height).
  height = np.sqrt(np.maximum(1.0 - d2, 0.0))
  nx, nz = dx * inv_major, dz * inv_major
  lit = (nx * light[0] + nz * light[1] + height * light[2]) / np.sqrt(nx * nx + nz * nz + height * height + 1e-6)
  return _Stones(inside=inside, shadow=shadow, lit=np.clip(lit, 0.0, 1.0),
                 tone=stone_tone, tint=tint, fade=_fade(view, cell))


def _stripe(distance: np.ndarray, width: float, foot: np.ndarray) -> np.ndarray:
  """Profile (0..1) of a line `width` ground units wide at `distance` from its axis.

  Blurred by the pixel footprint and dimmed to keep its total darkness when
  narrower than a pixel, as a camera would see it.
  """
  sigma = np.sqrt((0.5 * width) ** 2 + (0.5 * foot) ** 2)
  return np.exp(-0.5 * (distance / sigma) ** 2) * (0.5 * width / sigma)


def _periodic_distance(coordinate: np.ndarray, period: float, offset: float) -> np.ndarray:
  """Distance to the nearest of lines repeating every `period` units."""
  t = np.mod(coordinate - offset, period)
  return np.minimum(t, period - t)


# ----------------------------------------------------------------------------
# The three surfaces. Each returns an RGB albedo, 3 x H x W, given the image's
# base albedo `base` (3,) drawn from the same distribution for every class.


def _asphalt(rng: np.random.Generator, view: _View, base: np.ndarray,
             light: np.ndarray) -> np.ndarray:
  """Dark bitumen with fine aggregate chips and speckle; paint or tyre marks."""
  mottle = _value_noise(rng, view, rng.uniform(40, 120), channels=2)
  wobble = (mottle[1] - 0.5) * 0.4
  # Chip tones: mostly grey aggregate, some bright quartz, some dark pores.
  chip_tones = np.concatenate([rng.uniform(0.9, 1.6, 40), rng.uniform(2.2, 3.2, 3),
                               rng.uniform(0.35, 0.5, 4)])
  chips = _stones(rng, view, rng.uniform(4.0, 5.5), 0.85, chip_tones, light, wobble,
                  radius=(0.28, 0.45))
  matrix = 0.7 * (1.0 + 0.25 * (mottle[0] - 0.5))
  chip = chips.tone * (0.75 + 0.35 * chips.lit)
  lum = np.where(chips.inside, chip, np.where(chips.shadow, matrix * 0.8, matrix))
  lum = matrix + (lum - matrix) * chips.fade
  lum = lum + _grain(rng, view, 0.12, 2.0)
  # Tyre marks: darker, polished bands in the two wheel paths.
  if rng.random() < 0.35:
    centre, gauge, width = rng.uniform(-60, 60), rng.uniform(70, 100), rng.uniform(12, 25)
    for path in (centre - gauge, centre + gauge):
      lum = lum * (1.0 - rng.uniform(0.15, 0.35) * _stripe(view.x - path, width, view.foot))
  albedo = lum * base[:, None, None]
  # Lane paint: a worn white or yellow line, solid or dashed.
  if rng.random() < 0.25:
    colour = np.array([0.75, 0.75, 0.72] if rng.random() < 0.7 else [0.75, 0.6, 0.2], np.float32)
    colour = colour * rng.uniform(0.5, 1.0)
    cover = _stripe(view.x - rng.uniform(-150, 150), rng.uniform(10, 22), view.foot / 2)
    cover = np.clip(cover * 3.0 - 1.0, 0.0, 1.0) * np.clip(mottle[1] * 3.0 - 0.4, 0.0, 1.0)
    if rng.random() < 0.5:
      period = rng.uniform(250, 400)
      cover = cover * (_periodic_distance(view.z, period, rng.uniform(0, period)) < period / 4)
    albedo = albedo + (colour[:, None, None] - albedo) * cover
  return albedo


def _concrete(rng: np.random.Generator, view: _View, base: np.ndarray,
              light: np.ndarray) -> np.ndarray:
  """Smooth mottled slabs: brushed finish, joints, hairline cracks."""
  del light  # the surface is flat: nothing to shade
  broad = _value_noise(rng, view, rng.uniform(50, 110), channels=3)
  fine = _value_noise(rng, view, rng.uniform(10, 16), channels=2)
  brushed = _value_noise(rng, view, rng.uniform(2.5, 4.0), stretch=rng.uniform(8, 20))[0]
  lum = (1.0 + 0.3 * (broad[0] - 0.5) + 0.12 * (fine[0] - 0.5)
         + 0.2 * (brushed - 0.5) * _fade(view, 3.0))
  # Slabs: each one a slightly different shade, with dark sealed joints.
  length, lane = rng.uniform(150, 280), rng.uniform(220, 380)
  z0, x0 = rng.uniform(0, length), rng.uniform(0, lane)
  shades = rng.uniform(0.92, 1.08, 64).astype(np.float32)
  slab = (np.floor((view.z - z0) / length).astype(np.int32) * 7
          + np.floor((view.x - x0) / lane).astype(np.int32)) & 63
  lum = lum * np.take(shades, slab)
  depth = rng.uniform(0.45, 0.75)
  joints = _stripe(_periodic_distance(view.z, length, z0), rng.uniform(1.5, 3.0), view.foot)
  if rng.random() < 0.6:
    joints = np.maximum(joints, _stripe(_periodic_distance(view.x, lane, x0),
                                        rng.uniform(1.5, 3.0), view.foot / 2))
  lum = lum * (1.0 - depth * joints)
  # Hairline cracks: iso-lines of roughened noise, shown only in some patches.
  if rng.random() < 0.75:
    field = broad[1] + 0.25 * (fine[1] - 0.5)
    crack = np.exp(-(((field - 0.5) / 0.012) ** 2)) * (broad[2] > rng.uniform(0.35, 0.6))
    lum = lum * (1.0 - rng.uniform(0.3, 0.6) * crack * _fade(view, 6.0))
  lum = lum + _grain(rng, view, 0.05, 1.0)
  return lum * base[:, None, None]


def _gravel(rng: np.random.Generator, view: _View, base: np.ndarray,
            light: np.ndarray) -> np.ndarray:
  """Loose stones of many sizes and shades over a bed of fines, with shadows."""
  bed_noise = _value_noise(rng, view, rng.uniform(6, 12), channels=2)
  wobble = (bed_noise[1] - 0.5) * 0.5
  bed = 0.45 * (1.0 + 0.4 * (bed_noise[0] - 0.5))
  lum = bed + _grain(rng, view, 0.15, 2.0)
  tint = np.zeros_like(lum)
  spread = rng.uniform(0.2, 0.45)  # how varied the stones' shades are
  tones = np.exp(rng.normal(0, spread, 64))
  scale = rng.uniform(0.8, 1.25)
  for cell, fill in ((5.0, 0.9), (9.0, 0.8), (16.0, 0.7)):
    stones = _stones(rng, view, cell * scale, fill, tones, light, wobble)
    shaded = stones.tone * (0.35 + 0.85 * stones.lit)
    layer = np.where(stones.inside, shaded, np.where(stones.shadow, lum * 0.45, lum))
    lum = lum + (layer - lum) * stones.fade
    tint = np.where(stones.inside, stones.tint, tint)
  albedo = lum * base[:, None, None]
  albedo[0] *= 1.0 + tint
  albedo[2] *= 1.0 - tint
  return albedo


_TEXTURES = (_asphalt, _concrete, _gravel)


# ----------------------------------------------------------------------------
# Light and camera: shared by all classes.


def _sun_direction(rng: np.random.Generator) -> np.ndarray:
  """Unit vector toward the sun: (across, along, up)."""
  azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 1.1)
  return np.array([np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation),
                   np.sin(elevation)], np.float32)


def _sun_visibility(rng: np.random.Generator, view: _View) -> np.ndarray:
  """1 in sunlight, 0 in shade: maybe a soft shadow band cast across the road."""
  visibility = np.ones_like(view.x)
  if rng.random() < 0.5:
    angle = rng.uniform(0, np.pi)
    along = view.x * np.cos(angle) + view.z * np.sin(angle)
    edge = _value_noise(rng, view, rng.uniform(30, 80))[0]
    along = along + (edge - 0.5) * rng.uniform(0, 60)
    centre = np.percentile(along[::8, ::8], rng.uniform(10, 90))
    half_width = rng.uniform(30, 250)
    softness = rng.uniform(2, 25)
    inside = np.clip((half_width - np.abs(along - centre)) / softness + 0.5, 0.0, 1.0)
    visibility = 1.0 - inside * rng.uniform(0.7, 1.0)
  return visibility


def _white_balance(rng: np.random.Generator) -> np.ndarray:
  """Per-channel gains of an imperfect white balance (warm or cool, some tint)."""
  temperature, tint = rng.normal(0, 0.12), rng.normal(0, 0.04)
  return np.exp(np.array([temperature, tint, -temperature], np.float32))


def _sky(rng: np.random.Generator, view: _View) -> np.ndarray:
  """Radiance (3 x H x W) of what lies above the horizon: sky, or a verge."""
  rows = np.linspace(0, 1, view.x.shape[0], dtype=np.float32)[None, :, None]
  if rng.random() < 0.5:  # overcast or blue sky, brighter than the road
    colour = np.array([0.75, 0.85, 1.0], np.float32) * rng.uniform(1.5, 4.0)
    return np.broadcast_to(colour[:, None, None] * (1.0 - 0.3 * rows), (3,) + view.x.shape)
  foliage = _value_noise(rng, view, 1.0, channels=1)[0]  # vegetation, distant
  colour = np.array([rng.uniform(0.15, 0.35), rng.uniform(0.25, 0.4), 0.12], np.float32)
  return colour[:, None, None] * (0.6 + 0.8 * foliage)


def _tone_curve(rng: np.random.Generator) -> np.ndarray:
  """uint8 lookup table from linear [0, 1] (4096 steps): gamma and an S-curve."""
  x = np.linspace(0, 1, 4096)
  y = x ** (1 / rng.uniform(1.9, 2.5))
  contrast = rng.uniform(-0.4, 0.8)
  y = y + contrast * y * (1 - y) * (y - 0.5) * 2
  return np.clip(np.round(y * 255), 0, 255).astype(np.uint8)


def _blur(image: np.ndarray, passes: int) -> np.ndarray:
  """Lens blur: `passes` rounds of a separable [1, 2, 1] / 4 filter (sigma ~0.7 each)."""
  for _ in range(passes):
    y = image * 0.5
    y[:, 1:] += image[:, :-1] * 0.25
    y[:, :-1] += image[:, 1:] * 0.25
    image = y * 0.5
    image[:, :, 1:] += y[:, :, :-1] * 0.25
    image[:, :, :-1] += y[:, :, 1:] * 0.25
  return image


def render_frame(class_id: int, rng: np.random.Generator, height: int = IMAGE_HEIGHT,
                 width: int = IMAGE_WIDTH) -> np.ndarray:
  """One uint8 HxWx3 frame of class `class_id` (an index into CLASS_NAMES).

  Consumes `rng`; the same generator state always gives the same frame.
  """
  view = _sample_view(rng, height, width)
  sun = _sun_direction(rng)
  # Base albedo: one wide, shared range for all classes (a grey with a warm or
  # cool cast); each texture sets its own contrast around it.
  base = rng.uniform(0.12, 0.5) * np.exp(np.array([1, 0, -1], np.float32) * rng.uniform(-0.04, 0.1))
  albedo = _TEXTURES[class_id](rng, view, base.astype(np.float32), sun)
  # Texture contrast varies per image too, so a class's spread of grey levels
  # is no more telling than its mean.
  mean = albedo.mean(axis=(1, 2), keepdims=True)
  albedo = np.maximum(mean + (albedo - mean) * np.exp(rng.uniform(-0.5, 0.35)), 0.0)
  sun_colour = np.array([1.0, 0.95, 0.85], np.float32) * rng.uniform(0.0, 2.5) * sun[2]
  sky_colour = np.array([0.75, 0.85, 1.0], np.float32) * rng.uniform(0.25, 0.6)
  irradiance = (sun_colour[:, None, None] * _sun_visibility(rng, view)
                + sky_colour[:, None, None])
  radiance = albedo * irradiance
  # Uneven light and lens vignetting: a linear ramp times a radial falloff.
  v = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
  u = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
  ramp_u, ramp_v = rng.uniform(-0.3, 0.3, 2)
  radiance *= (1.0 + ramp_u * u + ramp_v * v) * (1.0 - rng.uniform(0, 0.35) * (u * u + v * v) / 2)
  haze = rng.uniform(0.0, 0.5) * (1.0 - np.minimum(1.0, 2.0 / view.foot))
  radiance = radiance + (sky_colour[:, None, None] * 1.5 - radiance) * haze
  if view.sky.any():
    radiance = radiance + (_sky(rng, view) - radiance) * view.sky
  # Auto-exposure (only partly successful) toward a random grey level.
  target = rng.uniform(0.1, 0.35)
  gain = (target / radiance.mean()) ** rng.uniform(0.6, 1.0)
  image = radiance * (gain * _white_balance(rng))[:, None, None]
  image = _blur(image, rng.integers(0, 3))
  image = image + (rng.random((height, width), dtype=np.float32) - 0.5) * rng.uniform(0.0, 0.03)
  codes = (np.clip(image, 0.0, 1.0) * 4095).astype(np.int16)
  return np.ascontiguousarray(np.take(_tone_curve(rng), codes).transpose(1, 2, 0))


# ----------------------------------------------------------------------------
# The cached image-folder tree.


def default_cache_dir() -> str:
  """$XDG_CACHE_HOME/roadflax, else ~/.cache/roadflax."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "roadflax")


def _image_rng(seed: int, split: str, class_id: int, index: int) -> np.random.Generator:
  """The generator of one image, independent of every other image's."""
  return np.random.default_rng([seed, SPLITS.index(split), class_id, index])


def _render_chunk(root: str, seed: int, split: str, class_id: int, start: int, stop: int) -> int:
  """Renders and writes images start..stop-1 of one class and split; returns the count."""
  folder = os.path.join(root, split, CLASS_NAMES[class_id])
  for index in range(start, stop):
    frame = render_frame(class_id, _image_rng(seed, split, class_id, index))
    Image.fromarray(frame).save(os.path.join(folder, f"{index:06d}.jpg"), quality=_JPEG_QUALITY)
  return stop - start


def _read_marker(root: str) -> dict | None:
  try:
    with open(os.path.join(root, _MARKER)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _workers(total: int) -> int:
  """Worker processes: none for small sets (starting one costs ~1 s), else all cores."""
  if total < 300:
    return 0
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return max(1, cores or 1)


def _generate(root: str, counts: dict[str, int], seed: int, progress: bool) -> None:
  """Writes every image of the tree under `root` (which exists)."""
  tasks = []
  for split in SPLITS:
    for class_id, name in enumerate(CLASS_NAMES):
      os.makedirs(os.path.join(root, split, name))
      for start in range(0, counts[split], _CHUNK):
        tasks.append((root, seed, split, class_id, start, min(start + _CHUNK, counts[split])))
  total = sum(stop - start for *_, start, stop in tasks)
  workers = _workers(total)
  with tqdm.tqdm(total=total, desc="roadtex", unit="img", file=sys.stderr,
                 disable=not progress) as bar:
    if not workers:
      for task in tasks:
        bar.update(_render_chunk(*task))
      return
    # "spawn": the parent may hold JAX's threads, which forking would copy.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
      futures = [pool.submit(_render_chunk, *task) for task in tasks]
      try:
        for future in concurrent.futures.as_completed(futures):
          bar.update(future.result())
      except BaseException:
        for future in futures:
          future.cancel()
        raise


def ensure_generated(*, train_per_class: int, val_per_class: int, test_per_class: int,
                     seed: int = 0, cache_dir: str = "", progress: bool = True) -> str:
  """Returns the root of the generated tree (generating it first if needed).

  The root, `CACHE/roadtex-v{version}-s{seed}-{train}-{val}-{test}`, is complete
  exactly when it exists: images are written to a temporary sibling that is
  renamed into place only once finished, with a `roadtex.json` marker holding
  the parameters. An interrupted run leaves at most a stray temporary folder.
  """
  counts = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
  for split, count in counts.items():
    if not isinstance(count, int) or count < 1:
      raise UserError(f"data.synthetic.{split}_per_class must be a positive integer, got {count!r}")
  cache_dir = cache_dir or default_cache_dir()
  name = f"roadtex-v{_VERSION}-s{seed}-{train_per_class}-{val_per_class}-{test_per_class}"
  root = os.path.join(cache_dir, name)
  marker = {"version": _VERSION, "seed": seed, "classes": list(CLASS_NAMES),
            "image_size": [IMAGE_HEIGHT, IMAGE_WIDTH], "per_class": counts}
  if _read_marker(root) == marker:
    return root
  os.makedirs(cache_dir, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache_dir)
  try:
    _generate(staging, counts, seed, progress)
    with open(os.path.join(staging, _MARKER), "w") as f:
      json.dump(marker, f, indent=2)
    if os.path.exists(root):
      if _read_marker(root) == marker:  # another process finished first
        return root
      shutil.rmtree(root)  # not ours, or incomplete: a leftover under our name
    os.replace(staging, root)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return root
