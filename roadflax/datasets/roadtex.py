"""roadtex: the built-in synthetic road-surface data set.

Procedural 240x360 camera frames of three surfaces — `dry_asphalt_smooth`
(dark fine aggregate, bitumen speckle, now and then lane paint or tyre
marks), `dry_concrete_smooth` (smoother, brushed, slab joints and hairline
cracks) and `dry_gravel` (loose stones of many sizes and shades, shadowed
gaps). Each texture is drawn on the ground plane and seen through a
forward-looking camera, so it shrinks toward the horizon.

What must not give the class away is shared: every texture is scaled to a
contrast drawn from one distribution and laid on a base shade drawn from one
distribution, and then light (exposure, white balance, cast shadows,
vignetting), perspective and blur vary the same way for every class. Colour
and brightness statistics therefore overlap; texture is what separates the
classes.

The set is generated once into an ordinary image-folder tree,
`ROOT/{train,val,test}/CLASS/NNNNNN.jpg`, read by the same code as real data.
Every image has its own random stream seeded by (seed, split, class, index),
so the files do not depend on generation order or on the number of workers.
"""

import concurrent.futures
import multiprocessing
import os
import shutil
import tempfile

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from roadflax import files
from roadflax.data.contract import SPLIT_NAMES

CLASS_NAMES: tuple[str, ...] = (
    "dry_asphalt_smooth",
    "dry_concrete_smooth",
    "dry_gravel",
)
IMAGE_HEIGHT, IMAGE_WIDTH = 240, 360
VERSION = 1
_MARKER = "roadtex.json"


def _value_noise(
    u: np.ndarray, v: np.ndarray, rng: np.random.Generator, cell: float
) -> np.ndarray:
  """Smooth noise in [-1, 1] on the ground plane with feature size `cell`."""
  gu, gv = u / cell, v / cell
  u0, v0 = np.floor(gu), np.floor(gv)
  fu, fv = gu - u0, gv - v0
  fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)  # smoothstep
  size = 129
  table = rng.uniform(-1, 1, (size, size)).astype(np.float32)
  i0 = u0.astype(np.int64) % (size - 1)
  j0 = v0.astype(np.int64) % (size - 1)
  a, b = table[i0, j0], table[i0 + 1, j0]
  c, d = table[i0, j0 + 1], table[i0 + 1, j0 + 1]
  return (a * (1 - fu) + b * fu) * (1 - fv) + (c * (1 - fu) + d * fu) * fv


def _fractal(u, v, rng, cell, octaves=3, gain=0.5) -> np.ndarray:
  total, amplitude = 0.0, 1.0
  for _ in range(octaves):
    total = total + amplitude * _value_noise(u, v, rng, cell)
    cell, amplitude = cell / 2, amplitude * gain
  return total


def _asphalt(u, v, rng) -> np.ndarray:
  grain = _value_noise(u, v, rng, rng.uniform(0.6, 1.0))
  fine = _value_noise(u, v, rng, rng.uniform(0.25, 0.4))
  speckle = (_value_noise(u, v, rng, rng.uniform(0.5, 0.8)) > 0.75) * 1.5
  texture = (
      0.8 * grain + 0.6 * fine + speckle + 0.3 * _value_noise(u, v, rng, 30.0)
  )
  mark = rng.uniform()
  if mark < 0.25:  # a painted lane line, running away from the camera
    centre, width = rng.uniform(-150, 150), rng.uniform(10, 15)
    texture = np.where(np.abs(u - centre) < width, texture + 3.0, texture)
  elif mark < 0.5:  # darker tyre tracks
    centre = rng.uniform(-100, 100)
    texture = texture - 1.0 * np.exp(-(((u - centre) / 25.0) ** 2))
  return texture


def _concrete(u, v, rng) -> np.ndarray:
  texture = 0.25 * _fractal(u, v, rng, rng.uniform(20, 40))
  # Brushed finish: fine, slightly wavy grooves across the direction of travel.
  period = rng.uniform(1.0, 1.8)
  wobble = 0.5 * _value_noise(u, v, rng, 60.0)
  texture = texture + 0.12 * np.sin(2 * np.pi * v / period + wobble)
  slab, lane = rng.uniform(300, 450), rng.uniform(300, 400)
  offset_v, offset_u = rng.uniform(0, slab), rng.uniform(0, lane)
  joints = (np.abs(((v + offset_v) % slab) - slab / 2) > slab / 2 - 1.5) | (
      np.abs(((u + offset_u) % lane) - lane / 2) > lane / 2 - 1.5
  )
  texture = np.where(joints, texture - 3.0, texture)
  cracks = np.abs(
      _fractal(u, v, rng, rng.uniform(40, 80), octaves=3)
  ) < rng.uniform(0.004, 0.012)
  return np.where(cracks, texture - 1.5, texture)


def _gravel(u, v, rng) -> np.ndarray:
  cell = rng.uniform(2.5, 4.5)
  gu, gv = u / cell, v / cell
  iu, iv = np.floor(gu).astype(np.int64), np.floor(gv).astype(np.int64)
  size = 192
  centres = rng.uniform(0.15, 0.85, (size, size, 2)).astype(np.float32)
  radii = rng.uniform(0.35, 0.75, (size, size)).astype(np.float32)
  shades = rng.normal(0, 1.0, (size, size)).astype(np.float32)
  best = np.full(u.shape, np.inf, np.float32)
  shade = np.zeros(u.shape, np.float32)
  dome = np.zeros(u.shape, np.float32)
  for du in (-1, 0, 1):
    for dv in (-1, 0, 1):
      cu, cv = (iu + du) % size, (iv + dv) % size
      pu = iu + du + centres[cu, cv, 0]
      pv = iv + dv + centres[cu, cv, 1]
      distance = np.hypot(gu - pu, gv - pv) / radii[cu, cv]
      closer = distance < best
      best = np.where(closer, distance, best)
      shade = np.where(closer, shades[cu, cv], shade)
      # Light from the top of the frame: the far side of each stone is lit.
      dome = np.where(closer, (pv - gv) / radii[cu, cv], dome)
  inside = best < 1.0
  texture = np.where(
      inside, shade + 0.8 * dome * np.sqrt(np.clip(1 - best, 0, 1)), -2.5
  )
  return texture + 0.3 * _value_noise(u, v, rng, 0.5)


_TEXTURES = (_asphalt, _concrete, _gravel)


def render_frame(
    class_id: int,
    rng: np.random.Generator,
    height: int = IMAGE_HEIGHT,
    width: int = IMAGE_WIDTH,
) -> np.ndarray:
  """One uint8 HxWx3 frame of class `class_id`."""
  # Camera: the horizon sits above or near the top of the frame.
  horizon = rng.uniform(-0.6, 0.15) * height
  focal = rng.uniform(0.9, 1.3) * width
  camera_height = rng.uniform(110.0, 160.0)  # cm
  tilt = rng.uniform(-0.08, 0.08)  # roll of the camera
  rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
  x = cols - width / 2
  y = rows - horizon + tilt * x
  below = np.maximum(y, 1.0)
  depth = camera_height * focal / below
  u = x * depth / focal + rng.uniform(-500, 500)
  v = depth + rng.uniform(0, 5000)
  texture = _TEXTURES[class_id](u, v, rng)
  # Distance haze: texture fades into the mean far away (same for all classes).
  texture = texture * np.exp(-depth / rng.uniform(3000, 8000))
  texture = (texture - texture.mean()) / (texture.std() + 1e-6)

  contrast = rng.uniform(0.05, 0.16)
  base = rng.uniform(0.25, 0.6)
  tint = rng.normal(0, 0.012, 3)
  grey = base + contrast * texture
  image = grey[..., None] + tint
  image = image * rng.uniform(0.93, 1.07, 3)  # white balance
  # A cast shadow (pole, tree, vehicle) with a soft edge, on half the frames.
  if rng.uniform() < 0.5:
    angle = rng.uniform(0, np.pi)
    edge = np.cos(angle) * cols + np.sin(angle) * rows - rng.uniform(0, width)
    softness = rng.uniform(3, 25)
    image = (
        image
        * (1 - rng.uniform(0.3, 0.6) / (1 + np.exp(-edge / softness)))[
            ..., None
        ]
    )
  # Sky or verge above the horizon.
  sky = y < 2.0
  if sky.any():
    sky_colour = rng.uniform(0.55, 0.95) * rng.uniform(0.85, 1.1, 3)
    image = np.where(sky[..., None], sky_colour, image)
  vignette = 1 - rng.uniform(0, 0.35) * (
      ((cols - width / 2) / width) ** 2 + ((rows - height / 2) / height) ** 2
  )
  image = image * vignette[..., None] * rng.uniform(0.7, 1.35)  # exposure
  sigma = rng.uniform(0.0, 1.2)
  if sigma > 0.3:
    image = ndimage.gaussian_filter(image, (sigma, sigma, 0))
  image = image + rng.normal(
      0, rng.uniform(0.005, 0.02), image.shape
  )  # sensor noise
  return (np.clip(image, 0, 1) ** rng.uniform(0.85, 1.15) * 255 + 0.5).astype(
      np.uint8
  )


def _render_jpeg(job: tuple[int, int, int, int, str]) -> None:
  seed, split_id, class_id, index, path = job
  rng = np.random.default_rng([seed, split_id, class_id, index])
  Image.fromarray(render_frame(class_id, rng)).save(path, quality=90)


def ensure_generated(
    *,
    train_per_class: int,
    val_per_class: int,
    test_per_class: int,
    seed: int = 0,
    cache_dir: str = "",
    progress: bool = True,
) -> str:
  """The root of the generated tree, generating it first if it is not there.

  The tree is written into a temporary sibling folder and renamed into place
  once complete, so an interrupted generation is never taken for a finished
  one; the root's name holds every parameter, so sets never collide.
  """
  counts = {
      "train": train_per_class,
      "val": val_per_class,
      "test": test_per_class,
  }
  if min(counts.values()) < 1:
    raise ValueError(
        f"roadtex needs at least one image per class and split, got {counts}"
    )
  cache_dir = cache_dir or files.default_cache_dir()
  name = f"roadtex-v{VERSION}-s{seed}-{train_per_class}-{val_per_class}-{test_per_class}"
  root = os.path.join(cache_dir, name)
  if os.path.exists(os.path.join(root, _MARKER)):
    return root
  os.makedirs(cache_dir, exist_ok=True)
  building = tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir)
  try:
    _render_all(_jobs(building, counts, seed), progress)
    files.atomic_write_json(
        os.path.join(building, _MARKER),
        {
            "version": VERSION,
            "seed": seed,
            "images_per_class": counts,
            "class_names": list(CLASS_NAMES),
        },
    )
    if os.path.exists(root):  # an unmarked, incomplete leftover
      shutil.rmtree(root)
    os.replace(building, root)
  except BaseException:
    shutil.rmtree(building, ignore_errors=True)
    raise
  return root


def _jobs(
    root: str, counts: dict[str, int], seed: int
) -> list[tuple[int, int, int, int, str]]:
  """(seed, split id, class id, index, path) of every frame, folders made."""
  jobs = []
  for split_id, split in enumerate(SPLIT_NAMES):
    for class_id, class_name in enumerate(CLASS_NAMES):
      folder = os.path.join(root, split, class_name)
      os.makedirs(folder)
      jobs += [
          (seed, split_id, class_id, i, os.path.join(folder, f"{i:06d}.jpg"))
          for i in range(counts[split])
      ]
  return jobs


def _render_all(
    jobs: list[tuple[int, int, int, int, str]], progress: bool
) -> None:
  """Renders every job on all cores."""
  # Spawned, not forked: the caller may already run JAX's threads.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(
      os.cpu_count() or 1, mp_context=context
  ) as pool:
    done = pool.map(_render_jpeg, jobs, chunksize=16)
    for _ in tqdm(
        done,
        total=len(jobs),
        desc="generating roadtex",
        unit="img",
        disable=not progress,
    ):
      pass
