"""The app's Label page: in Streamlit's AppTest (its widgets), and in headless
Chromium as a person uses it (keys, a refresh midway, two sessions at once)."""

import base64
import csv
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from streamlit.testing.v1 import AppTest
import websockets.sync.client

from roadflax.labelling import queue, session, store
from roadflax.errors import UserError
from roadflax.serve import label_page, serving
from tests import drive_video, helpers
from tests.test_app import children, devtools_call, free_port, stop
from tests.test_app import wait_until_healthy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_SCRIPT = os.path.join(ROOT, "roadflax", "serve", "app.py")


@pytest.fixture(scope="module")
def drives(tmp_path_factory):
  """A folder holding the test drive's video."""
  built = helpers.built_once(tmp_path_factory, "drive", drive_video.build)
  return os.path.join(built, "videos")


def label_script(tmp_path):
  """A script that draws the Label page alone, as app.py's navigation does."""
  script = tmp_path / "label_page_app.py"
  script.write_text(
      "import sys\n"
      "from roadflax.serve import app\n"
      "app._label_page(app._script_args(sys.argv[1:]))\n",
      encoding="utf-8",
  )
  return str(script)


def rows_of(path):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def test_the_label_page_queues_a_drive_and_writes_a_label(
    trained_workdir, drives, tmp_path, monkeypatch
):
  out = tmp_path / "labelled"
  monkeypatch.setattr(
      sys,
      "argv",
      ["app.py", "--workdir", trained_workdir, "--input", os.path.dirname(drives),
       "--output", str(out)],
  )  # fmt: skip
  at = AppTest.from_file(label_script(tmp_path), default_timeout=120)
  at.run()
  assert not at.exception, at.exception
  assert at.header[0].value == label_page.TITLE
  folder = at.selectbox[0]
  assert folder.options == [os.path.dirname(drives), drives]
  assert not at.text_input  # no box to type a path into
  folder.select(drives).run()
  [queue_button] = [b for b in at.button if b.label == "Queue frames"]
  queue_button.click().run()
  assert not at.exception, at.exception
  assert any("least confident first" in s.value for s in at.success)
  queued = queue.read_queue(str(out))
  assert len(queued) >= 15
  buttons = [b for b in at.button if b.key and b.key.startswith("label:")]
  assert [b.label for b in buttons] == [*helpers.CLASSES, "skip", "unknown"]
  first = queued[0]
  at.button(key=f"label:{helpers.CLASSES[1]}").click().run()
  assert not at.exception, at.exception
  [row] = rows_of(out / store.LABELS_FILE)
  assert (row["id"], row["label"]) == (first["id"], helpers.CLASSES[1])
  assert os.path.isfile(out / row["file"])
  # The next frame is shown; skip writes a row and no image.
  at.button(key="label:skip").click().run()
  rows = rows_of(out / store.LABELS_FILE)
  assert [r["id"] for r in rows] == [first["id"], queued[1]["id"]]
  assert rows[1]["file"] == ""
  assert f"{len(queued) - 2} of {len(queued)} queued frames left" in (
      at.caption[0].value
  )


def test_the_label_page_without_folders_says_how_to_give_them(
    trained_workdir, tmp_path, monkeypatch
):
  monkeypatch.setattr(sys, "argv", ["app.py", "--workdir", trained_workdir])
  at = AppTest.from_file(label_script(tmp_path), default_timeout=120)
  at.run()
  assert not at.exception, at.exception
  assert at.info[0].value == label_page.NO_FOLDERS


def test_sessions_on_one_queue_are_shown_different_frames():
  left = [{"id": str(k)} for k in range(3)]
  claims = session.Claims(seconds=60)
  assert claims.next_frame("a", left)["id"] == "0"
  assert claims.next_frame("b", left)["id"] == "1"
  assert claims.next_frame("a", left)["id"] == "0"  # still a's
  assert claims.next_frame("a", left[1:])["id"] == "2"  # 0 labelled: moves on
  assert claims.next_frame("c", left[1:])["id"] == "1"  # all claimed: the first
  assert claims.next_frame("c", []) is None
  claims.seconds = 0  # a closed tab's claim runs out
  assert claims.next_frame("d", left)["id"] == "0"


def test_folders_resolve_only_to_the_given_ones(drives, tmp_path):
  folders = session.Folders.under([os.path.dirname(drives)])
  assert folders.resolve(drives) == os.path.realpath(drives)
  for outside in ("/", os.path.join(drives, ".."), str(tmp_path)):
    with pytest.raises(Exception, match="only the --input folders"):
      folders.resolve(outside)


# ------------------------------------------------------------- in a browser


class Tab:
  """One browser tab on the page, driven over the DevTools protocol."""

  def __init__(self, socket_url):
    self.socket = websockets.sync.client.connect(socket_url, max_size=None)
    self.call = functools.partial(devtools_call, self.socket, itertools.count())

  def press(self, key):
    for kind in ("keyDown", "keyUp"):
      self.call(
          "Input.dispatchKeyEvent",
          type=kind,
          key=key,
          text=key if kind == "keyDown" else "",
          code=f"Digit{key}" if key.isdigit() else f"Key{key.upper()}",
          windowsVirtualKeyCode=ord(key.upper()),
      )

  def shown_frame(self):
    """The source and time of the frame on the page, once its script has
    run (its buttons take keys then); "" before."""
    return self.call(
        "Runtime.evaluate",
        expression=(
            "document.querySelector('[data-test-script-state=notRunning]')"
            " ? Array.from(document.querySelectorAll('strong'))"
            ".map(e => e.innerText).filter(t => t.includes(' at '))"
            ".join('|') : ''"
        ),
    )["result"]["value"]


def open_browser(profile, url, tabs, deadline):
  """A headless Chromium with `tabs` tabs on `url`; (process, [Tab])."""
  browser = subprocess.Popen(
      [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
       "--no-first-run", "--disable-background-networking",
       "--disable-component-update", "--disable-sync",
       "--disable-renderer-backgrounding",
       "--disable-background-timer-throttling",
       f"--user-data-dir={profile}", "--remote-debugging-port=0", url],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
  )  # fmt: skip
  port_file = profile / "DevToolsActivePort"
  while not port_file.exists():
    assert time.monotonic() < deadline, "Chromium did not start"
    time.sleep(0.1)
  port = port_file.read_text().split()[0]
  base = f"http://127.0.0.1:{port}/json"
  for _ in range(tabs - 1):
    request = urllib.request.Request(f"{base}/new?{url}", method="PUT")
    urllib.request.urlopen(request).close()
  with urllib.request.urlopen(f"{base}/list") as r:
    pages = [t for t in json.load(r) if t["type"] == "page"]
  return browser, [Tab(p["webSocketDebuggerUrl"]) for p in pages]


def labels_written(path):
  return len(rows_of(path)) if os.path.exists(path) else 0


def wait_for_frame(tab, deadline, other_than=None):
  """Waits until the page shows a frame (another than `other_than`)."""
  while True:
    shown = tab.shown_frame()
    if shown and shown != other_than:
      return shown
    assert time.monotonic() < deadline, f"no new frame after {other_than}"
    time.sleep(0.3)


@pytest.mark.slow
def test_a_person_labels_twenty_frames_with_the_keyboard_in_two_tabs(
    trained_workdir, drives, tmp_path
):
  """Keys 1-3 label, a refresh midway loses nothing, and two tabs labelling
  the same queue at once write every frame exactly once."""
  if shutil.which("chromium") is None:
    pytest.skip("chromium is not installed (apt-get install chromium)")
  out = tmp_path / "labelled"
  subprocess.run(
      [sys.executable, "main.py", "--mode=label",
       f"--workdir={trained_workdir}", f"--input={drives}", f"--output={out}"],
      cwd=ROOT, check=True, capture_output=True,
  )  # fmt: skip
  queued = queue.read_queue(str(out))
  assert len(queued) >= 20
  port = free_port()
  url = f"http://localhost:{port}/label"
  log_path = tmp_path / "server.log"
  with open(log_path, "w", encoding="utf-8") as log:
    server = subprocess.Popen(
        [sys.executable, "main.py", "--mode=serve",
         f"--workdir={trained_workdir}", f"--port={port}",
         f"--input={drives}", f"--output={out}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
  streamlit_pids, browser = [], None
  labels = out / store.LABELS_FILE
  deadline = time.monotonic() + 400
  try:
    wait_until_healthy(f"http://localhost:{port}/", server, log_path)
    streamlit_pids = children(server.pid)
    browser, (first, second) = open_browser(
        tmp_path / "chromium", url, 2, deadline
    )
    shown = {id(tab): wait_for_frame(tab, deadline) for tab in (first, second)}
    assert shown[id(first)] != shown[id(second)]  # each its own frame
    keys, presses, refreshed = itertools.cycle("123"), 0, False
    while labels_written(labels) < 20:
      tab = (first, second)[presses % 2]
      presses += 1
      tab.press(next(keys))
      shown[id(tab)] = wait_for_frame(tab, deadline, shown[id(tab)])
      if labels_written(labels) >= 10 and not refreshed:  # a refresh midway
        first.call("Page.reload")
        shown[id(first)] = wait_for_frame(first, deadline)
        refreshed = True
    assert presses == 20  # every key press wrote its label
    png = base64.b64decode(first.call("Page.captureScreenshot")["data"])
    (tmp_path / "label_page.png").write_bytes(png)  # to look at
  finally:
    if browser is not None:
      browser.kill()
      browser.wait()
    stop(server, streamlit_pids)
  rows = rows_of(labels)
  ids = [r["id"] for r in rows]
  assert len(ids) == len(set(ids)), "a frame was written twice"
  assert len(rows) == 20
  assert set(ids) <= {r["id"] for r in queued}
  images = [
      os.path.join(label, group, name)
      for label in helpers.CLASSES
      if os.path.isdir(out / label)
      for group in os.listdir(out / label)
      for name in os.listdir(out / label / group)
  ]
  assert sorted(images) == sorted(r["file"] for r in rows)
  assert {r["label"] for r in rows} <= set(helpers.CLASSES)


def test_the_label_folders_are_both_given_and_exist(tmp_path):
  with pytest.raises(UserError, match="needs both --input"):
    serving.LabelFolders((str(tmp_path),), None).check()
  with pytest.raises(UserError, match="needs both --input"):
    serving.LabelFolders((), str(tmp_path)).check()
  with pytest.raises(UserError, match="no such folder"):
    serving.LabelFolders((str(tmp_path / "gone"),), str(tmp_path)).check()
  serving.LabelFolders((str(tmp_path),), str(tmp_path / "new")).check()
  serving.LabelFolders().check()  # no Label page folders: fine
