"""A small folder of real photographs: brick paving, grass and gravel.

roadtex is drawn by a program; a recipe tuned on it alone has been seen to
fail on real photos. These frames are cut from three real photographs of
ground surfaces that ship inside scikit-image (`skimage/data/brick.png`,
`grass.png`, `gravel.png`, 512x512 grey), so a test or a measurement can use
real photos with nothing downloaded. Each split is cut from its own band of
rows of every photograph (train from the top, validation from the middle,
test from the bottom), so no test pixel was seen in training. Each frame is a
random window of 2:3 shape, up-sampled to a 240x360 camera-like frame, with
random flips, exposure, gamma and white balance (so that brightness and
colour alone do not give the class away), saved as JPEG in the folder layout
`ROOT/{train,val,test}/CLASS/*.jpg` that `data.source=folder` reads.

  python -m roadflax.datasets.ground_photos --output=/tmp/ground --train_per_class=100
"""

import argparse
import importlib.resources
import os

import numpy as np
from PIL import Image

CLASSES = ("brick", "grass", "gravel")
FRAME_HW = (240, 360)
# Rows of each 512-row photograph that each split is cut from.
BANDS = {"train": (0, 320), "val": (320, 400), "test": (400, 512)}
_MIN_WINDOW_ROWS, _MAX_WINDOW_ROWS = 64, 128


def source_photo(name: str) -> Image.Image:
  """One of scikit-image's ground photographs, as RGB."""
  path = importlib.resources.files("skimage") / "data" / f"{name}.png"
  with Image.open(path) as image:
    return image.convert("RGB")


def window(
    rows: tuple[int, int], photo_width: int, rng: np.random.Generator
) -> tuple[int, int, int, int]:
  """A random (left, top, right, bottom) box of 2:3 shape inside the band `rows`."""
  top_row, end_row = rows
  height = int(
      rng.integers(
          _MIN_WINDOW_ROWS, min(_MAX_WINDOW_ROWS, end_row - top_row) + 1
      )
  )
  width = min(photo_width, height * FRAME_HW[1] // FRAME_HW[0])
  top = int(rng.integers(top_row, end_row - height + 1))
  left = int(rng.integers(0, photo_width - width + 1))
  return left, top, left + width, top + height


def frame(
    photo: Image.Image, rows: tuple[int, int], rng: np.random.Generator
) -> Image.Image:
  """A random 240x360 frame cut from the band `rows` of `photo`."""
  window_image = photo.crop(window(rows, photo.width, rng))
  if rng.random() < 0.5:
    window_image = window_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  if rng.random() < 0.5:
    window_image = window_image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
  window_image = window_image.resize(FRAME_HW[::-1], Image.Resampling.BICUBIC)
  return camera_light(window_image, rng)


def camera_light(image: Image.Image, rng: np.random.Generator) -> Image.Image:
  """`image` under a random exposure, gamma and white balance, as another
  camera on another day would see it (so brightness and colour alone do not
  give the class away)."""
  pixels = np.asarray(image, np.float32) / 255.0
  pixels = pixels ** rng.uniform(0.7, 1.4)  # gamma
  pixels = (
      pixels * rng.uniform(0.6, 1.3) * rng.uniform(0.85, 1.15, size=3)
  )  # exposure, white balance
  return Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8))


def write_folder(
    root: str,
    *,
    train_per_class: int = 100,
    val_per_class: int = 30,
    test_per_class: int = 50,
    seed: int = 0,
) -> str:
  """Writes the frames under `root` (existing frames are overwritten); returns `root`."""
  counts = {
      "train": train_per_class,
      "val": val_per_class,
      "test": test_per_class,
  }
  for class_index, name in enumerate(CLASSES):
    photo = source_photo(name)
    for split_index, (split, count) in enumerate(counts.items()):
      directory = os.path.join(root, split, name)
      os.makedirs(directory, exist_ok=True)
      rng = np.random.default_rng([seed, class_index, split_index])
      for i in range(count):
        frame(photo, BANDS[split], rng).save(
            os.path.join(directory, f"{name}_{i:04d}.jpg"), quality=90
        )
  return root


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
      "--output",
      required=True,
      help="folder to write ROOT/{train,val,test}/CLASS/ into",
  )
  parser.add_argument("--train_per_class", type=int, default=100)
  parser.add_argument("--val_per_class", type=int, default=30)
  parser.add_argument("--test_per_class", type=int, default=50)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  write_folder(
      args.output,
      train_per_class=args.train_per_class,
      val_per_class=args.val_per_class,
      test_per_class=args.test_per_class,
      seed=args.seed,
  )
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
