"""`--mode=serve`: the web app (`roadflax/serve/app.py`) in a Streamlit server.

The app serves the runs that `--workdir` names (repeatable; each a workdir or
a folder of workdirs) and no others. They are checked here, before Streamlit
starts, so that a command line naming no trained run ends in one `error:`
line rather than a page that only says so in a browser; a path that adds no
run while others do is named in a warning. The server runs as a child
process in its own session: the terminal's Ctrl-C reaches this process alone,
which passes it on once, and a SIGTERM (a service manager stopping the app)
is passed on as well instead of orphaning the server.
"""

import dataclasses
import os
import signal
import subprocess
import sys
from typing import Sequence

from absl import logging

from roadflax.errors import UserError
from roadflax.serve import catalog

APP_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app.py")
_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclasses.dataclass(frozen=True)
class LabelFolders:
  """The Label page's folders: those it queues frames from, and the one it
  writes labels to (none: the page says how to give them)."""

  inputs: tuple[str, ...] = ()
  output: str | None = None

  def check(self) -> None:
    """Raises UserError unless the folders make sense together."""
    if bool(self.inputs) != bool(self.output):
      raise UserError(
          "the Label page needs both --input=VIDEOS_OR_IMAGES (folders to"
          " label from) and --output=LABELLED (the folder it writes)"
      )
    for folder in self.inputs:
      if not os.path.isdir(folder):
        raise UserError(f"--input={folder}: no such folder")


def _streamlit_command(
    paths: Sequence[str],
    *,
    stage: str | None,
    address: str,
    port: int,
    label: LabelFolders = LabelFolders(),
) -> list[str]:
  """The command line that serves the app for the runs `paths` name."""
  command = [
      sys.executable,
      "-m",
      "streamlit",
      "run",
      APP_SCRIPT,
      "--server.address",
      address,
      "--server.port",
      str(port),
      "--server.headless",
      "true",
      "--browser.gatherUsageStats",
      "false",
      # A served app does not change under it; watching the sources would
      # only cost CPU.
      "--server.fileWatcherType",
      "none",
      # No developer menu (deploy, rerun, settings) for users of the app.
      "--client.toolbarMode",
      "minimal",
      "--",
  ]
  for path in paths:
    command += ["--workdir", path]
  for path in label.inputs:
    command += ["--input", path]
  if label.output is not None:
    command += ["--output", label.output]
  return command + (["--stage", stage] if stage is not None else [])


def serve(
    paths: Sequence[str],
    *,
    stage: str | None,
    address: str,
    port: int,
    label: LabelFolders = LabelFolders(),
) -> None:
  """Serves the web app for the runs `paths` name until Ctrl-C or SIGTERM.

  Args:
    paths: workdirs, or folders of workdirs (`catalog.find_runs`).
    stage: the classification stage the page selects first.
    address: the address to listen on.
    port: the port to listen on.
    label: the Label page's folders.

  Raises:
    UserError: `paths` name no run with a trained classifier, `stage` is
      given and no run has it, or the server stopped with an error on its own
      (its messages, such as a port already in use, are printed above).
  """
  runs = _runs_to_serve(paths, stage)
  label.check()
  server = subprocess.Popen(
      _streamlit_command(
          paths, stage=stage, address=address, port=port, label=label
      ),
      start_new_session=True,
  )
  stopped = _forward_signals_to(server)
  print(
      f"roadflax: serving {', '.join(run.label for run in runs)} at"
      f" http://{address}:{port}/ (Ctrl-C stops it)",
      flush=True,
  )
  status = server.wait()
  if status != 0 and not stopped:
    raise UserError(
        f"the web server stopped with exit status {status}; its "
        "messages are above"
    )


def _runs_to_serve(
    paths: Sequence[str], stage: str | None
) -> tuple[catalog.Run, ...]:
  """The runs `paths` name; the paths that add none named in warnings.

  Raises:
    UserError: no path given, none names a run, or none has stage `stage`.
  """
  if not paths:
    raise UserError(
        "--mode=serve needs --workdir=DIR: a trained workdir (repeatable) or"
        " a folder of them"
    )
  found = catalog.find_runs(paths)
  if not found.runs:
    raise UserError("; ".join(found.problems))
  for problem in found.problems:
    logging.warning("not served: %s", problem)
  if stage is not None and not any(stage in run.stages for run in found.runs):
    stages = "; ".join(
        f"{run.label} has {', '.join(run.stages)}" for run in found.runs
    )
    raise UserError(
        f"no run has a trained classification stage {stage!r} ({stages})"
    )
  return found.runs


def _forward_signals_to(server: subprocess.Popen) -> list[int]:
  """Passes Ctrl-C and SIGTERM on to `server`; returns the signals passed."""
  stopped = []

  def forward(signum: int, frame) -> None:
    del frame  # Unused.
    stopped.append(signum)
    server.send_signal(signum)

  for signum in _FORWARDED_SIGNALS:
    signal.signal(signum, forward)
  return stopped
