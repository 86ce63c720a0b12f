"""The web app: each upload's fate, the page as Streamlit renders it,
`--mode=serve`'s checks and, marked slow, the served page in headless Chromium.

One tiny workdir is trained per module (both stages, a few steps) and shared.
The page is driven by Streamlit's AppTest, in this process: the app reads its
script arguments from `sys.argv`, which the tests set as `streamlit run ...
-- --workdir=W` would.
"""

import base64
import functools
import io
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib

import numpy as np
import pytest
import tensorflow as tf
import websockets.sync.client
from PIL import Image
from streamlit.testing.v1 import AppTest

from roadflax.data import preprocess
from roadflax.serve import app, predict, serving, uploads
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


def describe(files, classifier, autoencoder=None):
  return uploads.describe_uploads(
      files, classifier, autoencoder, max_pixels=MAX_PIXELS
  )


def test_uploads_go_through_each_model_in_padded_batches(
    classifier, autoencoder, monkeypatch
):
  calls = []
  for model, method in ((classifier, "predict"), (autoencoder, "reconstruct")):
    original = getattr(model, method)
    monkeypatch.setattr(
        model,
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


def test_page_shows_the_model_card(workdir, classifier, monkeypatch):
  at = page(monkeypatch, "--workdir", workdir)

  assert at.title[0].value == app.PAGE_TITLE
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
  assert "reconstructions by" in at.caption[0].value
  assert at.sidebar.selectbox[0].value == "classify"
  assert not at.error


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
  assert [image.captions for image in at.image] == [
      ["what the model saw"],
      ["the autoencoder's reconstruction"],
  ] * 2


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
  assert not at.file_uploader


def test_page_asks_for_a_workdir(monkeypatch):
  at = page(monkeypatch)
  assert "Enter a workdir" in at.info[0].value


# ------------------------------------------------------------- --mode=serve


def test_serve_refuses_a_workdir_without_a_classifier(tmp_path):
  result = helpers.run_main("--mode=serve", f"--workdir={tmp_path}")
  assert result.stderr.splitlines() == [
      f"error: {tmp_path} is not a roadflax workdir (no run.json); train "
      "there first"
  ]
  assert result.returncode == 2


def test_serve_refuses_an_unknown_stage(workdir):
  with pytest.raises(
      UserError,
      match=r"no trained classification stage "
      r"'pretrain' \(it has: classify\)",
  ):
    serving.serve(workdir, stage="pretrain", address="localhost", port=1)


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


def browse(url, profile, *, wait_for, size=(1280, 900), seconds=90):
  """(PNG screenshot, HTML) of `url` in headless Chromium once `wait_for` shows.

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
      text = "document.body ? document.body.innerText : ''"
      while (
          wait_for
          not in call("Runtime.evaluate", expression=text)["result"]["value"]
      ):
        assert time.monotonic() < deadline, f"{wait_for!r} never showed"
        time.sleep(0.5)
      time.sleep(1)  # Let the images and charts finish drawing.
      png = base64.b64decode(call("Page.captureScreenshot")["data"])
      html = call(
          "Runtime.evaluate", expression="document.documentElement.outerHTML"
      )
      return png, html["result"]["value"]
  finally:
    browser.kill()
    browser.wait()


def devtools_call(devtools, ids, method, **params):
  """One DevTools command's result; the events sent meanwhile are skipped."""
  call_id = next(ids)
  devtools.send(json.dumps({"id": call_id, "method": method, "params": params}))
  while True:
    message = json.loads(devtools.recv())
    if message.get("id") == call_id:
      return message["result"]


@pytest.mark.slow
def test_served_page_renders_in_a_browser(workdir, data_root, tmp_path):
  if shutil.which("chromium") is None:
    pytest.skip("chromium is not installed (apt-get install chromium)")
  port = free_port()
  url = f"http://localhost:{port}/"
  log_path = tmp_path / "server.log"
  with open(log_path, "w", encoding="utf-8") as log:
    server = subprocess.Popen(
        [
            sys.executable,
            "main.py",
            "--mode=serve",
            f"--workdir={workdir}",
            f"--port={port}",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            app.EXAMPLES_ENV: os.path.join(data_root, "test", "gravel"),
        },
    )
  streamlit_pids = []
  try:
    wait_until_healthy(url, server, log_path)
    streamlit_pids = children(server.pid)
    # The example images' cards show once they are classified.
    png, html = browse(
        url, tmp_path / "chromium", wait_for="what the model saw"
    )
  finally:
    stop(server, streamlit_pids)

  pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float32)
  assert pixels.shape == (900, 1280)
  assert pixels.std() > 10, "the screenshot is blank"
  assert f"<title>{app.PAGE_TITLE}</title>" in html
  assert server.returncode == 0, log_path.read_text()[-3000:]
  assert answers(url + "_stcore/health") is None  # Streamlit stopped too.
