"""Drives to try `--mode=predict` on videos with: a video whose surface
changes along the way, its GPS track, and the true stretches to score the
timeline against.

  python -m roadflax.datasets.drives --source=roadtex --output=/tmp/drive
  roadflax --mode=predict --workdir=runs/demo --input=/tmp/drive/drive.mp4 \\
      --gpx=/tmp/drive/track.gpx --gpx_offset=5 --output=/tmp/drive/out
  python -m roadflax.datasets.drives --score=/tmp/drive

A new picture comes every half second (held for the frames between): roadtex
frames drawn with a seed no training set uses, or windows of the bottom rows
of scikit-image's real ground photographs (the rows `ground_photos` keeps for
its test split). The stretches are `--stretches` (class:seconds,...); the
GPS track (a point a second along a straight line from 08:00:00 UTC) starts
`--offset` seconds before the video. The tests build their drive with
`write_video` and `write_gpx` too.
"""

import argparse
import csv
import datetime
import json
import os

import av
import numpy as np

from roadflax.datasets import ground_photos, roadtex

SLOT_S = 0.5
DEFAULT_STRETCHES = {
    "roadtex": "dry_asphalt_smooth:20,dry_gravel:15,dry_concrete_smooth:25",
    "ground": "brick:20,gravel:15,grass:25",
}
TRACK_START_S = datetime.datetime(
    2024, 5, 1, 8, tzinfo=datetime.timezone.utc
).timestamp()
# Degrees per second along the track.
LATITUDE, LONGITUDE = (48.0, 0.0001), (11.0, 0.00015)


def pictures(source: str, names: list[str], seed: int) -> np.ndarray:
  """One 240x360 uint8 picture of each named class."""
  rng = np.random.default_rng(seed)
  if source == "roadtex":
    return np.stack([
        roadtex.render_frame(roadtex.CLASS_NAMES.index(name), rng, 240, 360)
        for name in names
    ])
  photos = {name: ground_photos.source_photo(name) for name in set(names)}
  band = ground_photos.BANDS["test"]
  return np.stack([
      np.asarray(ground_photos.frame(photos[name], band, rng)) for name in names
  ])


def build(args: argparse.Namespace) -> None:
  stretches = [
      (name, float(seconds))
      for name, seconds in (s.split(":") for s in args.stretches.split(","))
  ]
  if args.seconds:  # the stretches repeated up to this length
    total = sum(seconds for _, seconds in stretches)
    stretches *= int(np.ceil(args.seconds / total))
  names, truth, start = [], [], 0.0
  for name, seconds in stretches:
    slots = round(seconds / SLOT_S)
    names += [name] * slots
    truth.append({"class": name, "start_s": start, "end_s": start + seconds})
    start += seconds
  if args.seconds:
    names = names[: round(args.seconds / SLOT_S)]
  os.makedirs(args.output, exist_ok=True)
  frames = np.repeat(
      pictures(args.source, names, args.seed), round(args.fps * SLOT_S), axis=0
  )
  write_video(os.path.join(args.output, "drive.mp4"), frames, fps=args.fps)
  track_seconds = int(len(names) * SLOT_S + args.offset) + 2
  write_gpx(os.path.join(args.output, "track.gpx"), track_seconds)
  with open(os.path.join(args.output, "truth.json"), "w") as f:
    json.dump({"stretches": truth, "offset_s": args.offset}, f, indent=1)
  print(f"{args.output}/drive.mp4: {len(frames)} frames at {args.fps} fps")


def score(folder: str) -> None:
  """Per-sample accuracy of timeline.csv and the distance of each true
  boundary to the nearest segment boundary."""
  with open(os.path.join(folder, "truth.json")) as f:
    truth = json.load(f)["stretches"]
  out = os.path.join(folder, "out", "drive")
  with open(os.path.join(out, "timeline.csv")) as f:
    rows = list(csv.DictReader(f))

  def true_class(t: float) -> str:
    return next(s["class"] for s in truth if t < s["end_s"])

  right = [r["class"] == true_class(float(r["time_s"])) for r in rows]
  with open(os.path.join(out, "segments.csv")) as f:
    segments = list(csv.DictReader(f))
  found = [float(s["start_s"]) for s in segments[1:]]
  errors = [
      min((abs(b["start_s"] - f) for f in found), default=float("inf"))
      for b in truth[1:]
  ]
  print(
      f"samples right: {np.mean(right):.1%} of {len(rows)}; segments:"
      f" {len(segments)} (true {len(truth)}); boundary errors (s):"
      f" {[round(e, 2) for e in errors]}"
  )


def write_video(
    path: str,
    pictures: np.ndarray,
    fps: int = 10,
    index_first: bool = True,
    rotation: int | None = None,
) -> None:
  """H.264 in MP4; `index_first` puts the index (moov) before the frames,
  so that a copy cut short still reads up to the cut; `rotation` is the
  display matrix's, counterclockwise."""
  options = {"movflags": "faststart"} if index_first else {}
  with av.open(path, "w", options=options) as container:
    stream = container.add_stream("libx264", rate=fps)
    stream.height, stream.width = pictures.shape[1:3]
    stream.pix_fmt = "yuv420p"
    if rotation is not None:
      stream.set_display_rotation(rotation)
    for picture in pictures:
      frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
      container.mux(stream.encode(frame))
    container.mux(stream.encode())


def write_gpx(path: str, seconds: int) -> None:
  """A GPX 1.1 track with a point a second from 08:00:00 UTC
  (`TRACK_START_S`), for `seconds`."""
  points = "".join(
      f'<trkpt lat="{position(t)[0]:.7f}" lon="{position(t)[1]:.7f}">'
      f"<ele>500</ele><time>{_utc(t)}</time></trkpt>\n"
      for t in range(seconds + 1)
  )
  with open(path, "w") as f:
    f.write(
        '<?xml version="1.0"?>\n<gpx version="1.1" creator="tests"'
        ' xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>\n'
        f"{points}</trkseg></trk></gpx>\n"
    )


def _utc(track_s: int) -> str:
  moment = datetime.datetime.fromtimestamp(
      TRACK_START_S + track_s, datetime.timezone.utc
  )
  return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def position(track_s: float) -> tuple[float, float]:
  """Latitude and longitude `track_s` seconds after the track's start."""
  return (
      LATITUDE[0] + LATITUDE[1] * track_s,
      LONGITUDE[0] + LONGITUDE[1] * track_s,
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
      "--source", choices=("roadtex", "ground"), default="roadtex"
  )
  parser.add_argument("--output", default="/tmp/drive")
  parser.add_argument("--stretches", default=None)
  parser.add_argument("--seconds", type=float, default=0.0)
  parser.add_argument("--fps", type=int, default=10)
  parser.add_argument("--offset", type=float, default=5.0)
  parser.add_argument("--seed", type=int, default=20261201)
  parser.add_argument("--score", default=None, help="a built drive folder")
  args = parser.parse_args()
  if args.score:
    score(args.score)
    return
  args.stretches = args.stretches or DEFAULT_STRETCHES[args.source]
  build(args)


if __name__ == "__main__":
  main()
