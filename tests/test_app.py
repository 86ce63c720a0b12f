"""The web app: each upload's fate, the runs it may open, the summary of all
uploads and its downloads, the page as Streamlit renders it, `--mode=serve`'s
checks and, marked slow, the served page in headless Chromium.

The shared tiny workdir (both stages, a few steps) is only read. The page is
driven by Streamlit's AppTest, in this process: the app reads its script
arguments from `sys.argv`, which the tests set as `streamlit run ...
-- --workdir=W` would.
"""

import base64
import functools
import io
import itertools
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib

import av
import numpy as np
import pandas as pd
import pytest
import streamlit as st
import tensorflow as tf
import websockets.sync.client
from PIL import Image
from streamlit.testing.v1 import AppTest

from roadflax.data import preprocess
from roadflax.drives import timeline
from roadflax.serve import app, catalog, model, predict, serving, summary
from roadflax.serve import uploads, videos
from roadflax.serve.autoencoder import Autoencoder
from roadflax.errors import UserError
from roadflax.files import read_json
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_SCRIPT = os.path.join(ROOT, "roadflax", "serve", "app.py")
MAX_PIXELS = app.DEFAULT_MAX_MEGAPIXELS * 1_000_000


@pytest.fixture(scope="module")
def workdir(trained_workdir):
  return trained_workdir


@pytest.fixture(scope="module")
def classifier(workdir):
  return predict.Classifier.load(workdir)


@pytest.fixture(scope="module")
def autoencoder(workdir):
  return Autoencoder.load(workdir)


@pytest.fixture(scope="module")
def explain(classifier):
  return classifier.trained.explain_function()


@pytest.fixture
def runs_folder(workdir, tmp_path):
  """A folder of runs: `a` (a link to the workdir), `b` (another workdir,
  its stages linked from the first), `untrained` (a workdir without a
  checkpoint) and `notes` (no workdir)."""
  folder = tmp_path / "runs"
  folder.mkdir()
  (folder / "a").symlink_to(workdir, target_is_directory=True)
  for name, stages in (("b", ("pretrain", "classify")), ("untrained", ())):
    (folder / name).mkdir()
    for file in ("run.json", "config.json"):
      shutil.copy(os.path.join(workdir, file), folder / name / file)
    for stage in stages:
      (folder / name / stage).symlink_to(os.path.join(workdir, stage))
  (folder / "notes").mkdir()
  (folder / "notes" / "todo.txt").write_text("not a run")
  return folder


# ------------------------------------------------------------------ uploads


def road(seed=0, size=(48, 72)):
  """An RGB road-like picture, as the tiny workdir was trained on."""
  rng = np.random.default_rng(seed)
  return Image.fromarray(rng.integers(60, 120, (*size, 3)).astype(np.uint8))


def encode(image, file_format):
  buffer = io.BytesIO()
  image.save(buffer, file_format)
  return buffer.getvalue()


def png_claiming(width, height):
  """A valid little PNG whose header claims `width` x `height` pixels.

  Only decoding it would notice the lie; a refusal by size must come first.
  """
  data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
  data[16:24] = struct.pack(">II", width, height)  # IHDR's width, height.
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # its CRC
  return bytes(data)


def damaged(data):
  """`data` with 16 bytes flipped mid-file: a PNG's header and end survive."""
  middle = len(data) // 2
  return (
      data[:middle]
      + bytes(b ^ 0xFF for b in data[middle : middle + 16])
      + data[middle + 16 :]
  )


GOOD_JPEG = encode(road(), "JPEG")
# name -> (contents, what its error says)
BAD_UPLOADS = {
    "empty.jpg": (b"", "empty file"),
    "report.jpg": (b"%PDF-1.7\n" + bytes(200), "not a JPEG or PNG"),
    "truncated.jpg": (GOOD_JPEG[: len(GOOD_JPEG) // 2], "truncated JPEG"),
    "damaged_header.jpg": (
        b"\xff\xd8\xff" + bytes(100) + b"\xff\xd9",
        "damaged image header",
    ),
    "damaged_pixels.png": (
        damaged(encode(road(), "PNG")),
        "damaged image data, it cannot be decoded",
    ),
    "48mp.png": (
        png_claiming(8000, 6000),
        (
            "8,000 x 6,000 pixels (48.0 megapixels) is over the limit "
            "of 40 megapixels"
        ),
    ),
    "bomb.png": (png_claiming(50_000, 50_000), "too large"),
}


def sixteen_bit_png(image):
  """`image` as a 16-bit PNG (TensorFlow writes 48-bit RGB; PIL does not)."""
  pixels = np.asarray(image).astype(np.uint16) * 257
  return tf.io.encode_png(pixels.reshape(*pixels.shape[:2], -1)).numpy()


def phone_photo(image):
  """`image` as a phone stores a portrait shot: lying down, EXIF says turn it."""
  tags = image.getexif()
  tags[0x0112] = 6  # Orientation: turn right to show.
  buffer = io.BytesIO()
  image.transpose(Image.Transpose.ROTATE_90).save(
      buffer, "JPEG", exif=tags.tobytes()
  )
  return buffer.getvalue()


# name -> (contents, what its note says, or None for no note)
READABLE_UPLOADS = {
    "rgb.jpg": (GOOD_JPEG, None),
    "rgb.png": (encode(road(), "PNG"), None),
    "grey.jpg": (encode(road().convert("L"), "JPEG"), "grayscale to RGB"),
    "rgba.png": (encode(road().convert("RGBA"), "PNG"), "transparency dropped"),
    "cmyk.jpg": (encode(road().convert("CMYK"), "JPEG"), "CMYK to RGB"),
    "palette.png": (encode(road().convert("P"), "PNG"), "palette to RGB"),
    "grey16.png": (
        sixteen_bit_png(road().convert("L")),
        "grayscale to RGB, 16 to 8 bits per channel",
    ),
    "rgb16.png": (sixteen_bit_png(road()), "16 to 8 bits per channel"),
    "portrait_phone.jpg": (
        phone_photo(road()),
        "turned upright as its EXIF orientation says",
    ),
}


def describe(files, classifier, autoencoder=None, explain=None):
  return uploads.describe_uploads(
      files, classifier, autoencoder, max_pixels=MAX_PIXELS, explain=explain
  )


def test_uploads_go_through_each_model_in_padded_batches(
    classifier, autoencoder, monkeypatch
):
  calls = []
  for counted, method in (
      (classifier, "predict"),
      (autoencoder, "reconstruct"),
  ):
    original = getattr(counted, method)
    monkeypatch.setattr(
        counted,
        method,
        lambda images, original=original: (
            calls.append(len(images)),
            original(images),
        )[1],
    )
  files = [(f"road{i}.jpg", encode(road(i), "JPEG")) for i in range(35)]

  described = describe(files, classifier, autoencoder)

  # 32 to a call, the rest padded to a power of two: few compilations.
  assert calls == [32, 4, 32, 4]
  size = classifier.data_config.image_size
  for upload, (name, data) in zip(described, files):
    assert upload.name == name and upload.error is None
    assert upload.probabilities.shape == (len(classifier.class_names),)
    assert upload.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert upload.model_view.shape == upload.reconstruction.shape
    assert upload.reconstruction.shape == (size, size, 3)
    assert upload.reconstruction.dtype == np.uint8
    # What the model saw is exactly the training pipeline's image.
    pipeline_image = preprocess.preprocess_image(
        tf.constant(data), size, classifier.data_config.contrast
    ).numpy()
    np.testing.assert_array_equal(upload.model_view, pipeline_image)


def test_predictions_match_the_command_line_classifier(classifier, tmp_path):
  path = tmp_path / "road.jpg"
  path.write_bytes(GOOD_JPEG)
  [upload] = describe([("road.jpg", GOOD_JPEG)], classifier)
  [expected] = classifier.predict_files([str(path)])
  np.testing.assert_allclose(
      upload.probabilities, list(expected["probabilities"].values()), atol=1e-6
  )


def test_each_bad_upload_gets_its_own_error_and_the_rest_a_prediction(
    classifier, autoencoder
):
  files = [("before.jpg", GOOD_JPEG)]
  files += [(name, data) for name, (data, _) in BAD_UPLOADS.items()]
  files += [("after.jpg", encode(road(1), "JPEG"))]

  described = describe(files, classifier, autoencoder)

  assert [upload.name for upload in described] == [name for name, _ in files]
  for upload in (described[0], described[-1]):
    assert upload.error is None and upload.reconstruction is not None
  for upload in described[1:-1]:
    assert BAD_UPLOADS[upload.name][1] in upload.error
    assert upload.probabilities is None


def test_uploads_are_explained_in_the_same_pass(classifier, explain):
  files = [("road.jpg", GOOD_JPEG), ("empty.jpg", b"")]
  files.append(("grey.png", encode(road(2).convert("L"), "PNG")))

  explained = describe(files, classifier, explain=explain)

  plain = describe(files, classifier)
  size = classifier.data_config.image_size
  for upload, expected in zip(explained, plain):
    assert upload.error == expected.error
    if upload.error is not None:
      assert upload.heatmap is None
      continue
    # The same (calibrated) probabilities as predicting alone.
    np.testing.assert_allclose(
        upload.probabilities, expected.probabilities, atol=1e-5
    )
    assert upload.heatmap.shape == (size, size)
    assert upload.heatmap.dtype == np.float32
    assert 0 <= upload.heatmap.min() and upload.heatmap.max() <= 1
    assert expected.heatmap is None


def test_the_pixel_limit_is_the_callers(classifier):
  [upload] = uploads.describe_uploads(
      [("road.jpg", GOOD_JPEG)], classifier, None, max_pixels=48 * 72 - 1
  )
  assert "over the limit of 0.003455 megapixels" in upload.error


@pytest.mark.parametrize("name", READABLE_UPLOADS)
def test_grey_transparent_cmyk_and_16_bit_images_are_predicted_with_a_note(
    name, classifier
):
  data, note = READABLE_UPLOADS[name]
  [upload] = describe([(name, data)], classifier)
  assert upload.error is None
  assert upload.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
  assert upload.reconstruction is None  # No autoencoder given.
  if note is None:
    assert upload.note is None
  else:
    assert note in upload.note


def test_cmyk_jpegs_are_seen_in_their_true_colours(classifier):
  cmyk = READABLE_UPLOADS["cmyk.jpg"][0]
  as_rgb = encode(Image.open(io.BytesIO(cmyk)).convert("RGB"), "PNG")
  seen_cmyk, seen_rgb = describe(
      [("cmyk.jpg", cmyk), ("rgb.png", as_rgb)], classifier
  )
  difference = np.abs(seen_cmyk.model_view.astype(int) - seen_rgb.model_view)
  assert difference.mean() < 2  # Not inverted, not channel-swapped.


def test_example_folders_read_like_uploads(tmp_path):
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "a.png").write_bytes(b"png")
  (tmp_path / "b.jpg").write_bytes(b"jpg")
  (tmp_path / "notes.txt").write_bytes(b"not an image name")
  (tmp_path / "empty").mkdir()
  assert uploads.example_files(str(tmp_path)) == [
      ("b.jpg", b"jpg"),
      ("a.png", b"png"),
  ]
  with pytest.raises(UserError, match="holds no .jpg, .jpeg or .png file"):
    uploads.example_files(str(tmp_path / "empty"))


# ------------------------------------------------------------ the runs served


def test_the_runs_are_the_workdirs_named_and_those_in_a_folder(
    workdir, runs_folder
):
  untrained, missing = runs_folder / "untrained", runs_folder / "missing"
  found = catalog.find_runs(
      [str(runs_folder), workdir, str(untrained), str(missing)]
  )

  # The workdir is `a` under another name: listed once.
  assert [run.label for run in found.runs] == [
      str(runs_folder / "a"),
      str(runs_folder / "b"),
  ]
  assert found.runs[0].workdir == os.path.realpath(workdir)
  assert [run.stages for run in found.runs] == [("classify",)] * 2
  assert found.problems == (
      (
          f"{untrained} has no trained classification stage yet; train one"
          f" first (python main.py --config=... --workdir={untrained})"
      ),
      f"{missing}: no such folder",
  )
  assert catalog.find_runs([str(runs_folder / "notes")]).problems == (
      (
          f"{runs_folder / 'notes'} is not a roadflax workdir (no run.json) and"
          " holds none with a trained classification stage"
      ),
  )


def test_only_the_runs_listed_can_be_opened(workdir, runs_folder):
  found = catalog.find_runs([workdir])
  for same in (workdir, os.path.join(workdir, "classify", "..")):
    assert found.resolve(same, "classify") == found.runs[0]
  for outside in (
      str(runs_folder / "b"),
      os.path.dirname(workdir),
      os.path.join(workdir, "..", "data"),
      "/etc",
  ):
    with pytest.raises(
        UserError,
        match=(
            "is not one of the runs this app serves; it opens only the"
            r" workdirs given on its command line \(--workdir\)"
        ),
    ):
      found.resolve(outside, "classify")
  with pytest.raises(
      UserError,
      match=(
          r"has no trained classification stage 'pretrain' \(it has: classify"
      ),
  ):
    found.resolve(workdir, "pretrain")


# ---------------------------------------------------------- all uploads at once

SUMMARISED = [
    uploads.Upload("sure.jpg", probabilities=np.float32([0.1, 0.8, 0.1])),
    uploads.Upload("empty.jpg", error="empty file; upload a JPEG or PNG"),
    uploads.Upload("doubtful.jpg", probabilities=np.float32([0.4, 0.35, 0.25])),
    uploads.Upload("fair.jpg", probabilities=np.float32([0.05, 0.3, 0.65])),
]


def test_the_summary_puts_the_unreadable_and_least_confident_first():
  results = summary.records(SUMMARISED, helpers.CLASSES, unsure_below=0.7)
  table = summary.table(results)

  assert list(table["file"]) == [
      "empty.jpg",
      "doubtful.jpg",
      "fair.jpg",
      "sure.jpg",
  ]
  assert pd.isna(table["class"][0])
  assert list(table["class"][1:]) == ["asphalt", "gravel", "concrete"]
  np.testing.assert_allclose(table["confidence"][1:], [0.4, 0.65, 0.8])
  assert list(table["unsure"]) == [False, True, True, False]
  assert table["error"][0] == "empty file; upload a JPEG or PNG"


def test_the_downloads_hold_every_file_in_upload_order():
  results = summary.records(SUMMARISED, helpers.CLASSES, unsure_below=0.7)

  csv = pd.read_csv(io.StringIO(summary.to_csv(results, helpers.CLASSES)))
  assert list(csv.columns) == [
      "file",
      "class",
      "unsure",
      "probability_asphalt",
      "probability_concrete",
      "probability_gravel",
      "error",
  ]
  assert list(csv["file"]) == [upload.name for upload in SUMMARISED]
  np.testing.assert_allclose(
      csv.iloc[2, 3:6].astype(float), [0.4, 0.35, 0.25], atol=1e-6
  )
  assert csv["unsure"][2] and not csv["unsure"][0]
  assert csv["error"][1] == "empty file; upload a JPEG or PNG"

  saved = json.loads(summary.to_json(results, "runs/demo · classify", 0.7))
  assert saved["model"] == "runs/demo · classify"
  assert saved["unsure_below"] == 0.7
  assert [r["file"] for r in saved["predictions"]] == [
      "sure.jpg",
      "doubtful.jpg",
      "fair.jpg",
  ]
  assert saved["predictions"][1] == {
      "file": "doubtful.jpg",
      "class": "asphalt",
      "probabilities": pytest.approx(
          {"asphalt": 0.4, "concrete": 0.35, "gravel": 0.25}
      ),
      "unsure": True,
  }
  assert saved["skipped"] == [
      {"file": "empty.jpg", "error": "empty file; upload a JPEG or PNG"}
  ]


# ------------------------------------------------------------------- videos


def tiny_video(seconds, fps=8, size=(96, 64)):
  """A Matroska video (MPEG-4) of `seconds`: dark road for the first half,
  bright road for the second, as the tiny workdir's classes differ."""
  buffer = io.BytesIO()
  rng = np.random.default_rng(0)
  with av.open(buffer, "w", format="matroska") as container:
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    count = int(seconds * fps)
    for i in range(count):
      level = 0 if i < count // 2 else 120
      pixels = rng.integers(0, 60, (size[1], size[0], 3)) + level
      frame = av.VideoFrame.from_ndarray(pixels.astype(np.uint8), "rgb24")
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  return buffer.getvalue()


@pytest.fixture(scope="module")
def video_model(classifier):
  return model.Model.of_classifier(classifier.trained)


@pytest.fixture(scope="module")
def drive():
  return tiny_video(seconds=2)


def test_a_video_upload_gets_its_timeline(video_model, drive, tmp_path):
  video = videos.classify_upload("drive.mkv", drive, video_model)

  assert video.error is None
  found = video.timeline
  assert found.source == "drive.mkv"
  assert len(found) == 8  # 2 s, a frame every 0.25 s
  (tmp_path / "drive.mkv").write_bytes(drive)
  direct = timeline.classify_video(video_model, str(tmp_path / "drive.mkv"))
  np.testing.assert_array_equal(found.probabilities, direct.probabilities)
  rows = pd.read_csv(io.StringIO(videos.timeline_csv(found)))
  np.testing.assert_allclose(rows["time_s"], found.times, atol=1e-3)
  table = videos.segment_table(found)
  assert table["samples"].sum() == 8
  assert table["end (s)"].iloc[-1] == pytest.approx(found.duration_s)
  assert videos.with_threshold(found, 1.0).unsure.all()
  assert not videos.with_threshold(found, 0.0).unsure.any()


def test_a_file_that_is_no_video_gets_an_error_naming_it(video_model):
  video = videos.classify_upload("notes.mp4", b"not a video", video_model)
  assert video.timeline is None
  assert video.error.startswith("notes.mp4 cannot be read as a video")
  assert "roadflax-video-" not in video.error  # No temporary path.
  assert videos.is_video("DRIVE.MOV") and not videos.is_video("road.jpg")


# ------------------------------------------------------------------ the page


def page(monkeypatch, *script_args):
  """The app after its first run, as `streamlit run app.py -- ARGS` shows it."""
  monkeypatch.setattr(sys, "argv", [APP_SCRIPT, *script_args])
  at = AppTest.from_file(APP_SCRIPT, default_timeout=120)
  at.run()
  assert not at.exception, at.exception
  return at


def metrics(at):
  return {metric.label: metric.value for metric in at.metric}


def unsure_badges(at):
  return [m for m in at.markdown if m.value.startswith(":orange-badge[")]


def as_uploaded(files):
  return [(name, data, "image/jpeg") for name, data in files]


def test_page_shows_the_model_card(workdir, classifier, monkeypatch):
  at = page(monkeypatch, "--workdir", workdir)

  assert at.title[0].value == app.PAGE_TITLE
  assert at.subheader[0].value == f"Model: {workdir} · classify"
  report = read_json(os.path.join(workdir, "classify", "report.json"))
  card = metrics(at)
  assert card["Test accuracy"] == f"{report['accuracy']:.1%}"
  assert card["Input"] == "67×67 px"
  assert card["Checkpoint step"] == f"{classifier.step:,}"
  assert time.strptime(card["Trained"], "%Y-%m-%d")
  table = at.dataframe[0].value
  assert list(table.index) == list(helpers.CLASSES)
  assert list(table.columns) == [
      "test F1",
      "precision",
      "recall",
      "test images",
  ]
  assert at.caption[0].value.startswith("reconstructions by stage pretrain")
  assert [box.value for box in at.sidebar.selectbox] == [
      workdir,
      "classify",
      "auto",  # the runtime of videos; none was built here
  ]
  assert at.sidebar.selectbox[2].options == ["auto"]
  assert not at.error
  assert not at.dataframe[1:] and not at.download_button  # Nothing uploaded.


def test_page_lists_the_runs_given_and_has_no_box_for_a_path(
    runs_folder, monkeypatch
):
  at = page(monkeypatch, "--workdir", str(runs_folder))

  assert not at.text_input and not at.text_area
  run, stage, _ = at.sidebar.selectbox
  assert run.options == [str(runs_folder / "a"), str(runs_folder / "b")]
  assert stage.options == ["classify"]
  assert not at.sidebar.warning  # A run still training is simply not listed.
  run.select(str(runs_folder / "b")).run()
  assert not at.exception, at.exception
  assert at.subheader[0].value == f"Model: {runs_folder / 'b'} · classify"


def test_page_opens_no_path_from_a_query_or_the_session(
    workdir, runs_folder, monkeypatch
):
  monkeypatch.setattr(sys, "argv", [APP_SCRIPT, "--workdir", workdir])
  at = AppTest.from_file(APP_SCRIPT, default_timeout=120)
  outside = str(runs_folder / "b")
  at.query_params.update(workdir=outside, run=outside)
  at.session_state["workdir"] = outside
  at.run()

  assert not at.exception, at.exception
  assert at.sidebar.selectbox[0].options == [workdir]
  assert at.subheader[0].value == f"Model: {workdir} · classify"


def test_page_predicts_uploads_and_names_the_bad_one(
    workdir, classifier, monkeypatch
):
  at = page(monkeypatch, "--workdir", workdir)
  readable = [
      ("road.jpg", GOOD_JPEG),
      ("grey.jpg", READABLE_UPLOADS["grey.jpg"][0]),
  ]
  at.file_uploader[0].set_value([
      ("road.jpg", GOOD_JPEG, "image/jpeg"),
      ("truncated.jpg", BAD_UPLOADS["truncated.jpg"][0], "image/jpeg"),
      ("grey.jpg", READABLE_UPLOADS["grey.jpg"][0], "image/jpeg"),
  ]).run()

  assert not at.exception, at.exception
  predicted = metrics(at)
  for upload in describe(readable, classifier):
    best = int(np.argmax(upload.probabilities))
    assert predicted[upload.name] == classifier.class_names[best]
  [error] = at.error
  assert error.value.startswith("**truncated.jpg**: truncated JPEG")
  assert any("grayscale to RGB" in caption.value for caption in at.caption)
  # What the model saw beside its Grad-CAM map, then the reconstruction.
  assert [image.captions for image in at.image] == [
      [
          f"what the model saw, and where it saw {predicted[name]}"
          " (Grad-CAM: red is strongest)"
      ]
      if kind == "explanation"
      else ["the autoencoder's reconstruction"]
      for name, _ in readable
      for kind in ("explanation", "reconstruction")
  ]


def test_page_summarises_all_uploads_least_confident_first(
    workdir, classifier, explain, data_root, monkeypatch
):
  files = [
      (f"{name}.jpg", pathlib.Path(data_root, "test", name, "000.jpg"))
      for name in helpers.CLASSES
  ]
  files = [(name, path.read_bytes()) for name, path in files]
  files.append(("empty.jpg", b""))
  at = page(monkeypatch, "--workdir", workdir)
  at.file_uploader[0].set_value(as_uploaded(files)).run()
  slider = at.sidebar.slider[0]
  assert slider.value == pytest.approx(0.6)  # model.UNSURE_BELOW

  confidence = {  # As the page computes it: with the explanations.
      upload.name: upload.probabilities.max()
      for upload in describe(files[:-1], classifier, explain=explain)
  }
  table = at.dataframe[1].value
  assert list(table["file"]) == [
      "empty.jpg",
      *sorted(confidence, key=confidence.get),
  ]
  np.testing.assert_allclose(  # In percent.
      table["confidence"][1:],
      100 * np.sort(list(confidence.values())),
      rtol=1e-5,
  )
  assert [button.label for button in at.download_button] == [
      "Download predictions (CSV)",
      "Download predictions (JSON)",
  ]
  # Every readable upload is below 100% and above 0%: all unsure, then none.
  slider.set_value(1.0).run()
  assert list(at.dataframe[1].value["unsure"]) == [False, True, True, True]
  assert len(unsure_badges(at)) == 3
  slider.set_value(0.0).run()
  assert not any(at.dataframe[1].value["unsure"])
  assert not unsure_badges(at)


def test_page_classifies_only_the_files_it_has_not_seen(workdir, monkeypatch):
  calls = []
  original = uploads.describe_uploads
  monkeypatch.setattr(
      uploads,
      "describe_uploads",
      lambda files, *args, **kwargs: (
          calls.append([name for name, _ in files]),
          original(files, *args, **kwargs),
      )[1],
  )
  st.cache_data.clear()
  files = [(f"road{i}.jpg", encode(road(100 + i), "JPEG")) for i in range(3)]
  at = page(monkeypatch, "--workdir", workdir)

  at.file_uploader[0].set_value(as_uploaded(files[:2])).run()
  assert calls == [["road0.jpg"], ["road1.jpg"]]
  at.file_uploader[0].set_value(as_uploaded(files)).run()
  assert calls[2:] == [["road2.jpg"]]
  # The same contents under a new name, and a new threshold: no new work.
  renamed = [("copy.jpg", files[0][1])]
  at.file_uploader[0].set_value(as_uploaded(files + renamed)).run()
  at.sidebar.slider[0].set_value(0.9).run()
  assert len(calls) == 3
  assert "copy.jpg" in metrics(at)


def test_page_shows_each_video_s_timeline_and_a_cut_short_one_s_warning(
    workdir, drive, monkeypatch
):
  calls = []
  original = videos.classify_upload
  monkeypatch.setattr(
      videos,
      "classify_upload",
      lambda name, *args: (calls.append(name), original(name, *args))[1],
  )
  st.cache_data.clear()
  longer = tiny_video(seconds=4)
  at = page(monkeypatch, "--workdir", workdir)
  at.file_uploader[0].set_value([
      ("drive.mkv", drive, "video/x-matroska"),
      ("cut.mkv", longer[: len(longer) // 2], "video/x-matroska"),
  ]).run()

  assert not at.exception, at.exception
  assert [m.value for m in at.markdown if m.value.startswith("**")] == [
      "**drive.mkv**",
      "**cut.mkv**",
  ]
  [warning] = at.warning
  assert warning.value.startswith("cut.mkv: ")  # Where it stopped, and why.
  assert "cut short" in warning.value
  segments = at.dataframe[1].value  # After the model card's; no photos.
  assert segments["samples"].sum() == 8
  assert list(segments.columns) == [
      "class",
      "start (s)",
      "end (s)",
      "duration (s)",
      "samples",
      "mean confidence",
  ]
  assert len(at.image) == 2  # The timeline figures.
  assert [button.label for button in at.download_button] == [
      "Download timeline (CSV)"
  ] * 2
  assert at.caption[1].value.startswith("8 frames, one every 0.25 s of 2.")
  at.sidebar.slider[0].set_value(1.0).run()  # All unsure: no new work.
  assert "100% unsure (below 100%)" in at.caption[1].value
  assert calls == ["drive.mkv", "cut.mkv"]


def test_page_classifies_a_photo_from_the_camera(workdir, monkeypatch):
  at = page(monkeypatch, "--workdir", workdir)
  assert not at.camera_input  # Until asked for: browsers ask to allow it.
  at.toggle[0].set_value(True).run()
  at.camera_input[0].set_value(("image.jpg", GOOD_JPEG, "image/jpeg")).run()

  assert not at.exception, at.exception
  name = f"camera-{uploads.digest(GOOD_JPEG)[:8]}.jpg"
  assert name in metrics(at)
  assert list(at.dataframe[1].value["file"]) == [name]


def test_page_classifies_example_images_without_uploads(
    workdir, classifier, data_root, monkeypatch
):
  examples = os.path.join(data_root, "test", "gravel")
  at = page(monkeypatch, "--workdir", workdir, "--examples", examples)
  predicted = metrics(at)
  paths = [
      os.path.join(examples, name) for name in sorted(os.listdir(examples))
  ]
  assert len(paths) == 4
  for result in classifier.predict_files(paths):
    assert predicted[os.path.basename(result["path"])] == result["class"]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda path, workdir: None, "is not a roadflax workdir (no run.json)"),
        (
            lambda path, workdir: shutil.copytree(
                workdir,
                path,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("classify"),
            ),
            "has no trained classification stage yet",
        ),
    ],
)
def test_page_without_a_classifier_says_so(
    make, message, workdir, tmp_path, monkeypatch
):
  make(str(tmp_path), workdir)
  at = page(monkeypatch, "--workdir", str(tmp_path))
  [error] = at.error
  assert message in error.value
  assert not at.file_uploader and not at.sidebar.selectbox


def test_page_without_workdirs_says_how_to_give_them(monkeypatch):
  at = page(monkeypatch)
  assert [error.value for error in at.error] == [app.NO_RUNS]
  assert not at.file_uploader and not at.text_input


# ------------------------------------------------------------- --mode=serve


def test_serve_refuses_a_workdir_without_a_classifier(tmp_path):
  result = helpers.run_main("--mode=serve", f"--workdir={tmp_path}")
  assert result.stderr.splitlines() == [
      f"error: {tmp_path} is not a roadflax workdir (no run.json) and holds"
      " none with a trained classification stage"
  ]
  assert result.returncode == 2


def test_serve_needs_a_workdir():
  result = helpers.run_main("--mode=serve")
  assert helpers.error_line(result) == (
      "error: --mode=serve needs --workdir=DIR: a trained workdir"
      " (repeatable) or a folder of them"
  )


def test_serve_refuses_an_unknown_stage(workdir):
  with pytest.raises(
      UserError,
      match=re.escape(
          "no run has a trained classification stage 'pretrain'"
          f" ({workdir} has classify)"
      ),
  ):
    serving.serve([workdir], stage="pretrain", address="localhost", port=1)


def test_serve_passes_every_path_on_to_the_app(workdir, runs_folder):
  paths = [workdir, str(runs_folder)]
  command = serving._streamlit_command(
      paths,
      stage="classify",
      address="localhost",
      port=1,
      label=serving.LabelFolders(("drives", "more"), "labelled"),
  )
  script_args = command[command.index("--") + 1 :]
  assert script_args == [
      "--workdir",
      workdir,
      "--workdir",
      str(runs_folder),
      "--input",
      "drives",
      "--input",
      "more",
      "--output",
      "labelled",
      "--stage",
      "classify",
  ]
  assert vars(app._script_args(script_args)) == {
      "workdir": paths,
      "stage": "classify",
      "input": ["drives", "more"],
      "output": "labelled",
      "examples": os.environ.get(app.EXAMPLES_ENV),
  }


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def answers(url):
  try:
    with urllib.request.urlopen(url, timeout=2) as response:
      return response.read().decode()
  except OSError:
    return None


def wait_until_healthy(url, server, log_path, seconds=120):
  deadline = time.monotonic() + seconds
  while answers(url + "_stcore/health") != "ok":
    if server.poll() is not None or time.monotonic() > deadline:
      log = log_path.read_text()[-3000:]
      pytest.fail(f"the server did not come up:\n{log}")
    time.sleep(0.5)


def children(pid):
  """Process ids of `pid`'s children (Linux), to stop them should it not."""
  try:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
      return [int(child) for child in f.read().split()]
  except OSError:
    return []


def stop(server, streamlit_pids):
  """Ctrl-C, as a user stops it; SIGKILL for whatever outlives it."""
  server.send_signal(signal.SIGINT)
  try:
    server.wait(timeout=30)
  except subprocess.TimeoutExpired:
    server.kill()
    server.wait()
  for pid in streamlit_pids:
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        if b"streamlit" in f.read():
          os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
      pass  # Gone already, as it should be.


def browse(url, profile, *, wait_for, upload=(), size=(1280, 900), seconds=90):
  """(PNG screenshot, HTML) of `url` in headless Chromium once `wait_for`
  shows, after giving the page's file input the files `upload`.

  Streamlit draws its page from a websocket after the load event, which the
  one-shot `--screenshot` and `--dump-dom` flags do not wait for (their
  virtual time runs ahead of the socket): they catch the loading skeleton.
  So Chromium is driven over its DevTools protocol, waiting in real time.
  """
  browser = subprocess.Popen(
      [
          shutil.which("chromium"),
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
          f"--user-data-dir={profile}",
          "--remote-debugging-port=0",
          "about:blank",
      ],
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  deadline = time.monotonic() + seconds
  try:
    port_file = profile / "DevToolsActivePort"  # Written once it listens.
    while not port_file.exists():
      assert time.monotonic() < deadline, "Chromium did not start"
      time.sleep(0.1)
    port = port_file.read_text().split()[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
      [tab] = [t for t in json.load(r) if t["type"] == "page"]
    with websockets.sync.client.connect(
        tab["webSocketDebuggerUrl"], max_size=None
    ) as devtools:
      call = functools.partial(devtools_call, devtools, itertools.count())
      call(
          "Emulation.setDeviceMetricsOverride",
          width=size[0],
          height=size[1],
          deviceScaleFactor=1,
          mobile=False,
      )
      call("Page.navigate", url=url)
      if upload:
        give_files(call, upload, deadline)
      wait_until(
          call,
          "(document.body ? document.body.innerText : '').includes("
          f"{json.dumps(wait_for)})",
          deadline,
      )
      time.sleep(1)  # Let the images and charts finish drawing.
      png = base64.b64decode(call("Page.captureScreenshot")["data"])
      html = call(
          "Runtime.evaluate", expression="document.documentElement.outerHTML"
      )
      return png, html["result"]["value"]
  finally:
    browser.kill()
    browser.wait()


def give_files(call, paths, deadline):
  """Chooses `paths` in the page's file input, once it shows, as a user
  does in the file dialog."""
  wait_until(call, "!!document.querySelector('input[type=file]')", deadline)
  document = call("DOM.getDocument")["root"]["nodeId"]
  uploader = call(
      "DOM.querySelector", nodeId=document, selector="input[type=file]"
  )
  call(
      "DOM.setFileInputFiles",
      files=[str(path) for path in paths],
      nodeId=uploader["nodeId"],
  )


def wait_until(call, expression, deadline):
  """Waits until the JavaScript `expression` is true in the page."""
  while not call("Runtime.evaluate", expression=expression)["result"]["value"]:
    assert time.monotonic() < deadline, f"never true: {expression}"
    time.sleep(0.5)


def devtools_call(devtools, ids, method, **params):
  """One DevTools command's result; the events sent meanwhile are skipped."""
  call_id = next(ids)
  devtools.send(json.dumps({"id": call_id, "method": method, "params": params}))
  while True:
    message = json.loads(devtools.recv())
    if message.get("id") == call_id:
      return message["result"]


@pytest.mark.slow
def test_served_page_renders_in_a_browser(runs_folder, data_root, tmp_path):
  if shutil.which("chromium") is None:
    pytest.skip("chromium is not installed (apt-get install chromium)")
  examples = tmp_path / "examples"
  examples.mkdir()
  for name in ("asphalt", "gravel"):
    shutil.copy(f"{data_root}/test/{name}/000.jpg", examples / f"{name}.jpg")
  video = tmp_path / "drive.mkv"
  video.write_bytes(tiny_video(seconds=4))
  port = free_port()
  url = f"http://localhost:{port}/"
  log_path = tmp_path / "server.log"
  with open(log_path, "w", encoding="utf-8") as log:
    server = subprocess.Popen(
        [
            sys.executable,
            "main.py",
            "--mode=serve",
            f"--workdir={runs_folder}",
            f"--port={port}",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            app.EXAMPLES_ENV: str(examples),
        },
    )
  streamlit_pids = []
  try:
    wait_until_healthy(url, server, log_path)
    streamlit_pids = children(server.pid)
    # The example photos' cards show first, then the video's.
    png, html = browse(
        url,
        tmp_path / "chromium",
        wait_for="Download timeline (CSV)",
        upload=[video],
        size=(1280, 2200),
    )
  finally:
    stop(server, streamlit_pids)

  (tmp_path / "app.png").write_bytes(png)  # To look at.
  pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float32)
  assert pixels.shape == (2200, 1280)
  assert pixels.std() > 10, "the screenshot is blank"
  assert f"<title>{app.PAGE_TITLE}</title>" in html
  for shown in (
      f"Model: {runs_folder / 'a'} · classify",
      "All photos, least confident first",
      "Download predictions (CSV)",
      "what the model saw, and where it saw",
      "Take a photo with the camera",
      "16 frames, one every 0.25 s",
  ):
    assert shown in html
  assert server.returncode == 0, log_path.read_text()[-3000:]
  assert answers(url + "_stcore/health") is None  # Streamlit stopped too.
