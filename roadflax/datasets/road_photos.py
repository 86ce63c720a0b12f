"""Real road-surface photographs from Debian packages: a development set whose
test photographs are never seen in training.

Frames cut from one photograph are alike in ways a network can memorise (its
light, its camera, its stones), so a model tested on other crops of the
photographs it trained on measures memory, not the surface. This set takes
photographic textures of asphalt, concrete and gravel that ship inside four
Debian game-data packages (in Debian main, so free to use and redistribute)
and gives every split its own photographs:

  apt-get install redeclipse-data supertuxkart-data flightgear-data-base \\
      torcs-data
  python -m roadflax.datasets.road_photos --output=/tmp/roads

Each `Photo` below is one group: one source photograph, or variants of one
photograph (recolourings, a/b versions) kept together because they would leak
into each other. Each group belongs to one split. A frame is a random window
of a group's photograph (inside the part without painted markings), often
seen in perspective as a forward-looking camera sees the road, at a random
scale, flipped at random, under a random exposure, gamma and white balance,
saved as a 240x360 JPEG. Two layouts:

  splits  ROOT/{train,val,test}/CLASS/GROUP-NNNN.jpg (the fixed split below;
          `data.source=folder` reads it as it is)
  groups  ROOT/CLASS/GROUP/NNNN.jpg (no split folders: for splitting by
          group at training time, `data.group_by=subfolder`)

ROOT/photos.json records the groups, their files, packages and splits.
"""

import argparse
import dataclasses
import os
import subprocess

import numpy as np
from PIL import Image

from roadflax.datasets.ground_photos import FRAME_HW, camera_light
from roadflax.errors import UserError
from roadflax.files import atomic_write_json

GAMES_DIR = "/usr/share/games"
CLASSES = ("asphalt", "concrete", "gravel")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Photo:
  """One group: a source photograph (or variants of one) of one class.

  Attributes:
    group: the group's name, unique over the set.
    label: its class, one of `CLASSES`.
    split: the split every frame of it goes to.
    package: the Debian package that ships it.
    files: its image files, relative to the games folder.
    boxes: per file, (left, top, right, bottom): the part of the photograph
      that is plain surface (no painted lines or edges), or None for all of
      it; empty = all of every file.
  """

  group: str
  label: str
  split: str
  package: str
  files: tuple[str, ...]
  boxes: tuple[tuple[int, int, int, int] | None, ...] = ()


_RE = "redeclipse/data/"
_STK = "supertuxkart/data/"
_FG = "flightgear/"
_TORCS = "torcs/data/textures/"

PHOTOS = (
    # Asphalt.
    Photo("re-asphalt", "asphalt", "train", "redeclipse-data",
          (_RE + "luckystrike/asphalt_01.jpg",)),
    Photo("stk-city-asphalt", "asphalt", "train", "supertuxkart-data",
          (_STK + "textures/city_asphalt_1.jpg",
           _STK + "textures/city_asphalt_2.jpg"),
          ((0, 275, 1024, 480), (0, 35, 1024, 480))),
    Photo("torcs-asphalt", "asphalt", "train", "torcs-data",
          (_TORCS + "tr-asphalt.rgb",)),
    Photo("fg-runway-asphalt", "asphalt", "val", "flightgear-data-base",
          (_FG + "Textures/Runway/pa_no_threshold.png",), ((30, 5, 985, 240),)),
    Photo("stk-tarmac", "asphalt", "test", "supertuxkart-data",
          (_STK + "textures/tarmac.jpg",)),
    Photo("stk-racetrack", "asphalt", "test", "supertuxkart-data",
          (_STK + "textures/racetrack_asphalt.jpg",), ((0, 40, 1024, 470),)),
    # Concrete. trak4's concrete1a-3 are versions of one cracked slab and
    # concrete5a-6 of one scratched slab; FlightGear's runway and tie-down
    # concrete share a source.
    Photo("re-trak-cracked-concrete", "concrete", "train", "redeclipse-data",
          tuple(_RE + f"trak/trak4/concrete{n}.jpg"
                for n in ("1a", "1b", "2a", "3"))),
    Photo("stk-generic-concrete", "concrete", "train", "supertuxkart-data",
          (_STK + "textures/stktex_generic_concreteA.png",)),
    Photo("stk-plain-concrete", "concrete", "train", "supertuxkart-data",
          (_STK + "textures/concrete_plain.png",
           _STK + "tracks/stk_enterprise/concrete_plain_dark.png")),
    Photo("re-trak-scratched-concrete", "concrete", "val", "redeclipse-data",
          tuple(_RE + f"trak/trak4/concrete{n}.jpg"
                for n in ("5a", "5b", "6"))),
    Photo("fg-lsgs-concrete", "concrete", "val", "flightgear-data-base",
          (_FG + "Scenery/Models/Airport/LSGS_Concrete.png",)),
    Photo("stk-aggregate-concrete", "concrete", "test", "supertuxkart-data",
          (_STK + "textures/concrete2.png",)),
    Photo("fg-runway-concrete", "concrete", "test", "flightgear-data-base",
          (_FG + "Textures/Runway/pc_no_threshold.png",
           _FG + "Textures/Runway/pc_tiedown_alt.png"),
          ((30, 5, 985, 245), None)),
    Photo("torcs-concrete", "concrete", "test", "torcs-data",
          (_TORCS + "tr-concrete.rgb", _TORCS + "tr-concrete4.rgb")),
    # Gravel.
    Photo("stk-pebbles", "gravel", "train", "supertuxkart-data",
          (_STK + "textures/stktex_generic_gravelA.png",)),
    Photo("fg-terrain-gravel", "gravel", "train", "flightgear-data-base",
          (_FG + "Textures/Terrain/gravel_gray.png",
           _FG + "Textures/Terrain/gravel_brown.png",
           _FG + "Textures/Terrain/gravel_red.png")),
    Photo("stk-canyon-road", "gravel", "train", "supertuxkart-data",
          (_STK + "textures/canyon_dirt_road.jpg",)),
    Photo("re-debris", "gravel", "val", "redeclipse-data",
          (_RE + "jojo/debris01.png",)),
    Photo("stk-gravel-road", "gravel", "test", "supertuxkart-data",
          (_STK + "textures/stklama_gravelRoad_a.png",
           _STK + "textures/stklama_gravelSide_a.png")),
)  # fmt: skip

PACKAGES = tuple(sorted({p.package for p in PHOTOS}))
# Window heights, as a share of the largest 2:3 window that fits a photo.
_MIN_SCALE, _MAX_SCALE = 0.3, 1.0
_PERSPECTIVE_SHARE = 0.7  # frames seen by a forward-looking camera
_MAX_SPREAD = 1.2  # how much wider the far edge is than the near one
# Ranges of the random contrast and brightness factors: (low, high) each.
_CONTRAST_BRIGHTNESS = ((0.5, 0.5), (2.0, 1.8))


def check_installed(games_dir: str = GAMES_DIR) -> None:
  """Raises a one-line `UserError` naming the packages to install when any
  photograph is missing."""
  missing = sorted({
      p.package
      for p in PHOTOS
      for f in p.files
      if not os.path.isfile(os.path.join(games_dir, f))
  })
  if missing:
    raise UserError(
        f"the road photographs come from Debian packages {missing}, not"
        f" found under {games_dir}: apt-get install {' '.join(missing)}"
    )


def load_photo(photo: Photo, games_dir: str = GAMES_DIR) -> list[Image.Image]:
  """The RGB images of one group, each cut to its box."""
  images = []
  boxes = photo.boxes or (None,) * len(photo.files)
  for f, box in zip(photo.files, boxes, strict=True):
    with Image.open(os.path.join(games_dir, f)) as image:
      rgb = image.convert("RGB")
    images.append(rgb.crop(box) if box else rgb)
  return images


def frame(image: Image.Image, rng: np.random.Generator) -> Image.Image:
  """A random 240x360 frame of `image`: a window at a random scale, seen
  flat or in perspective, flipped, under random light."""
  height, width = FRAME_HW
  largest = min(image.height, image.width * height // width)
  rows = largest * rng.uniform(_MIN_SCALE, _MAX_SCALE)
  near = rows * width / height  # width of the window's near (bottom) edge
  far = near  # width of its far (top) edge
  if rng.random() < _PERSPECTIVE_SHARE:
    far = min(image.width, near * (1 + rng.uniform(0.2, _MAX_SPREAD)))
  top = rng.uniform(0, image.height - rows)
  centre = rng.uniform(far / 2, image.width - far / 2)
  # Upper left, lower left, lower right, upper right (PIL's QUAD order).
  quad = (
      centre - far / 2, top,
      centre - near / 2, top + rows,
      centre + near / 2, top + rows,
      centre + far / 2, top,
  )  # fmt: skip
  view = image.transform(
      (width, height), Image.Transform.QUAD, quad, Image.Resampling.BICUBIC
  )
  if rng.random() < 0.5:
    view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return _contrast(camera_light(view, rng), rng)


def _contrast(image: Image.Image, rng: np.random.Generator) -> Image.Image:
  """`image` with its contrast and brightness scaled by random factors
  (haze, glare, another camera's curve, dusk), so that the spread and level
  of brightness alone do not give the surface away."""
  pixels = np.asarray(image, np.float32)
  mean = pixels.mean(axis=(0, 1))
  contrast, brightness = np.exp(rng.uniform(*np.log(_CONTRAST_BRIGHTNESS)))
  pixels = (mean + (pixels - mean) * contrast) * brightness
  return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


def _package_versions() -> dict[str, str]:
  """Installed versions of `PACKAGES` (empty where dpkg cannot say)."""
  try:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Version}\\n", *PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
  except OSError:
    return {}
  return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def write_folder(
    root: str,
    *,
    train_per_class: int = 100,
    val_per_class: int = 30,
    test_per_class: int = 50,
    layout: str = "splits",
    seed: int = 0,
    games_dir: str = GAMES_DIR,
) -> str:
  """Writes the frames under `root` (the module's docstring); returns `root`.

  Each split's frames of a class are spread evenly over its groups.

  Raises:
    UserError: a package is missing or the layout is unknown.
  """
  if layout not in ("splits", "groups"):
    raise UserError(f"layout {layout!r} must be 'splits' or 'groups'")
  check_installed(games_dir)
  counts = dict(zip(SPLITS, (train_per_class, val_per_class, test_per_class)))
  for class_index, name in enumerate(CLASSES):
    for split_index, split in enumerate(SPLITS):
      photos = [p for p in PHOTOS if p.label == name and p.split == split]
      images = [load_photo(p, games_dir) for p in photos]
      rng = np.random.default_rng([seed, class_index, split_index])
      for i in range(counts[split]):
        which = i % len(photos)
        group = photos[which].group
        source = images[which][rng.integers(len(images[which]))]
        if layout == "splits":
          path = os.path.join(root, split, name, f"{group}-{i:04d}.jpg")
        else:
          path = os.path.join(root, name, group, f"{split}-{i:04d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        frame(source, rng).save(path, quality=90)
  atomic_write_json(
      os.path.join(root, "photos.json"),
      {
          "layout": layout,
          "packages": _package_versions(),
          "groups": [dataclasses.asdict(p) for p in PHOTOS],
          "frames_per_class": counts,
          "seed": seed,
      },
  )
  return root


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--output", required=True, help="folder to write into")
  parser.add_argument("--train_per_class", type=int, default=100)
  parser.add_argument("--val_per_class", type=int, default=30)
  parser.add_argument("--test_per_class", type=int, default=50)
  parser.add_argument(
      "--layout", default="splits", choices=("splits", "groups")
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--games_dir", default=GAMES_DIR)
  args = parser.parse_args()
  try:
    write_folder(
        args.output,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        test_per_class=args.test_per_class,
        layout=args.layout,
        seed=args.seed,
        games_dir=args.games_dir,
    )
  except UserError as e:
    raise SystemExit(f"error: {e}") from None
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
