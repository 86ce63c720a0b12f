"""Runs a training command and writes what it measured as a results file.

  python -m roadflax.results.record --name=demo -- \\
      python main.py --config=configs/synthetic.py --workdir=runs/demo

runs the command after `--`, then writes docs/results/NAME.json (or
--output_dir): its wall time and peak memory (the largest process it
started), and, for a training command, from its workdir each stage's summary
and each classifier's test accuracy, per-class recall and calibration, and the near-duplicate
count of split.json; with
the command, machine, commit and date (`records.provenance`). Any other
command (the test suite, a benchmark) gets its wall time and memory. The docs cite the figures by name,
so the way to re-measure one is to run this line again.
"""

import argparse
import os
import resource
import shlex
import subprocess
import sys
import time
from typing import Any

from roadflax import files
from roadflax.errors import UserError
from roadflax.results import records
from roadflax.runs import workdirs


def measure(command: list[str]) -> dict[str, float]:
  """Runs `command`; its wall seconds and peak resident memory in bytes."""
  started = time.time()
  completed = subprocess.run(command, check=False)
  if completed.returncode != 0:
    raise UserError(
        "the measured command failed with exit status"
        f" {completed.returncode}: {shlex.join(command)}"
    )
  peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  return {
      "wall_seconds": round(time.time() - started, 1),
      "peak_memory_bytes": peak_kib * 1024,
  }


def workdir_figures(workdir: str) -> dict[str, Any]:
  """The figures a finished workdir holds, stage by stage."""
  config = files.read_json(os.path.join(workdir, workdirs.CONFIG_FILE))
  stages = {}
  for name in config["stage_order"]:
    stage_dir = os.path.join(workdir, name)
    summary_path = os.path.join(stage_dir, workdirs.SUMMARY_FILE)
    if not os.path.isfile(summary_path):
      raise UserError(f"stage {name!r} of {workdir} did not finish")
    stage = dict(files.read_json(summary_path))
    report_path = os.path.join(stage_dir, "report.json")
    if os.path.isfile(report_path):
      report = files.read_json(report_path)
      stage["test"] = {
          "images": report["num_examples"],
          "accuracy": report["accuracy"],
          "recall": {
              name: figures["recall"]
              for name, figures in report["per_class"].items()
          },
          "calibration": {
              key: report["calibration"][key]
              for key in (
                  "temperature",
                  "fitted_temperature",
                  "guard",
                  "ece_before",
                  "ece_after",
                  "nll_before",
                  "nll_after",
              )
          },
      }
    stages[name] = stage
  figures: dict[str, Any] = {"stages": stages}
  split = files.read_json_if_present(os.path.join(workdir, workdirs.SPLIT_FILE))
  if split and "near_duplicates" in split:
    near = split["near_duplicates"]
    figures["near_duplicates"] = {
        part: {
            "images": near["images"][part],
            "with_near_duplicate_in_train": near[part][
                "images_with_near_duplicate"
            ],
        }
        for part in ("val", "test")
        if part in near
    }
  return figures


def _workdir(command: list[str]) -> str | None:
  """The --workdir=DIR of a training command; None for another command."""
  for i, arg in enumerate(command):
    if arg.startswith("--workdir="):
      return arg[len("--workdir=") :]
    if arg == "--workdir" and i + 1 < len(command):
      return command[i + 1]
  return None


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  if "--" not in argv:
    raise SystemExit(
        "usage: python -m roadflax.results.record --name=NAME"
        " [--output_dir=docs/results] -- COMMAND ..."
    )
  split = argv.index("--")
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--name", required=True, help="results file name")
  parser.add_argument("--output_dir", default="docs/results")
  args = parser.parse_args(argv[:split])
  command = argv[split + 1 :]
  try:
    workdir = _workdir(command)
    figures = measure(command)
    if workdir is not None and os.path.isfile(
        os.path.join(workdir, workdirs.CONFIG_FILE)
    ):
      figures.update(workdir_figures(workdir))
  except UserError as error:
    raise SystemExit(f"error: {error}") from None
  path = os.path.join(args.output_dir, f"{args.name}.json")
  records.write(path, figures, shlex.join(command))
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
