"""A crowd in real browsers: the app served for a workdir, one headless
Chromium with `--tabs` tabs (each its own Streamlit session) on the Classify
page, and every tab uploading two photos at the same moment; per round, the
time from a tab's upload until both photos' cards are on its page (p50, p95,
all served) and the CPU seconds the server and the browsers used.

  python tools/app_browser_load.py --workdir=runs/roads --photos=/tmp/roads \\
      [--tabs=20] [--rounds=3] [--output=docs/results/app_browser_load.json]

Each round uploads photos no tab sent before (the app caches by content), so
every round classifies 2 x tabs new photos; the first round also compiles
the model's batch shapes. Uses the browser helpers of the app's tests, so it
runs from the repository root; needs Debian's `chromium`.
"""

import argparse
import glob
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from roadflax.files import atomic_write_json  # noqa: E402
from roadflax.results import records  # noqa: E402
from tests.test_app import children, free_port, stop  # noqa: E402
from tests.test_app import wait_until_healthy  # noqa: E402
from tests.test_label_page import open_browser  # noqa: E402

_UPLOADER = "[data-testid=stFileUploaderDropzoneInput]"
_IDLE = "[data-test-script-state=notRunning]"


def _value(tab, expression: str) -> Any:
  return tab.call("Runtime.evaluate", expression=expression)["result"].get(
      "value"
  )


def _cards_shown(tab, names: list[str]) -> int:
  """How many of `names` have their card on the page, once its script ran."""
  return _value(
      tab,
      f"document.querySelector('{_IDLE}') ? Array.from(document"
      ".querySelectorAll('[data-testid=stMetric]')).filter(e =>"
      f" {json.dumps(names)}.some(n => e.innerText.includes(n))).length : 0",
  )


def _upload(tab, files: list[str], deadline: float) -> float | None:
  """Seconds until both files' cards are shown; None past the deadline."""
  document = tab.call("DOM.getDocument", depth=-1, pierce=True)
  node = tab.call(
      "DOM.querySelector", nodeId=document["root"]["nodeId"], selector=_UPLOADER
  )["nodeId"]
  start = time.monotonic()
  tab.call("DOM.setFileInputFiles", files=files, nodeId=node)
  names = [os.path.basename(f) for f in files]
  while _cards_shown(tab, names) < len(names):
    if time.monotonic() > deadline:
      return None
    time.sleep(0.2)
  return time.monotonic() - start


def _cpu_seconds(pid: int) -> float:
  """User and system CPU seconds of `pid` and all its descendants."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
      fields = f.read().rsplit(")", 1)[1].split()
  except OSError:
    return 0.0  # gone meanwhile
  own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
  return own + sum(_cpu_seconds(child) for child in children(pid))


def _round(tabs, photos, first: int, seconds: float) -> dict[str, Any]:
  deadline = time.monotonic() + seconds
  latencies: list[float | None] = [None] * len(tabs)

  def one(k: int) -> None:
    files = [photos[(first + 2 * k + i) % len(photos)] for i in range(2)]
    latencies[k] = _upload(tabs[k], files, deadline)

  threads = [threading.Thread(target=one, args=(k,)) for k in range(len(tabs))]
  start = time.monotonic()
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  served = [x for x in latencies if x is not None]
  return {
      "served": len(served),
      "sessions": len(tabs),
      "p50_s": round(float(np.percentile(served, 50)), 2) if served else None,
      "p95_s": round(float(np.percentile(served, 95)), 2) if served else None,
      "all_served_s": round(time.monotonic() - start, 2),
  }


def measure(workdir: str, photos: list[str], tabs: int, rounds: int) -> list:
  """Each round's figures, the app served for `workdir` in this process."""
  scratch = pathlib.Path(tempfile.mkdtemp(prefix="app_browser_load_"))
  port = free_port()
  url = f"http://localhost:{port}/"
  log_path = scratch / "server.log"
  with open(log_path, "w", encoding="utf-8") as log:
    server = subprocess.Popen(
        [sys.executable, "main.py", "--mode=serve", f"--workdir={workdir}",
         f"--port={port}"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
  browser, results, streamlit = None, [], []
  try:
    wait_until_healthy(url, server, log_path)
    streamlit = children(server.pid)
    browser, pages = open_browser(
        scratch / "chromium", url, tabs, time.monotonic() + 300
    )
    for tab in pages:
      while not _value(
          tab, f"!!document.querySelector('{_UPLOADER}') &&"
          f" !!document.querySelector('{_IDLE}')"
      ):  # fmt: skip
        time.sleep(0.3)
    for r in range(rounds):
      before = (_cpu_seconds(server.pid), _cpu_seconds(browser.pid))
      figures = _round(pages, photos, 2 * tabs * r, 600)
      after = (_cpu_seconds(server.pid), _cpu_seconds(browser.pid))
      figures["server_cpu_s"] = round(after[0] - before[0], 1)
      figures["browsers_cpu_s"] = round(after[1] - before[1], 1)
      print(f"round {r}: {figures}", flush=True)
      results.append(figures)
  finally:
    if browser is not None:
      browser.kill()
      browser.wait()
    stop(server, streamlit)
  return results


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--photos", required=True, help="a folder of JPEGs")
  parser.add_argument("--tabs", type=int, default=20)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--output", default="")
  args = parser.parse_args()
  photos = sorted(glob.glob(f"{args.photos}/**/*.jpg", recursive=True))
  rounds = measure(args.workdir, photos, args.tabs, args.rounds)
  if args.output:
    atomic_write_json(
        args.output,
        {
            **records.provenance(
                " ".join(["python tools/app_browser_load.py", *sys.argv[1:]])
            ),
            "workdir": args.workdir,
            "tabs": args.tabs,
            "photos_per_tab": 2,
            "rounds": rounds,
        },
    )


if __name__ == "__main__":
  main()
