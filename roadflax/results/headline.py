"""The README's tables of measured figures, rendered from docs/results:
the headline figures, and accuracy with few labels (the label-efficiency
benchmark's tables and plots).

The README is read where no docs build runs (GitHub, PyPI), so each block is
written into it between two markers (`<!-- NAME:start -->`, `:end`) by

  python -m roadflax.results.headline          # rewrites README.md's blocks

and a test fails when a README block differs from what the results files
give: a re-measured figure reaches the README by running this.
"""

import os
import re

from roadflax.results import records

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
RESULTS = os.path.join(ROOT, "docs", "results")
README = os.path.join(ROOT, "README.md")
# (title, results file): the label-efficiency runs the README shows.
LABEL_EFFICIENCY = (
    ("Photographs never seen in training", "label_efficiency"),
    ("roadtex", "label_efficiency_roadtex"),
)

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


def labels_tables(results_dir: str = RESULTS) -> str:
  """Each label-efficiency run's table (its markdown file) and plot."""
  parts = []
  for title, name in LABEL_EFFICIENCY:
    record = records.read(results_dir, name)
    settings = record["settings"]
    with open(os.path.join(results_dir, f"{name}.md")) as f:
      tables = f.read().strip()
    parts += [
        (
            f"**{title}**: test accuracy, mean ± std over seeds"
            f" {settings['seeds']}, {settings['image_size']} px"
            f" ([{name}.json](docs/results/{name}.json), {record['date']})"
        ),
        "",
        tables,
        "",
        (
            f"![{title}: accuracy against labels per class]"
            f"(docs/results/{name}.png)"
        ),
        "",
    ]
  return "\n".join(parts).rstrip("\n")


BLOCKS = {"headline": table, "labels": labels_tables}


def _markers(name: str) -> tuple[str, str]:
  return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _block(readme: str, name: str) -> re.Match:
  start, end = _markers(name)
  match = re.search(
      re.escape(start) + r"\n(.*?)" + re.escape(end), readme, re.S
  )
  if match is None:
    raise ValueError(f"README.md has no {start} ... {end} block")
  return match


def readme_block(readme: str, name: str = "headline") -> str:
  """The text between the markers of block `name` in `readme`'s text."""
  return _block(readme, name).group(1).rstrip("\n")


def main() -> None:
  with open(README) as f:
    readme = f.read()
  new = readme
  for name, render in BLOCKS.items():
    block = _block(new, name)
    start, end = _markers(name)
    new = (
        new[: block.start()]
        + f"{start}\n{render()}\n{end}"
        + new[block.end() :]
    )
  with open(README, "w") as f:
    f.write(new)
  print("README.md:", "unchanged" if new == readme else "updated")


if __name__ == "__main__":
  main()
