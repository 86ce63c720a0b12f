"""Reads and validates an image-folder tree: ROOT/{train,val,test}/CLASS/*.jpg.

Every user mistake in the tree's layout is a `UserError` whose one line names
the folder to fix, raised at scan time so a run fails in seconds rather than
hours into training. Individual bad files are not mistakes worth stopping for:
a cheap header/trailer check (`check_image_file`) runs over every file in a
thread pool, and files that fail it are skipped and named in the log. The check
reads a few bytes at each end of a file (the whole file only when its last
bytes hold no end marker), so scanning ~1M files costs about two small reads
each; files that pass it but still fail to decode are dropped by the input
pipeline (`preprocess`).
"""

import concurrent.futures
import dataclasses
import functools
import hashlib
import os
import struct
from typing import Callable, Iterator, Sequence

from absl import logging
import numpy as np

from roadflax.data.contract import SPLIT_NAMES
from roadflax.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_SOS = 0xDA  # Start-of-scan marker: the compressed image data follows.
_JPEG_EOI = 0xD9  # End-of-image marker,
_JPEG_END = b"\xff\xd9"  # as bytes.
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND"  # Type of the last chunk.
_HEAD_BYTES = 16
# How far from the end the end marker may sit: encoders and cameras sometimes
# pad a few bytes after it.
_TAIL_BYTES = 32
_CHECK_THREADS = 32  # The check waits on the disk, not the CPU.
_CHECK_CHUNK = 512  # Files per pool task, so 1M files are not 1M futures.
_LOGGED_SKIPS = 10


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """The images of one split, in a deterministic order: a
  `contract.FolderSplit`.

  Compared and hashed by identity (`eq=False`): `caches.MemoryCache` keys on
  the Split object, so keep one Split for a run.

  Attributes:
    paths: image files, grouped by class in `class_names` order, each class's
      files sorted by name.
    labels: int32 [len(paths)], index of each file's class in `class_names`.
    skipped: files rejected by `check_image_file`, not in `paths`.
  """

  paths: tuple[str, ...]
  labels: np.ndarray
  skipped: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.paths)

  def class_counts(self, num_classes: int) -> np.ndarray:
    """Number of images per class, int64 [num_classes] (or more, up to the
    largest label)."""
    return np.bincount(self.labels, minlength=num_classes)

  @functools.cached_property
  def fingerprint(self) -> str:
    """Names this list of files and labels (not the files' contents)."""
    digest = hashlib.sha256(self.labels.tobytes())
    for path in self.paths:
      digest.update(path.encode() + b"\0")
    return f"files:{digest.hexdigest()}"


@dataclasses.dataclass(frozen=True)
class ImageFolder:
  """A scanned tree: the classes and one `Split` per split folder read."""

  root: str
  class_names: tuple[str, ...]
  splits: dict[str, Split]


def check_image_file(path: str) -> str | None:
  """Cheaply checks that `path` looks like a complete JPEG or PNG file.

  The format is judged by its magic bytes, not the extension, because the
  decoder does the same (a PNG named .jpg decodes fine). Truncation, the usual
  result of an interrupted copy or download, shows as a missing end marker.
  Only a file whose last bytes hold no end marker is read whole: phones append
  data after it (Samsung's trailer, a motion photo's video), and such a file
  is complete if its marker is found further in.

  Args:
    path: the file to check.

  Returns:
    None if the file looks readable, otherwise a short reason.
  """
  try:
    with open(path, "rb") as f:
      size = os.fstat(f.fileno()).st_size
      head = f.read(_HEAD_BYTES)
      f.seek(max(0, size - _TAIL_BYTES))
      tail = f.read(_TAIL_BYTES)

      def read_all() -> bytes:
        f.seek(0)
        return f.read()

      return _check(head, tail, size, read_all)
  except OSError as e:
    return f"cannot read: {e.strerror or e}"


def check_image_bytes(data: bytes) -> str | None:
  """`check_image_file` for an image already in memory, such as an upload."""
  return _check(
      data[:_HEAD_BYTES], data[-_TAIL_BYTES:], len(data), lambda: data
  )


def _check(
    head: bytes, tail: bytes, size: int, read_all: Callable[[], bytes]
) -> str | None:
  """Judges a file by its size and first and last few bytes, reading it all
  only when no end marker is at its end."""
  if size == 0:
    return "empty file"
  if head.startswith(JPEG_MAGIC):
    ends = _JPEG_END in tail or _jpeg_has_end(read_all())
    return None if ends else "truncated JPEG (no end marker)"
  if head.startswith(PNG_MAGIC):
    ends = _PNG_END in tail or _png_has_end(read_all())
    return None if ends else "truncated PNG (no IEND chunk)"
  return f"not a JPEG or PNG (starts with {head[:4].hex(' ')})"


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
  """(marker, start, end) of the payload of each marker segment of a JPEG.

  Walks from the start-of-image marker to the first start-of-scan (SOS)
  segment, which comes last: the compressed image data follows it. Segment
  payloads (EXIF, a thumbnail with its own end marker) are skipped whole.
  Stops early, silently, where the data is not a well-formed segment.
  """
  position = 2  # After the start-of-image marker.
  while position + 4 <= len(data):
    if data[position] != 0xFF:
      return
    marker = data[position + 1]
    if marker == 0xFF:  # A fill byte before a marker.
      position += 1
      continue
    if marker == _JPEG_EOI:
      return
    (length,) = struct.unpack_from(">H", data, position + 2)
    yield marker, position + 4, position + 2 + length
    if marker == JPEG_SOS:
      return
    position += 2 + length


def _jpeg_has_end(data: bytes) -> bool:
  """Whether an end-of-image marker follows the image data.

  Compressed data never holds the marker's bytes (a 0xFF there is followed by
  0x00 or a restart marker), so the first one after the scan begins ends it.
  """
  for marker, _, end in jpeg_segments(data):
    if marker == JPEG_SOS:
      return data.find(_JPEG_END, end) >= 0
  return False


def png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
  """(type, start, end) of the data of each chunk of a PNG, up to IEND.

  Stops early, silently, where a chunk runs past the end of `data`.
  """
  position = len(PNG_MAGIC)
  while position + 12 <= len(data):
    length, kind = struct.unpack_from(">I4s", data, position)
    end = position + 8 + length
    if end + 4 > len(data):  # The data and CRC must be there.
      return
    yield kind, position + 8, end
    if kind == _PNG_END:
      return
    position = end + 4


def _png_has_end(data: bytes) -> bool:
  return any(kind == _PNG_END for kind, _, _ in png_chunks(data))


def scan_image_folder(
    root: str, splits: Sequence[str] = SPLIT_NAMES
) -> ImageFolder:
  """Lists and checks the images of `splits` under `root`.

  Args:
    root: the tree's root folder.
    splits: the split folders to read; all must hold the same class folders.

  Returns:
    The classes (sorted folder names) and one `Split` per name in `splits`.

  Raises:
    UserError: the tree is missing, misshapen, or a split has no readable image.
  """
  if not os.path.exists(root):
    raise UserError(
        f"data root {root} does not exist; set data.root to the "
        "folder holding the class folders (or train/, val/ and test/)"
    )
  if not os.path.isdir(root):
    raise UserError(
        f"data root {root} is not a folder; set data.root to the "
        "folder holding the class folders (or train/, val/ and test/)"
    )
  classes = {split: _class_folders(root, split) for split in splits}
  class_names = _common_classes(root, classes)
  return ImageFolder(
      root=root,
      class_names=class_names,
      splits={
          split: _scan_split(os.path.join(root, split), class_names)
          for split in splits
      },
  )


def subfolders(folder: str) -> list[str]:
  """Sorted names of the visible subfolders (hidden ones are tool clutter)."""
  with os.scandir(folder) as entries:
    return sorted(
        e.name for e in entries if e.is_dir() and not e.name.startswith(".")
    )


def _class_folders(root: str, split: str) -> list[str]:
  """The class folder names of one split, checked to exist and be non-empty."""
  split_dir = os.path.join(root, split)
  if not os.path.isdir(split_dir):
    present = subfolders(root)
    raise UserError(
        f"split folder {split_dir} is missing; {root} holds "
        f"{present or 'no folders'} but needs {list(SPLIT_NAMES)}"
    )
  names = subfolders(split_dir)
  if not names:
    raise UserError(
        f"split folder {split_dir} has no class folders; put each "
        "class's images in their own subfolder"
    )
  return names


def _common_classes(
    root: str, classes: dict[str, list[str]]
) -> tuple[str, ...]:
  """The class names, checked to be the same in every split."""
  union = set().union(*classes.values())
  missing = {
      split: sorted(union - set(names)) for split, names in classes.items()
  }
  problems = [
      f"{split}/ lacks {names}" for split, names in missing.items() if names
  ]
  if problems:
    raise UserError(
        f"class folders differ between splits under {root}: "
        f"{'; '.join(problems)}; every split needs the same ones"
    )
  return tuple(sorted(union))


def _image_files(class_dir: str) -> list[str]:
  """Sorted paths of the files in `class_dir` with an image extension."""
  with os.scandir(class_dir) as entries:
    paths = sorted(
        e.path
        for e in entries
        if e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file()
    )
  if not paths:
    raise UserError(
        f"class folder {class_dir} has no image files "
        f"({'/'.join(IMAGE_EXTENSIONS)}); add images or remove it "
        "from every split"
    )
  return paths


def _check_files(paths: list[str]) -> list[str | None]:
  """`check_image_file` over `paths` in a thread pool, in order."""
  chunks = [
      paths[i : i + _CHECK_CHUNK] for i in range(0, len(paths), _CHECK_CHUNK)
  ]
  with concurrent.futures.ThreadPoolExecutor(_CHECK_THREADS) as pool:
    results = pool.map(
        lambda chunk: [check_image_file(p) for p in chunk], chunks
    )
    return [reason for chunk in results for reason in chunk]


def _scan_split(split_dir: str, class_names: tuple[str, ...]) -> Split:
  """Lists, checks and labels the images of one split folder."""
  paths, labels = [], []
  for label, name in enumerate(class_names):
    files = _image_files(os.path.join(split_dir, name))
    paths.extend(files)
    labels.extend([label] * len(files))
  return checked_split(split_dir, paths, labels, len(class_names))


def checked_split(
    folder: str, paths: list[str], labels: list[int], num_classes: int
) -> Split:
  """The images of `folder` (`labels[i]` the class of `paths[i]`) that pass
  `check_image_file`; the others are skipped and named in the log, and if
  none passes, that is a UserError."""
  reasons = _check_files(paths)
  rejected = [(p, r) for p, r in zip(paths, reasons) if r is not None]
  if len(rejected) == len(paths):
    path, reason = rejected[0]
    raise UserError(
        f"{folder} has no readable image: all {len(paths)} image files fail"
        f" the check (e.g. {path}: {reason})"
    )
  if rejected:
    _log_skipped(folder, rejected, len(paths))
  keep = np.array([r is None for r in reasons])
  logging.info("%s: %d images in %d classes", folder, keep.sum(), num_classes)
  return Split(
      paths=tuple(p for p, k in zip(paths, keep) if k),
      labels=np.asarray(labels, np.int32)[keep],
      skipped=tuple(p for p, _ in rejected),
  )


def _log_skipped(
    folder: str, rejected: list[tuple[str, str]], total: int
) -> None:
  """Warns about skipped files: how many, and the first few with reasons."""
  shown = "; ".join(f"{p} ({r})" for p, r in rejected[:_LOGGED_SKIPS])
  more = len(rejected) - _LOGGED_SKIPS
  logging.warning(
      "%s: skipping %d of %d image files that are not readable images: %s%s",
      *(folder, len(rejected), total, shown),
      f"; and {more} more" if more > 0 else "",
  )
