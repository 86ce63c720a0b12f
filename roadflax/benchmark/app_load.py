"""The app's model under a crowd: `--sessions` threads (browser sessions)
each send `--photos` photos at the same moment, one request per photo as the
app's per-file cache sends them, through the classifier's Grad-CAM pass;
the latency of each session's photos, with a pass per request (each session
runs the model itself) and with the shared `serve.batcher.Batcher`,
alternated over `--repeats` rounds after compiling every batch shape:

  python -m roadflax.benchmark.app_load --workdir=runs/roads \\
      [--sessions=20] [--photos=2] [--repeats=3] [--output=app_load.json]

It times the model's share of serving a crowd; the browsers and Streamlit's
own work are not in it.
"""

import argparse
import statistics
import sys
import threading
import time
from typing import Any, Callable

import numpy as np

from roadflax.files import atomic_write_json
from roadflax.results import records


def _crowd(
    call: Callable[[np.ndarray], Any], sessions: int, photos: int, size: int
) -> dict[str, float]:
  """p50 and p95 of the sessions' latencies, and the crowd's wall time."""
  latencies = [0.0] * sessions
  pixels = np.random.default_rng(0).integers(
      0, 256, (photos, 1, size, size, 3), dtype=np.uint8
  )

  def session(k: int) -> None:
    start = time.perf_counter()
    for photo in pixels:
      call(photo)
    latencies[k] = time.perf_counter() - start

  threads = [
      threading.Thread(target=session, args=(k,)) for k in range(sessions)
  ]
  start = time.perf_counter()
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  return {  # to 10 ms: the rounds differ by more
      "p50_s": round(float(np.percentile(latencies, 50)), 2),
      "p95_s": round(float(np.percentile(latencies, 95)), 2),
      "all_served_s": round(time.perf_counter() - start, 2),
  }


def measure(
    workdir: str, sessions: int = 20, photos: int = 2, repeats: int = 3
) -> dict[str, Any]:
  """Each way's rounds and its median p50, p95 and wall time."""
  from roadflax.serve import batcher, model, predict

  trained = predict.Classifier.load(workdir).trained
  explain = trained.explain_function()
  size = trained.image_size
  batch = 1
  while batch <= model.PREDICT_BATCH_SIZE:  # compile every shape first
    explain(np.zeros((batch, size, size, 3), np.uint8))
    batch *= 2
  ways = {
      "pass per request": lambda images: model.in_batches(explain, images),
      "batcher": batcher.Batcher(explain),
  }
  rounds = {name: [] for name in ways}
  for _ in range(repeats):
    for name, call in ways.items():
      rounds[name].append(_crowd(call, sessions, photos, size))
  return {
      name: {
          **{
              key: statistics.median(r[key] for r in runs)
              for key in ("p50_s", "p95_s", "all_served_s")
          },
          "rounds": runs,
      }
      for name, runs in rounds.items()
  }


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--sessions", type=int, default=20)
  parser.add_argument("--photos", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--output", default="")
  args = parser.parse_args(argv)
  result = {
      **records.provenance(
          " ".join(["python -m roadflax.benchmark.app_load", *sys.argv[1:]])
      ),
      "workdir": args.workdir,
      "sessions": args.sessions,
      "photos": args.photos,
      "ways": measure(args.workdir, args.sessions, args.photos, args.repeats),
  }
  for name, figures in result["ways"].items():
    print(
        f"{name}: p50 {figures['p50_s']:.2f} s, p95 {figures['p95_s']:.2f} s,"
        f" all served in {figures['all_served_s']:.2f} s"
    )
  if args.output:
    atomic_write_json(args.output, result)
  return result


if __name__ == "__main__":
  main()
