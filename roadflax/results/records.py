"""Results files: measured figures with what measured them.

Every figure the documentation cites lives in one JSON file under
`docs/results/`, written by the command that measures it (the benchmark
suites, the recipe study, `python -m roadflax.results.record` around a
training run): the command, the machine, the commit and the date sit beside
the figures, and the docs site renders them at build time (`docs/macros.py`),
so re-measuring is re-running the command, and no page carries a copy.
"""

import datetime
import json
import os
import platform
import subprocess
from typing import Any

from roadflax.files import atomic_write_json

# Formats for `formatted`: how a figure reads in prose and tables.
STYLES = (
    "plain",
    "percent",
    "int",
    "seconds",
    "minutes",
    "ratio",
    "gib",
    "giga",
)


def provenance(command: str) -> dict[str, str]:
  """What a results file records of its measurement, beside the figures."""
  return {
      "command": command,
      "machine": (
          f"{platform.processor() or platform.machine()},"
          f" {os.cpu_count()} cores"
      ),
      "commit": _commit(),
      "date": datetime.date.today().isoformat(),
  }


def write(path: str, figures: dict[str, Any], command: str) -> None:
  """Writes `figures` to the results file `path` with their provenance."""
  atomic_write_json(path, {**provenance(command), **figures})


def read(directory: str, name: str) -> dict[str, Any]:
  """The results file DIRECTORY/NAME.json; FileNotFoundError naming it."""
  path = os.path.join(directory, f"{name}.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"no results file {path}: run the command that measures it (see"
        " docs/reference/results.md)"
    )
  with open(path) as f:
    return json.load(f)


def lookup(record: dict[str, Any], key: str) -> Any:
  """The figure at a dotted `key` ("phases.folder.images_per_second";
  list items by index); KeyError naming the first missing part."""
  value: Any = record
  for part in key.split("."):
    if isinstance(value, list) and part.isdigit() and int(part) < len(value):
      value = value[int(part)]
    elif isinstance(value, dict) and part in value:
      value = value[part]
    else:
      raise KeyError(f"no {part!r} in the results' {key!r}")
  return value


def formatted(value: Any, style: str = "plain", digits: int = 1) -> str:
  """`value` as the docs print it: percent (a share: 0.96 -> 96.0%), int
  (thousands separated), seconds (458 s), minutes (458 -> 7 min 38 s), ratio
  (0.53x), gib (2.8 GiB from bytes), giga (5.79 from 5.79e9), or plain (as
  written; a float to four significant digits)."""
  if style not in STYLES:
    raise ValueError(f"style {style!r} is not one of {', '.join(STYLES)}")
  if isinstance(value, str) or (
      style == "plain" and not isinstance(value, float)
  ):
    return str(value)
  if style == "plain":  # four significant digits, no exponent below 10,000
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
  if style == "percent":
    return f"{100 * value:.{digits}f}%"
  if style == "int":
    return f"{round(value):,}"
  if style == "seconds":
    return f"{value:.0f} s"
  if style == "minutes":
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds} s"
  if style == "ratio":
    return f"{value:.2f}x"
  if style == "giga":
    return f"{value / 1e9:.2f}"
  return f"{value / 2**30:.{digits}f} GiB"


def _commit() -> str:
  """The checkout's commit, or "" outside a git checkout."""
  try:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    ).stdout.strip()
  except OSError:
    return ""
