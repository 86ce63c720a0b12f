"""The runs the web app may open: those named on its command line, and no other.

  --workdir runs/demo --workdir runs/ground   each a workdir
  --workdir runs                               a folder of workdirs

A visitor picks one of these runs (and one of its classification stages) from
a list; no path typed into the page, sent in a query or left in the session
state is ever opened, because `resolve` is the one way from a choice to a
workdir and it only answers with a run of the list. Plain Python, no
Streamlit.
"""

import dataclasses
import os
from typing import Sequence

from roadflax.errors import UserError
from roadflax.runs import workdirs


@dataclasses.dataclass(frozen=True)
class Run:
  """A workdir the app serves and its trained classification stages."""

  label: str  # how the page names it: the path as given on the command line
  workdir: str  # its real path, the one that is opened
  stages: tuple[str, ...]  # in run order


@dataclasses.dataclass(frozen=True)
class Catalog:
  """The runs the app may open, and why any given path added none."""

  runs: tuple[Run, ...]
  problems: tuple[str, ...]

  def choices(self) -> list[tuple[Run, str]]:
    """Every (run, stage) a visitor may pick, in the order given."""
    return [(run, stage) for run in self.runs for stage in run.stages]

  def resolve(self, workdir: str, stage: str) -> Run:
    """The run at `workdir`, when it is one of the list and has `stage`.

    Args:
      workdir: a path naming the run; compared by real path, so neither
        `..` nor a symbolic link leads out of the list.
      stage: one of its classification stages.

    Raises:
      UserError: `workdir` is not a run of the list, or `stage` not one of
        its stages.
    """
    real = os.path.realpath(workdir)
    for run in self.runs:
      if run.workdir == real:
        if stage not in run.stages:
          raise UserError(
              f"{run.label} has no trained classification stage {stage!r}"
              f" (it has: {', '.join(run.stages)})"
          )
        return run
    raise UserError(
        f"{workdir} is not one of the runs this app serves; it opens only the"
        " workdirs given on its command line (--workdir)"
    )


def find_runs(paths: Sequence[str]) -> Catalog:
  """The runs that `paths` name: each a workdir, or a folder of workdirs.

  A folder that is no workdir itself is searched one level deep: its
  subfolders that are workdirs with a trained classification stage are its
  runs, in name order. A path that adds no run is skipped with its reason in
  `problems`, so one wrong path does not hide the others' runs.
  """
  runs, problems, seen = [], [], set()
  for path in paths:
    found, problem = _runs_at(path)
    if problem is not None:
      problems.append(problem)
    for run in found:
      if run.workdir not in seen:
        seen.add(run.workdir)
        runs.append(run)
  return Catalog(tuple(runs), tuple(problems))


def _runs_at(path: str) -> tuple[list[Run], str | None]:
  """The runs at one command-line path, or none and why."""
  if not os.path.isdir(path):
    return [], f"{path}: no such folder"
  if os.path.exists(os.path.join(path, workdirs.RUN_FILE)):
    try:
      return [_run(path)], None
    except UserError as error:
      return [], str(error)
  runs = []
  for name in sorted(os.listdir(path)):
    child = os.path.join(path, name)
    if not os.path.exists(os.path.join(child, workdirs.RUN_FILE)):
      continue
    try:
      runs.append(_run(child))
    except UserError:
      continue  # Not trained yet: not a run to offer.
  if not runs:
    return [], (
        f"{path} is not a roadflax workdir (no {workdirs.RUN_FILE}) and holds"
        " none with a trained classification stage"
    )
  return runs, None


def _run(path: str) -> Run:
  """The run at `path`, a workdir.

  Raises:
    UserError: `path` has no trained classification stage.
  """
  stages = workdirs.classifier_stages(path)
  return Run(path, os.path.realpath(path), tuple(stages))
