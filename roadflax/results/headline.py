"""The README's table of headline figures, rendered from docs/results.

The README is read where no docs build runs (GitHub, PyPI), so its table is
written into it between two markers by

  python -m roadflax.results.headline          # rewrites README.md's table

and a test fails when the README's table differs from what the results
files give: a re-measured figure reaches the README by running this.
"""

import os
import re

from roadflax.results import records

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
RESULTS = os.path.join(ROOT, "docs", "results")
README = os.path.join(ROOT, "README.md")
START, END = "<!-- headline:start -->", "<!-- headline:end -->"

# (what, results file, figure, style): the rows of the table.
ROWS = (
    (
        "the demo on roadtex (96 px): test accuracy",
        "demo",
        "stages.classify.test.accuracy",
        "percent",
    ),
    ("the demo: wall time with generation", "demo", "wall_seconds", "minutes"),
    (
        (
            "the own-images command on real photographs never seen in training"
            " (224 px, seed 0)"
        ),
        "unseen_roads_default",
        "stages.classify.test.accuracy",
        "percent",
    ),
    (
        "the same on ground photos (other bands of the training photographs)",
        "ground_photos_default",
        "stages.classify.test.accuracy",
        "percent",
    ),
    (
        (
            "classifier training, 224 px, batch 32, against Keras float32 in"
            " the same run"
        ),
        "model_benchmark",
        "vs_reference.jax float32.train",
        "ratio",
    ),
    (
        (
            "CI on a fresh clone (`.ci/run`: install, style checks, the tests"
            " and the docs build)"
        ),
        "ci",
        "wall_seconds",
        "minutes",
    ),
)


def table(results_dir: str = RESULTS) -> str:
  """The headline table, each figure linked to the results file it is from."""
  lines = ["| figure | measured | date | results file |", "|---|---:|---|---|"]
  for what, name, key, style in ROWS:
    record = records.read(results_dir, name)
    value = records.formatted(records.lookup(record, key), style)
    lines.append(
        f"| {what} | {value} | {record['date']} |"
        f" [{name}.json](docs/results/{name}.json) |"
    )
  return "\n".join(lines)


def _block(readme: str) -> re.Match:
  match = re.search(
      re.escape(START) + r"\n(.*?)" + re.escape(END), readme, re.S
  )
  if match is None:
    raise ValueError(f"README.md has no {START} ... {END} block")
  return match


def readme_table(readme: str) -> str:
  """The table between the markers of `readme`'s text."""
  return _block(readme).group(1).rstrip("\n")


def main() -> None:
  with open(README) as f:
    readme = f.read()
  block = _block(readme)
  new = (
      readme[: block.start()]
      + f"{START}\n{table()}\n{END}"
      + readme[block.end() :]
  )
  with open(README, "w") as f:
    f.write(new)
  print(
      "README.md: headline table", "unchanged" if new == readme else "updated"
  )


if __name__ == "__main__":
  main()
