"""Pictures: the confusion matrix and reconstructions for TensorBoard, and
a prediction's explanation (its Grad-CAM heat map) for files and the app.

Each returns a uint8 RGB array [H, W, 3] (what `clu.metric_writers` writes
as an image); matplotlib draws off-screen (Agg) so no display is needed.
"""

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# How much of an explanation's overlay is the heat map's colour.
HEATMAP_OPACITY = 0.45


def denormalize(
    images: np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
  """Normalised float images -> uint8, clipped (reconstructions overshoot)."""
  pixels = (np.asarray(images) * np.asarray(std) + np.asarray(mean)) * 255.0
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def reconstruction_grid(
    inputs: np.ndarray,
    reconstructions: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
  """Two rows: the inputs on top, their reconstructions below, 2 px apart."""
  rows = []
  for images in (inputs, reconstructions):
    pixels = denormalize(images, mean, std)
    gap = np.full((pixels.shape[1], 2, 3), 255, np.uint8)
    rows.append(
        np.concatenate(
            [part for image in pixels for part in (image, gap)][:-1], axis=1
        )
    )
  gap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
  return np.concatenate([rows[0], gap, rows[1]], axis=0)


def confusion_image(
    confusion: np.ndarray, class_names: Sequence[str], title: str = ""
) -> np.ndarray:
  """The confusion matrix as a labelled heat map (rows = true class)."""
  confusion = np.asarray(confusion)
  totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  size = 2.2 + 0.9 * len(class_names)
  figure, axes = plt.subplots(figsize=(size + 1.5, size), dpi=80)
  axes.imshow(confusion / totals, cmap="Blues", vmin=0, vmax=1)
  ticks = np.arange(len(class_names))
  axes.set_xticks(ticks, class_names, rotation=30, ha="right")
  axes.set_yticks(ticks, class_names)
  axes.set_xlabel("predicted")
  axes.set_ylabel("true")
  if title:
    axes.set_title(title)
  for (row, column), count in np.ndenumerate(confusion):
    share = count / totals[row, 0]
    axes.text(
        column,
        row,
        f"{count}\n{share:.0%}",
        ha="center",
        va="center",
        color="white" if share > 0.5 else "black",
        fontsize=8,
    )
  figure.tight_layout()
  image = figure_pixels(figure)
  plt.close(figure)
  return image


def figure_pixels(figure: Figure) -> np.ndarray:
  """A matplotlib figure drawn by Agg, as uint8 RGB [H, W, 3]."""
  canvas = FigureCanvasAgg(figure)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def explanation_image(
    pixels: np.ndarray, heatmap: np.ndarray, colormap: str = "jet"
) -> np.ndarray:
  """The image as the model saw it and, 4 px to its right, the same with its
  heat map (0..1, [S, S]) overlaid in `colormap`'s colours (jet: blue cold,
  red hot): uint8 RGB [S, 2 S + 4, 3]."""
  pixels = np.asarray(pixels, np.uint8)
  colours = matplotlib.colormaps[colormap](np.clip(heatmap, 0, 1))[..., :3]
  overlay = (1 - HEATMAP_OPACITY) * pixels + HEATMAP_OPACITY * 255 * colours
  gap = np.full((pixels.shape[0], 4, 3), 255, np.uint8)
  return np.concatenate(
      [pixels, gap, np.clip(np.round(overlay), 0, 255).astype(np.uint8)],
      axis=1,
  )
