"""`--mode=compare`'s table: one row per run (`RunSummary`), as Markdown for
people and as CSV for a spreadsheet."""

import csv
import dataclasses
import io
from typing import Any, Callable

import numpy as np

from roadflax.results import curves

MISSING = "—"


@dataclasses.dataclass(frozen=True)
class RunSummary:
  """One row of the table and the run's curves; None where not (yet) known."""

  name: str
  class_names: tuple[str, ...]
  description: str
  optimizer: str | None
  learning_rate: float | None
  epochs: int | None
  test_accuracy: float | None
  f1: dict[str, float]
  parameters: int | None
  seconds: float | None
  images_per_second: float | None
  accuracy_curves: tuple[curves.Curve, ...]
  reconstruction_curves: tuple[curves.Curve, ...]


def union_class_names(runs: list[RunSummary]) -> list[str]:
  """Every class of every run, in first-seen order."""
  return list(dict.fromkeys(cls for run in runs for cls in run.class_names))


def format_learning_rate(value: float) -> str:
  """0.1, 0.01, then 5e-3, 1e-3, 2.5e-4: as rates are usually written."""
  if 0 < abs(value) < 0.01:
    return np.format_float_scientific(value, trim="-", exp_digits=1)
  return f"{value:g}"


@dataclasses.dataclass(frozen=True)
class _Column:
  csv_name: str
  title: str
  value: Callable[[RunSummary], Any]
  markdown: Callable[[Any], str] = str
  numeric: bool = True


def _format_seconds(seconds: float) -> str:
  minutes, secs = divmod(round(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  if hours:
    return f"{hours}h {minutes:02d}m"
  return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _columns(class_names: list[str]) -> list[_Column]:
  return [
      _Column("run", "run", lambda r: r.name, numeric=False),
      _Column("config", "config", lambda r: r.description, numeric=False),
      _Column("optimizer", "optimizer", lambda r: r.optimizer, numeric=False),
      _Column(
          "learning_rate", "lr", lambda r: r.learning_rate, format_learning_rate
      ),
      _Column("epochs", "epochs", lambda r: r.epochs),
      _Column(
          "test_accuracy",
          "test accuracy",
          lambda r: r.test_accuracy,
          "{:.1%}".format,
      ),
      *[
          _Column(
              f"f1_{cls}",
              f"F1 {cls}",
              lambda r, cls=cls: r.f1.get(cls),
              "{:.2f}".format,
          )
          for cls in class_names
      ],
      _Column(
          "parameters", "parameters", lambda r: r.parameters, "{:,}".format
      ),
      _Column(
          "training_seconds",
          "training time",
          lambda r: r.seconds,
          _format_seconds,
      ),
      _Column(
          "train_images_per_second",
          "images/s",
          lambda r: r.images_per_second,
          "{:.0f}".format,
      ),
  ]


def markdown_table(runs: list[RunSummary], class_names: list[str]) -> str:
  """A Markdown table, padded so that it also reads well as plain text."""
  columns = _columns(class_names)
  cells = [[column.title for column in columns]]
  for run in runs:
    values = [column.value(run) for column in columns]
    cells.append([
        MISSING if value is None else column.markdown(value).replace("|", r"\|")
        for column, value in zip(columns, values)
    ])
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]

  def line(row: list[str]) -> str:
    padded = [
        cell.rjust(width) if column.numeric else cell.ljust(width)
        for cell, width, column in zip(row, widths, columns)
    ]
    return "| " + " | ".join(padded) + " |"

  rule = [
      "-" * (width - 1) + ":" if column.numeric else "-" * width
      for width, column in zip(widths, columns)
  ]
  return "\n".join(
      [line(cells[0]), line(rule)] + [line(row) for row in cells[1:]]
  )


def csv_text(runs: list[RunSummary], class_names: list[str]) -> str:
  """The table's raw numbers (accuracy as a fraction, time in seconds); empty
  where unknown."""
  columns = _columns(class_names)
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow([column.csv_name for column in columns])
  for run in runs:
    writer.writerow([
        "" if (value := column.value(run)) is None else value
        for column in columns
    ])
  return buffer.getvalue()
