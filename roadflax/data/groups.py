"""Which images belong together (one drive, video, day or photograph), so that
a split can keep each group whole: frames of one group in train and test
measure memory, not the surface.

`data.group_by` names the rule; every image of a class folder gets a group
key from its path below the class folder:

  subfolder  the first folder below the class folder: ROOT/CLASS/drive03/...
             (at any depth) is group "drive03". An image lying directly in
             the class folder has no such folder and is a group of its own.
  prefix     the first match of `data.group_pattern` in the file name (its
             first parenthesised group, if it has one). The default takes
             the name before a trailing frame number: "drive03_000123.jpg"
             and "drive03-17.png" are group "drive03". A name it does not
             match is a group of its own.
  day        the capture day, YYYY-MM-DD: EXIF DateTimeOriginal where the
             file has it, else a date in the file name (`capture_day`, the
             rule RSCD's by-day splits use). An image with neither is a
             group of its own.
  file       every image a group of its own: an i.i.d. split, which leaks
             whenever two images of one scene land in two splits.

A key names the same group in every class: drive03/ under asphalt/ and
under gravel/ is one drive, kept in one split. An image that is a group of
its own gets the key CLASS/PATH (a folder or pattern key never holds a "/").
"""

import concurrent.futures
import datetime
import os
import re
from typing import Sequence

from roadflax.data import exif

GROUP_RULES = ("subfolder", "prefix", "day", "file")
# The name before a trailing number and the extension, without the
# separators between them: "drive03_000123.jpg" -> "drive03".
DEFAULT_PATTERN = r"^(.*?)[-_ .]*\d+\.\w+$"
# How each rule's groups are named in messages.
GROUP_NOUNS = {
    "subfolder": "subfolders",
    "prefix": "file-name prefixes",
    "day": "capture days",
    "file": "images",
}

_DIGITS = re.compile(r"\d{8,}")
_YEARS = range(1970, 2100)  # Digits outside are a counter, not a date.
_EXIF_BYTES = 1 << 17  # The EXIF block precedes the image data: 128 KiB.
_THREADS = 32  # Reading dates waits on the disk, not the CPU.


def capture_day(file_name: str) -> str:
  """ "YYYY-MM-DD" of the first run of 8 or more digits in `file_name` that
  starts with a valid date (YYYYMMDD, 1970 to 2099), else "".

  RSCD's names start with a YYYYMMDDhhmmss timestamp and a frame counter
  ("202201252341401-dry-asphalt-smooth.jpg" is 2022-01-25); phones put it
  after a prefix ("IMG_20210503_101112.jpg"). A run of frame numbers that
  happens to read as a date is taken for one.
  """
  for run in _DIGITS.finditer(file_name):
    digits = run.group()[:8]
    try:
      day = datetime.datetime.strptime(digits, "%Y%m%d").date()
    except ValueError:
      continue
    if day.year in _YEARS:
      return day.isoformat()
  return ""


def image_day(path: str) -> str:
  """The day the image at `path` was taken: EXIF DateTimeOriginal, else
  `capture_day` of its name; "" when neither says."""
  try:
    with open(path, "rb") as f:
      head = f.read(_EXIF_BYTES)
  except OSError:
    head = b""
  return exif.capture_date(head) or capture_day(os.path.basename(path))


def group_keys(
    class_dir: str,
    paths: Sequence[str],
    rule: str,
    pattern: str = DEFAULT_PATTERN,
) -> list[str]:
  """The group key of each image of one class folder, in order.

  Args:
    class_dir: the class folder; its name is the class.
    paths: images at any depth below it.
    rule: one of GROUP_RULES.
    pattern: the `prefix` rule's regular expression.
  """
  class_name = os.path.basename(os.path.normpath(class_dir))
  relative = [os.path.relpath(p, class_dir).replace(os.sep, "/") for p in paths]
  if rule == "subfolder":
    keys = [r.split("/")[0] if "/" in r else "" for r in relative]
  elif rule == "prefix":
    keys = [
        _prefix(re.compile(pattern), r.rsplit("/", 1)[-1]) for r in relative
    ]
  elif rule == "day":
    with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
      keys = list(pool.map(image_day, paths, chunksize=64))
  elif rule == "file":
    keys = [""] * len(paths)
  else:
    raise ValueError(f"unknown group rule {rule!r}")
  return [key or f"{class_name}/{r}" for key, r in zip(keys, relative)]


def _prefix(pattern: re.Pattern, file_name: str) -> str:
  """The `prefix` rule's key of a file name; "" where the pattern finds none."""
  match = pattern.search(file_name)
  if match is None:
    return ""
  key = match.group(1) if pattern.groups else match.group()
  return (key or "").replace("/", "_")


def is_own_group(key: str) -> bool:
  """Whether `key` is an image that is a group of its own (CLASS/PATH)."""
  return "/" in key
