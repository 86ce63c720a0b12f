"""What the console shows: roadflax's own log lines, not its libraries' chatter.

Orbax, JAX and clu log every checkpoint write, backend probe and metric at
INFO through the same absl logger; a user needs roadflax's lines (devices,
config, class counts, stage progress) and everyone's warnings and errors.
"""

import logging
import os

_OWN_FILES = os.path.dirname(os.path.abspath(__file__))
# Libraries whose warnings are routine here (e.g. Orbax on mid-epoch
# checkpoints that carry no validation metric).
_ERRORS_ONLY = (f"{os.sep}orbax{os.sep}",)


class _RoadflaxOnly(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    if record.pathname.startswith(_OWN_FILES):
      return True
    if any(part in record.pathname for part in _ERRORS_ONLY):
      return record.levelno >= logging.ERROR
    return record.levelno >= logging.WARNING


def show_roadflax_logs_only() -> None:
  """Filters absl's handler so library INFO lines stay out of the console."""
  for handler in (
      logging.getLogger().handlers + logging.getLogger("absl").handlers
  ):
    handler.addFilter(_RoadflaxOnly())
