"""Pictures for TensorBoard: the confusion matrix and reconstructions.

Both return uint8 RGB arrays [H, W, 3] that `clu.metric_writers` writes as
images; matplotlib draws off-screen (Agg) so no display is needed.
"""

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


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
  figure.canvas.draw()
  image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
  plt.close(figure)
  return image
