"""`--mode=predict` on videos: a timeline, segments and maps per video.

    roadflax --mode=predict --workdir=runs/demo --input=drive.mp4 \\
        --gpx=track.gpx --gpx_offset=12

Each video's files go into a folder named by its file stem, under
`--output` (default ./timelines); one line per segment is printed. Videos and
images are predicted in separate runs.
"""

import collections
import os
from typing import Sequence

from absl import logging
from tqdm import tqdm

from roadflax.data.image_folder import IMAGE_EXTENSIONS
from roadflax.drives import frames, gpx, outputs, timeline
from roadflax.drives.segments import DEFAULT_MIN_SECONDS, check_min_seconds
from roadflax.errors import UserError
from roadflax.files import files_under
from roadflax.serve import model

# Where the timelines go without --output.
DEFAULT_OUTPUT = "timelines"


def video_inputs(inputs: Sequence[str]) -> list[str]:
  """The videos among `inputs`: video files, and those under folders (in
  name order); [] when there are none, so that images go on as before.

  Raises:
    UserError: `inputs` hold both videos and images, or name a video file
      that does not exist.
  """
  videos, images = [], []
  for item in inputs:
    if os.path.isdir(item):
      found = files_under(item)
      videos += [path for path in found if frames.is_video(path)]
      images += [p for p in found if p.lower().endswith(IMAGE_EXTENSIONS)]
    elif frames.is_video(item):
      if not os.path.isfile(item):
        raise UserError(f"{item}: no such file")
      videos.append(item)
    else:
      images.append(item)
  if videos and images:
    raise UserError(
        f"--input holds videos ({videos[0]}) and images ({images[0]}):"
        " predict them in separate runs"
    )
  return videos


def predict_videos(
    workdir: str,
    videos: Sequence[str],
    output: str | None = None,
    stage: str | None = None,
    every: float = timeline.DEFAULT_EVERY,
    min_seconds: float = DEFAULT_MIN_SECONDS,
    gpx_path: str | None = None,
    gpx_offset: float = 0.0,
    unsure_below: float | None = None,
    runtime: str = "auto",
) -> None:
  """Classifies each video and writes its files (`outputs.write_drive`).

  A video that cannot be read is skipped with a warning; only when none can
  be is it an error.

  Raises:
    UserError: a mistake in the arguments, or no video could be read.
  """
  frames.check_every(every)
  check_min_seconds(min_seconds)
  if gpx_path and len(videos) > 1:
    raise UserError(
        f"--gpx places one video, and --input holds {len(videos)}: give"
        " each video its own run with its --gpx_offset"
    )
  folders = _output_folders(videos, output or DEFAULT_OUTPUT)
  track = gpx.read_gpx(gpx_path) if gpx_path else None
  trained = model.load(workdir, stage, unsure_below, runtime)
  failures = []
  for video, folder in folders.items():
    try:
      found = _classified(trained, video, every)
    except UserError as error:
      logging.warning("skipped: %s", error)
      failures.append(str(error))
      continue
    drive = outputs.write_drive(found, folder, min_seconds, track, gpx_offset)
    _print_summary(found, drive)
  if len(failures) == len(folders):
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    raise UserError(failures[0] + more)


def _classified(
    trained: model.Model, video: str, every: float
) -> timeline.Timeline:
  """The video's timeline, with a progress bar in seconds of video."""
  bar = tqdm(desc=os.path.basename(video), unit="s", leave=False)

  def progress(done_s: float, total_s: float | None) -> None:
    bar.total = round(max(total_s or 0, done_s), 1)
    bar.update(round(done_s - bar.n, 1))

  try:
    return timeline.classify_video(trained, video, every, progress=progress)
  finally:
    bar.close()


def _output_folders(videos: Sequence[str], output: str) -> dict[str, str]:
  """{video: its folder under `output`}, named by the video's stem.

  Raises:
    UserError: two videos share a stem.
  """
  by_stem = collections.defaultdict(list)
  for video in videos:
    by_stem[os.path.splitext(os.path.basename(video))[0]].append(video)
  for stem, same in by_stem.items():
    if len(same) > 1:
      raise UserError(
          f"{same[0]} and {same[1]} would both write {output}/{stem}/:"
          " predict them in separate runs with their own --output"
      )
  return {
      video: os.path.join(output, stem) for stem, (video,) in by_stem.items()
  }


def _print_summary(found: timeline.Timeline, drive: outputs.Drive) -> None:
  """A line for the video, one per segment, and where the files went."""
  print(
      f"{found.source}: {found.duration_s:.1f} s, {len(found)} samples every"
      f" {found.every:g} s, {len(drive.segments)} segment"
      + ("s" if len(drive.segments) != 1 else "")
      + (" (cut short: see the warning)" if found.warning else "")
  )
  for s in drive.segments:
    print(
        f"  {s.start_s:7.1f} - {s.end_s:7.1f} s  {s.class_name:<24}"
        f" {s.samples:4d} samples, confidence {s.mean_confidence:.2f}"
    )
  folder = os.path.dirname(next(iter(drive.paths.values())))
  print(f"  wrote {folder}/: {', '.join(drive.paths)}")
