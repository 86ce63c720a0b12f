"""A GPS track from a GPX file, and where it was at a given time.

    track = read_gpx("track.gpx")
    track.positions(track.start_s + 5 + timeline.times)   # [N, 2] lat, lon

Every track point with a time counts (`<trkpt lat lon><time>`, GPX 1.0 or
1.1, all tracks and segments of the file, in time order); between two points
the position is interpolated linearly in time, and outside the track's time
it is unknown (NaN). Times are UTC, as GPX writes them.
"""

import dataclasses
import datetime
import os
import xml.etree.ElementTree as ElementTree

import numpy as np

from roadflax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Track:
  """Timed positions, in increasing time."""

  times: np.ndarray  # float64 [K], seconds since 1970-01-01 UTC
  latitudes: np.ndarray  # float64 [K], degrees
  longitudes: np.ndarray  # float64 [K], degrees
  source: str

  @property
  def start_s(self) -> float:
    return float(self.times[0])

  @property
  def end_s(self) -> float:
    return float(self.times[-1])

  def positions(self, times: np.ndarray) -> np.ndarray:
    """float [N, 2] latitude and longitude at each of `times` (seconds since
    the epoch); NaN outside the track's time."""
    times = np.asarray(times, np.float64)
    inside = (times >= self.start_s) & (times <= self.end_s)
    placed = np.stack(
        [
            np.interp(times, self.times, self.latitudes),
            np.interp(times, self.times, self.longitudes),
        ],
        axis=1,
    )
    placed[~inside] = np.nan
    return placed

  def path(self, start: float, end: float) -> np.ndarray:
    """float [K, 2] latitude and longitude from `start` to `end` (seconds
    since the epoch), clipped to the track's time: the positions at both
    ends and the track points between. Empty when no time of it is on the
    track."""
    start, end = max(start, self.start_s), min(end, self.end_s)
    if start >= end:
      return np.zeros((0, 2))
    between = (self.times > start) & (self.times < end)
    times = np.concatenate([[start], self.times[between], [end]])
    return self.positions(times)


def read_gpx(path: str) -> Track:
  """The track points with a time of the GPX file at `path`.

  Raises:
    UserError: the file is missing, not GPX, or has fewer than two timed
      track points.
  """
  try:
    root = ElementTree.parse(path).getroot()
  except OSError as error:
    raise UserError(f"--gpx={path}: {error.strerror or error}") from None
  except ElementTree.ParseError as error:
    raise UserError(f"--gpx={path} is not a GPX file: {error}") from None
  points = {}
  for point in root.iter():
    if _local(point.tag) != "trkpt":
      continue
    stamp = next((c.text for c in point if _local(c.tag) == "time"), None)
    if stamp is None:
      continue
    try:
      when = _seconds(stamp.strip())
      points.setdefault(
          when, (float(point.get("lat")), float(point.get("lon")))
      )
    except (TypeError, ValueError):
      raise UserError(
          f"--gpx={path}: a track point has an unreadable time or position"
          f" (time {stamp.strip()!r}, lat {point.get('lat')!r},"
          f" lon {point.get('lon')!r})"
      ) from None
  if len(points) < 2:
    raise UserError(
        f"--gpx={path} has {len(points)} track points with a time; placing"
        " the video needs at least two"
    )
  times = np.array(sorted(points), np.float64)
  latitudes, longitudes = np.array([points[t] for t in times]).T
  return Track(times, latitudes, longitudes, os.path.basename(path))


def _local(tag: str) -> str:
  """An element's name without its namespace."""
  return tag.rpartition("}")[2]


def _seconds(stamp: str) -> float:
  """An ISO 8601 time as seconds since the epoch; without a zone, UTC."""
  when = datetime.datetime.fromisoformat(stamp)
  if when.tzinfo is None:
    when = when.replace(tzinfo=datetime.timezone.utc)
  return when.timestamp()


def utc(seconds: float) -> str:
  """Seconds since the epoch as an ISO 8601 UTC time, to the millisecond."""
  when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
  return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
