"""timeline.png: a video's class over time, with the model's confidence.

Two bands coloured by class, the segments above the samples they came from,
and below them each sample's top probability, unsure samples marked. The
figure is built without pyplot, so no display and no global state is
involved.
"""

import os
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from roadflax.drives.segments import Segment
from roadflax.drives.timeline import Timeline, class_colours
from roadflax.files import atomic_write


def timeline_figure(timeline: Timeline, segments: Sequence[Segment]) -> Figure:
  """The picture written as timeline.png."""
  colours = class_colours(timeline.class_names)
  figure = Figure(figsize=(10, 3.8), dpi=100, layout="constrained")
  bands, confidence = figure.subplots(2, 1, sharex=True, height_ratios=(1, 2))
  starts, ends = timeline.times, timeline.ends
  classes = np.array(timeline.classes)
  for name in timeline.class_names:
    mine = classes == name
    bands.broken_barh(
        list(zip(starts[mine], ends[mine] - starts[mine])),
        (0.1, 0.8),
        color=colours[name],
    )
  bands.broken_barh(
      [(s.start_s, s.duration_s) for s in segments],
      (1.1, 0.8),
      color=[colours[s.class_name] for s in segments],
      edgecolor="white",
  )
  bands.set_yticks([0.5, 1.5], ["samples", "segments"])
  bands.set_ylim(0, 2)
  seen = set(timeline.classes)
  present = [name for name in timeline.class_names if name in seen]
  bands.legend(
      handles=[Patch(color=colours[n], label=n) for n in present],
      loc="lower left",
      bbox_to_anchor=(0, 1.02),
      ncols=len(present),
      frameon=False,
      fontsize="small",
  )
  _confidence_axes(confidence, timeline)
  name = os.path.basename(timeline.source)
  figure.suptitle(
      f"{name}: {len(timeline)} samples every {timeline.every:g} s"
      + (" (cut short)" if timeline.warning else ""),
      fontsize="medium",
  )
  return figure


def _confidence_axes(axes, timeline: Timeline) -> None:
  """Each sample's top probability; unsure samples marked."""
  axes.plot(timeline.times, timeline.confidence, color="black", linewidth=1)
  unsure = timeline.unsure
  axes.plot(
      timeline.times[unsure],
      timeline.confidence[unsure],
      "x",
      color="crimson",
      label="unsure",
  )
  if unsure.any():
    axes.legend(loc="lower right", fontsize="small")
  axes.set_ylim(0, 1.02)
  axes.set_xlim(0, max(timeline.duration_s, float(timeline.times[-1])))
  axes.set_ylabel("confidence")
  axes.set_xlabel("seconds")
  axes.grid(alpha=0.3)


def write_timeline_png(
    timeline: Timeline, segments: Sequence[Segment], path: str
) -> None:
  """`timeline_figure` as a PNG file."""
  figure = timeline_figure(timeline, segments)
  atomic_write(path, lambda f: figure.savefig(f, format="png"))
