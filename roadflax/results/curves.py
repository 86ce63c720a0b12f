"""Validation curves of several runs: read from TensorBoard events, drawn side
by side into one PNG (`--mode=compare`'s comparison.png)."""

import dataclasses
import glob
import itertools
import os
from typing import Any, Protocol, Sequence

import matplotlib
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from roadflax.files import atomic_write

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

_EVENTS = "events.out.tfevents.*"


@dataclasses.dataclass(frozen=True)
class Curve:
  """One stage's validation metric, one point per evaluation (epoch end)."""

  label: str
  steps: tuple[int, ...]
  values: tuple[float, ...]


class RunCurves(Protocol):
  """What `write_plot` draws of a run (`tables.RunSummary` has it)."""

  accuracy_curves: tuple[Curve, ...]
  reconstruction_curves: tuple[Curve, ...]


def stage_curves(
    workdir: str, run_name: str, stages: list[str], tag: str
) -> tuple[Curve, ...]:
  """`tag` of each stage that has logged it, labelled by the run (and by the
  stage too when the run has several)."""
  curves = []
  for stage in stages:
    points = read_scalar(os.path.join(workdir, stage), tag)
    if points:
      steps, values = zip(*points)
      curves.append(
          Curve(
              f"{run_name}: {stage}" if len(stages) > 1 else run_name,
              steps,
              values,
          )
      )
  return tuple(curves)


def read_scalar(stage_dir: str, tag: str) -> list[tuple[int, float]]:
  """(step, value) of one scalar from a stage's TensorBoard events, by step.

  clu writes scalars through tf.summary when TensorFlow is installed, and they
  are then stored as tensor summaries (the Tensors of an EventAccumulator, not
  its Scalars); other writers store classic scalars, so both are read. A step
  written twice (a run resumed after its last evaluation) keeps the later value.
  """
  if not glob.glob(os.path.join(stage_dir, _EVENTS)):
    return []
  accumulator = EventAccumulator(
      stage_dir, size_guidance={"scalars": 0, "tensors": 0}
  )
  accumulator.Reload()
  tags = accumulator.Tags()
  if tag in tags["scalars"]:
    points = {event.step: event.value for event in accumulator.Scalars(tag)}
  elif tag in tags["tensors"]:
    points = {
        event.step: float(tensor_util.make_ndarray(event.tensor_proto))
        for event in accumulator.Tensors(tag)
    }
  else:
    return []
  return sorted(points.items())


def write_plot(runs: Sequence["RunCurves"], path: str) -> None:
  """Validation accuracy of the classifier stages, and beside it the
  validation loss of reconstruction stages when any run has one."""
  panels = [(
      "Validation accuracy (classification)",
      "accuracy",
      True,
      lambda run: run.accuracy_curves,
  )]
  if any(run.reconstruction_curves for run in runs):
    panels.append((
        "Validation loss (reconstruction)",
        "loss (MSE)",
        False,
        lambda run: run.reconstruction_curves,
    ))
  figure, axes_list = plt.subplots(
      1, len(panels), figsize=(6.4 * len(panels), 4.4), dpi=110, squeeze=False
  )
  colours = plt.get_cmap("tab10")
  for axes, (title, ylabel, percent, curves_of) in zip(axes_list[0], panels):
    # Whole epochs only, with room either side (a single epoch would
    # otherwise get an axis of fractions around 1).
    axes.set_xlim(
        0.5,
        max([len(c.values) for run in runs for c in curves_of(run)], default=1)
        + 0.5,
    )
    for index, run in enumerate(runs):
      # A run's stages share its colour and differ in line style.
      for curve, style in zip(
          curves_of(run), itertools.cycle(("-", "--", ":", "-."))
      ):
        epochs = np.arange(1, len(curve.values) + 1)
        axes.plot(
            epochs,
            curve.values,
            style,
            marker="o",
            markersize=3.5,
            linewidth=1.6,
            color=colours(index % 10),
            label=curve.label,
        )
    _style_axes(axes, title, ylabel, percent)
  figure.tight_layout()
  _save_figure(figure, path)


def _style_axes(axes: Any, title: str, ylabel: str, percent: bool) -> None:
  axes.set_title(title, fontsize=11)
  axes.set_xlabel("epoch")
  axes.set_ylabel(ylabel)
  axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))
  if percent:
    axes.yaxis.set_major_formatter(ticker.PercentFormatter(xmax=1.0))
  axes.grid(True, alpha=0.3)
  axes.spines[["top", "right"]].set_visible(False)
  if axes.lines:
    axes.legend(fontsize=8, frameon=False)
  else:
    axes.text(
        0.5,
        0.5,
        "no validation points yet",
        ha="center",
        va="center",
        transform=axes.transAxes,
        color="grey",
    )


def _save_figure(figure: Any, path: str) -> None:
  """Saves beside `path`, then renames: never a half-written picture."""
  try:
    atomic_write(path, lambda f: figure.savefig(f, format="png"))
  finally:
    plt.close(figure)
