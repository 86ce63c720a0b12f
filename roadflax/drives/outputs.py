"""Every file of one classified video, in one folder.

    drive = write_drive(timeline, "timelines/drive", track=read_gpx("t.gpx"))
    drive.segments, drive.paths

writes timeline.csv, segments.csv and timeline.png, and with a GPS track
segments.geojson and map.html. The video is placed on the track by time: a
sample at `t` seconds of the video was at the track's first time +
`gpx_offset` + `t`. Samples outside the track's time stay unplaced (empty
latitude and longitude in timeline.csv, off the map), and a warning counts
them.
"""

import dataclasses
import os

import numpy as np
from absl import logging

from roadflax.drives import gpx, maps, plots
from roadflax.drives.segments import (
    DEFAULT_MIN_SECONDS,
    Segment,
    segments,
    write_segments,
)
from roadflax.drives.timeline import Timeline, class_colours, write_timeline_csv


@dataclasses.dataclass(frozen=True)
class Drive:
  """What `write_drive` found and wrote."""

  segments: list[Segment]
  paths: dict[str, str]  # file name -> path, in the order written


def write_drive(
    timeline: Timeline,
    folder: str,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    track: gpx.Track | None = None,
    gpx_offset: float = 0.0,
) -> Drive:
  """Writes the video's files into `folder` (made if needed).

  Args:
    timeline: the classified video (`classify_video`).
    folder: where the files go; files of an earlier run are replaced.
    min_seconds: the shortest segment (`segments.segments`).
    track: the drive's GPS track, for the GeoJSON and the map.
    gpx_offset: seconds from the track's first point to the video's start.

  Raises:
    UserError: `min_seconds` is negative.
  """
  found = segments(timeline, min_seconds)
  paths = {
      name: os.path.join(folder, name)
      for name in ("timeline.csv", "segments.csv", "timeline.png")
  }
  positions = None
  if track is not None:
    start = track.start_s + gpx_offset
    positions = track.positions(start + timeline.times)
    _warn_unplaced(timeline, track, start, positions)
    collection = maps.segments_geojson(
        found,
        [track.path(start + s.start_s, start + s.end_s) for s in found],
        class_colours(timeline.class_names),
        start,
        timeline.source,
    )
    paths["segments.geojson"] = os.path.join(folder, "segments.geojson")
    paths["map.html"] = os.path.join(folder, "map.html")
    maps.write_geojson(collection, paths["segments.geojson"])
    title = os.path.basename(timeline.source)
    maps.write_map_html(collection, track, title, paths["map.html"])
  write_timeline_csv(timeline, paths["timeline.csv"], positions)
  write_segments(found, paths["segments.csv"])
  plots.write_timeline_png(timeline, found, paths["timeline.png"])
  return Drive(found, paths)


def _warn_unplaced(
    timeline: Timeline, track: gpx.Track, start: float, positions: np.ndarray
) -> None:
  """A warning when some samples fall outside the track's time."""
  unplaced = int(np.isnan(positions[:, 0]).sum())
  if not unplaced:
    return
  logging.warning(
      "%d of %d samples of %s fall outside the time of %s (%s to %s; the"
      " video, placed by --gpx_offset, runs from %s to %s): they are not"
      " on the map",
      unplaced,
      len(timeline),
      os.path.basename(timeline.source),
      track.source,
      gpx.utc(track.start_s),
      gpx.utc(track.end_s),
      gpx.utc(start),
      gpx.utc(start + timeline.duration_s),
  )
