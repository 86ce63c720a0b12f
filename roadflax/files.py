"""Reading and writing files; writes never leave a half-written file behind."""

import json
import os
import tempfile
from typing import Any, BinaryIO, Callable

# The process's umask, read once at import: reading it means setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: str, write: Callable[[BinaryIO], Any]) -> None:
  """Calls `write` on a temporary file beside `path`, then renames it over
  `path`: readers see the old file or the new one, never a mix. The file
  gets the permissions of any new file (0666 less the umask), not the
  owner-only ones of a temporary file."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
      dir=directory, prefix=".tmp-", suffix=os.path.basename(path)
  )
  try:
    os.fchmod(fd, 0o666 & ~_UMASK)
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def atomic_write_text(path: str, text: str) -> None:
  atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str, data: Any) -> None:
  atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str) -> Any:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def read_json_if_present(path: str) -> Any:
  """`read_json(path)`, or None when there is no such file."""
  return read_json(path) if os.path.isfile(path) else None


def files_under(folder: str) -> list[str]:
  """The paths of every file under `folder` and its subfolders, sorted."""
  return sorted(
      os.path.join(parent, name)
      for parent, _, names in os.walk(folder)
      for name in names
  )


def default_cache_dir() -> str:
  """`$XDG_CACHE_HOME/roadflax`, else `~/.cache/roadflax`."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache"
  )
  return os.path.join(base, "roadflax")
