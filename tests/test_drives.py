"""Videos in, and on the map: a drive of roadtex frames whose surface changes
(`tests/drive_video.py`), its timeline, segments, files and the command; the
smoothing rule on hand-made timelines; GPX tracks."""

import csv
import json
import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

from roadflax.datasets import drives as demo_drives
from roadflax.drives import frames, gpx, outputs, segments, timeline
from roadflax.errors import UserError
from tests import drive_video, helpers
from tests.drive_video import ASPHALT, CONCRETE, GRAVEL, STRETCHES


@pytest.fixture(scope="session")
def drive(tmp_path_factory):
  return helpers.built_once(tmp_path_factory, "drive", drive_video.build)


@pytest.fixture(scope="module")
def video(drive):
  return os.path.join(drive, "videos", "drive.mp4")


@pytest.fixture(scope="module")
def knowing(drive):
  return drive_video.knowing_model(drive)


@pytest.fixture(scope="module")
def classified(knowing, video):
  return timeline.classify_video(knowing, video, batch_size=16)


def test_the_segments_are_the_true_stretches(classified):
  every = timeline.DEFAULT_EVERY
  assert len(classified) == 88 and classified.warning is None
  assert classified.duration_s == pytest.approx(22.0)
  assert np.all(np.diff(classified.times) <= every + 1 / drive_video.FPS)
  # Every sample is right, the 0.5 s patch included...
  assert list(classified.classes) == [
      drive_video.true_class(t) for t in classified.times
  ]
  # ... which the segments drop as a flicker.
  found = segments.segments(classified)
  assert [s.class_name for s in found] == [name for name, _, _ in STRETCHES]
  for segment, (_, start, end) in zip(found, STRETCHES):
    assert abs(segment.start_s - start) <= every
    assert abs(segment.end_s - end) <= every
  assert found[0].mean_confidence < found[1].mean_confidence  # the patch


def test_a_drive_on_the_map(classified, drive, tmp_path):
  track = gpx.read_gpx(os.path.join(drive, "track.gpx"))
  written = outputs.write_drive(
      classified, str(tmp_path), track=track, gpx_offset=drive_video.OFFSET_S
  )

  assert list(written.paths) == [
      "timeline.csv",
      "segments.csv",
      "timeline.png",
      "segments.geojson",
      "map.html",
  ]
  collection = json.loads((tmp_path / "segments.geojson").read_text())
  features = collection["features"]
  assert [f["geometry"]["type"] for f in features] == ["LineString"] * 3
  assert [f["properties"]["class"] for f in features] == [
      ASPHALT,
      GRAVEL,
      CONCRETE,
  ]
  assert len({f["properties"]["stroke"] for f in features}) == 3
  lines = [np.array(f["geometry"]["coordinates"]) for f in features]
  for line, segment in zip(lines, written.segments):
    # Along the track, from the segment's start to its end.
    seconds = (line[:, 1] - demo_drives.LATITUDE[0]) / demo_drives.LATITUDE[1]
    np.testing.assert_allclose(
        line[:, 0],
        demo_drives.LONGITUDE[0] + demo_drives.LONGITUDE[1] * seconds,
        atol=1e-6,
    )
    offset = drive_video.OFFSET_S
    assert seconds[0] == pytest.approx(offset + segment.start_s, abs=0.01)
    assert seconds[-1] == pytest.approx(offset + segment.end_s, abs=0.01)
    assert np.all(np.diff(seconds) > 0)
  assert features[1]["properties"]["start_time"] == "2024-05-01T08:00:13.000Z"
  page = (tmp_path / "map.html").read_text()
  assert all(name in page for name in (ASPHALT, GRAVEL, CONCRETE))
  assert "leaflet" in page.lower()


def test_timeline_csv_and_picture(classified, tmp_path):
  written = outputs.write_drive(classified, str(tmp_path))

  assert list(written.paths) == ["timeline.csv", "segments.csv", "timeline.png"]
  with open(written.paths["timeline.csv"]) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == [
      "time_s",
      "frame",
      "class",
      "confidence",
      "unsure",
      *(f"p_{name}" for name in drive_video.CLASS_NAMES),
  ]
  assert len(rows) == 88 and rows[32]["time_s"] == "8.000"
  assert rows[32]["class"] == GRAVEL and rows[32]["frame"] == "80"
  with open(written.paths["segments.csv"]) as f:
    assert [r["class"] for r in csv.DictReader(f)] == [
        ASPHALT,
        GRAVEL,
        CONCRETE,
    ]
  assert Image.open(written.paths["timeline.png"]).size == (1000, 380)


def test_samples_off_the_track_are_left_off_the_map(
    classified, tmp_path, caplog
):
  demo_drives.write_gpx(str(tmp_path / "short.gpx"), seconds=16)
  track = gpx.read_gpx(str(tmp_path / "short.gpx"))
  written = outputs.write_drive(
      classified, str(tmp_path), track=track, gpx_offset=drive_video.OFFSET_S
  )

  # The video runs 5 to 27 s into a 16 s track: samples after 11 s are off.
  assert "43 of 88 samples of drive.mp4 fall outside" in caplog.text
  with open(written.paths["timeline.csv"]) as f:
    rows = list(csv.DictReader(f))
  assert [r["latitude"] == "" for r in rows] == [
      float(r["time_s"]) > 11 for r in rows
  ]
  collection = json.loads((tmp_path / "segments.geojson").read_text())
  gravel = collection["features"][1]["geometry"]["coordinates"]
  seconds = (gravel[-1][1] - demo_drives.LATITUDE[0]) / demo_drives.LATITUDE[1]
  assert seconds == pytest.approx(16)  # cut at the track's end
  assert len(collection["features"]) == 2  # concrete is wholly off it


def test_a_video_cut_short_keeps_the_frames_before_the_cut(
    classified, knowing, video, tmp_path, caplog
):
  cut = tmp_path / "cut.mp4"
  data = open(video, "rb").read()
  cut.write_bytes(data[: len(data) // 2])

  kept = timeline.classify_video(knowing, str(cut))

  assert re.fullmatch(
      r"cut\.mp4: the video (breaks off|ends) at [\d.]+ s .*; kept the \d+"
      r" frames before it",
      kept.warning,
  )
  assert kept.warning in caplog.text
  assert 4 < kept.duration_s < 18
  n = len(kept)
  np.testing.assert_array_equal(kept.times, classified.times[:n])
  assert kept.classes == classified.classes[:n]


def test_an_mp4_cut_before_its_index_is_one_clear_error(tmp_path):
  path = str(tmp_path / "late_index.mp4")
  pictures = np.random.default_rng(0).integers(0, 255, (20, 32, 48, 3))
  demo_drives.write_video(path, pictures.astype(np.uint8), index_first=False)
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])

  with pytest.raises(UserError, match="cut short before its index") as error:
    frames.VideoFrames(path, 0.25)
  assert "\n" not in str(error.value)


def test_frames_are_turned_upright(tmp_path):
  picture = np.zeros((32, 48, 3), np.uint8)
  picture[:16, :16] = 255  # a white top-left corner
  path = str(tmp_path / "portrait.mp4")
  demo_drives.write_video(path, np.stack([picture] * 3), rotation=90)

  with frames.VideoFrames(path, every=0.25) as video:
    samples = list(video)

  assert [s.frame for s in samples] == [0]  # 0.1 s apart: one sample
  upright = samples[0].pixels
  assert upright.shape == (48, 32, 3)  # turned a quarter counterclockwise
  assert upright[-8:, :8].mean() > 200 and upright[:8, :8].mean() < 50


def test_the_command_on_a_folder_of_videos(trained_workdir, drive, tmp_path):
  output = tmp_path / "timelines"
  result = helpers.run_main(
      "--mode=predict",
      f"--workdir={trained_workdir}",
      f"--input={drive}/videos",
      f"--output={output}",
      f"--gpx={drive}/track.gpx",
      f"--gpx_offset={drive_video.OFFSET_S}",
      check=True,
  )

  lines = result.stdout.splitlines()
  assert lines[0].startswith(f"{drive}/videos/drive.mp4: 22.0 s, 88 samples")
  with open(output / "drive" / "segments.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(lines) == 1 + len(rows) + 1
  assert lines[-1] == (
      f"  wrote {output}/drive/: timeline.csv, segments.csv, timeline.png,"
      " segments.geojson, map.html"
  )
  collection = json.loads((output / "drive" / "segments.geojson").read_text())
  assert len(collection["features"]) == len(rows)


@pytest.mark.parametrize(
    "inputs,message",
    [
        (["drive.mp4", "photo.jpg"], "predict them in separate runs"),
        (["missing.mkv"], "missing.mkv: no such file"),
    ],
)
def test_input_mistakes(inputs, message, tmp_path):
  for name in ("drive.mp4", "photo.jpg"):
    (tmp_path / name).write_bytes(b"")
  result = helpers.run_main(
      "--mode=predict",
      f"--workdir={tmp_path}",
      *(f"--input={tmp_path / name}" for name in inputs),
  )
  assert message in helpers.error_line(result)


def test_a_file_that_is_no_video_is_one_line(trained_workdir, tmp_path):
  notes = tmp_path / "notes.mp4"
  notes.write_text("not a video\n")
  result = helpers.run_main(
      "--mode=predict", f"--workdir={trained_workdir}", f"--input={notes}"
  )
  assert helpers.error_line(result) == (
      f"error: {notes} cannot be read as a video (invalid data found when"
      " processing input): it is not one, or was cut short before its index"
  )


def _timeline(
    classes: str, every: float = 0.25, favour: str = ""
) -> timeline.Timeline:
  """A timeline of one sample per letter (A, B, C) `every` seconds; each
  sample gives its class 0.8, and `favour`'s letter 0.15 more than the
  third."""
  names = ("A", "B", "C")
  probabilities = np.full((len(classes), 3), 0.1, np.float32)
  for i, letter in enumerate(classes):
    probabilities[i, names.index(letter)] = 0.8
    if favour:
      probabilities[i, names.index(favour)] = 0.15 if favour != letter else 0.8
  probabilities /= probabilities.sum(axis=1, keepdims=True)
  n = len(classes)
  return timeline.Timeline(
      times=np.arange(n) * every,
      frames=np.arange(n),
      classes=tuple(classes),
      probabilities=probabilities,
      unsure=np.zeros(n, bool),
      class_names=names,
      source="hand-made",
      duration_s=n * every,
      fps=1 / every,
      every=every,
  )


def _runs(found) -> list[tuple[str, float, float, int]]:
  return [(s.class_name, s.start_s, s.end_s, s.samples) for s in found]


@pytest.mark.parametrize(
    "classes,favour,expected",
    [
        # A flicker between runs of one class joins them.
        ("AAAABBAAAA", "", [("A", 0.0, 2.5, 10)]),
        # Between two classes, the one the model rated higher on it wins...
        ("AAAABBCCCC", "C", [("A", 0.0, 1.0, 4), ("C", 1.0, 2.5, 6)]),
        # ... on a tie the longer neighbour, then the earlier.
        ("AAAABBCCCCC", "", [("A", 0, 1, 4), ("C", 1, 2.75, 7)]),
        ("AAAABBCCCC", "", [("A", 0.0, 1.5, 6), ("C", 1.5, 2.5, 4)]),
        # The shortest goes first: C (0.25 s) joins B, which is then long
        # enough (B first would have gone, and C after it).
        ("AAAABBBCAAAA", "B", [("A", 0, 1, 4), ("B", 1, 2, 4), ("A", 2, 3, 4)]),
        # Runs at the ends have one neighbour.
        ("BAAAAA", "", [("A", 0.0, 1.5, 6)]),
        # A drive shorter than min_seconds is one segment.
        ("AAB", "", [("A", 0.0, 0.75, 3)]),
    ],
)
def test_the_smoothing_rule(classes, favour, expected):
  found = segments.segments(_timeline(classes, favour=favour), 1.0)
  assert _runs(found) == expected


def test_min_seconds_zero_only_merges_equal_neighbours():
  found = segments.segments(_timeline("AABA"), min_seconds=0)
  assert [s.class_name for s in found] == ["A", "B", "A"]
  assert found[0].mean_confidence == pytest.approx(0.8)
  with pytest.raises(UserError, match="--min_segment_seconds=-1"):
    segments.segments(_timeline("AABA"), min_seconds=-1)


def test_gpx_points_in_any_order_and_namespace(tmp_path):
  path = tmp_path / "old.gpx"
  path.write_text(
      '<gpx version="1.0" xmlns="http://www.topografix.com/GPX/1/0"><trk>'
      '<trkseg><trkpt lat="1" lon="2"><time>2024-05-01T08:00:10Z</time>'
      '</trkpt><trkpt lat="5" lon="6"/></trkseg><trkseg>'
      '<trkpt lat="0" lon="0"><time>2024-05-01T10:00:00+02:00</time></trkpt>'
      "</trkseg></trk></gpx>"
  )
  track = gpx.read_gpx(str(path))
  assert track.start_s == demo_drives.TRACK_START_S
  np.testing.assert_allclose(
      track.positions(track.start_s + np.array([-1, 0, 5, 10, 11])),
      [[np.nan, np.nan], [0, 0], [0.5, 1], [1, 2], [np.nan, np.nan]],
  )
  path.write_text("<gpx><trk><trkseg></trkseg></trk></gpx>")
  with pytest.raises(UserError, match="has 0 track points with a time"):
    gpx.read_gpx(str(path))
  path.write_text("no xml")
  with pytest.raises(UserError, match="is not a GPX file"):
    gpx.read_gpx(str(path))


def test_logging_names_decode_and_classify_times(knowing, video, caplog):
  caplog.set_level(logging.INFO, logger="absl")
  timeline.classify_video(knowing, video, every=2.0)
  assert "decoded 220 frames in" in caplog.text
  assert "classified 11 of them in" in caplog.text
