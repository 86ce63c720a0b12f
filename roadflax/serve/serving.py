"""`--mode=serve`: the web app (`roadflax/serve/app.py`) in a Streamlit server.

The workdir is checked here, before Streamlit starts, so that a wrong
`--workdir` ends in one `error:` line rather than a page that only says so in
a browser. The server runs as a child process in its own session: the terminal's
Ctrl-C reaches this process alone, which passes it on once, and a SIGTERM (a
service manager stopping the app) is passed on as well instead of orphaning
the server.
"""

import os
import signal
import subprocess
import sys

from roadflax.runs import workdirs
from roadflax.errors import UserError

APP_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app.py")
_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _streamlit_command(
    workdir: str, *, stage: str | None, address: str, port: int
) -> list[str]:
  """The command line that serves the app for `workdir`."""
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
      "--workdir",
      workdir,
  ]
  return command + (["--stage", stage] if stage is not None else [])


def serve(workdir: str, *, stage: str | None, address: str, port: int) -> None:
  """Serves the web app until Ctrl-C or SIGTERM.

  Raises:
    UserError: the workdir has no trained classifier (or no stage `stage`),
      or the server stopped with an error on its own (its messages, such as a
      port already in use, are printed above).
  """
  workdirs.classifier_stage(workdir, stage)
  server = subprocess.Popen(
      _streamlit_command(workdir, stage=stage, address=address, port=port),
      start_new_session=True,
  )
  stopped = _forward_signals_to(server)
  print(
      f"roadflax: serving {workdir} at http://{address}:{port}/ "
      "(Ctrl-C stops it)",
      flush=True,
  )
  status = server.wait()
  if status != 0 and not stopped:
    raise UserError(
        f"the web server stopped with exit status {status}; its "
        "messages are above"
    )


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
