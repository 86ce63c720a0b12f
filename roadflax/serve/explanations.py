"""`--mode=predict --explain`: each image's explanation as a PNG file.

A file shows the image as the model saw it and beside it the Grad-CAM heat
map of its predicted class (`results.visuals.explanation_image`). Files are
named after their inputs, in the folders the inputs have below the folder
they share: `--input=photos` with photos/a/1.jpg and photos/b/1.jpg writes
a/1.png and b/1.png; two inputs that differ only in their extension keep it
(1_jpg.png, 1_png.png).
"""

import collections
import os
from typing import Sequence

from PIL import Image

from roadflax.files import atomic_write
from roadflax.results import visuals
from roadflax.serve import model

FOLDER = "explanations"


def file_names(paths: Sequence[str]) -> list[str]:
  """The PNG name, relative to the explanations' folder, of each input."""
  paths = [os.path.abspath(path) for path in paths]
  common = os.path.commonpath([os.path.dirname(path) for path in paths])
  stems = [os.path.splitext(os.path.relpath(path, common))[0] for path in paths]
  repeated = collections.Counter(stems)
  return [
      f"{stem}_{os.path.splitext(path)[1][1:]}.png"
      if repeated[stem] > 1
      else f"{stem}.png"
      for stem, path in zip(stems, paths)
  ]


def write_explanations(
    paths: Sequence[str], explanations: model.Explanations, folder: str
) -> int:
  """Writes FOLDER/NAME.png for each readable input; returns how many."""
  written = 0
  for name, pixels, heatmap, error in zip(
      file_names(paths),
      explanations.pixels,
      explanations.heatmaps,
      explanations.errors,
  ):
    if error is not None:
      continue
    image = Image.fromarray(visuals.explanation_image(pixels, heatmap))
    atomic_write(
        os.path.join(folder, name), lambda f, image=image: image.save(f, "PNG")
    )
    written += 1
  return written
