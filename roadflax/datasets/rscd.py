"""The RSCD release's layout: its classes, file names, splits and capture days.

RSCD (Road Surface Classification Dataset; Zhao et al., figshare DOI
10.6084/m9.figshare.20424582, CC BY-NC) is one zip of 240x360 JPEG frames:

  train/<class>/*.jpg     one folder per class
  vali_20k/*.jpg          flat; the label is in the file name
  test_50k/*.jpg          flat; the label is in the file name

Every file is named `<timestamp>-<friction>[-<material>[-<unevenness>]].jpg`
(`202201252341401-dry-asphalt-smooth.jpg`, `...-water-gravel.jpg`,
`...-fresh_snow.jpg`); in a flat split the class is the parts after the
timestamp joined by `_` (the few names with letters glued to the timestamp,
`2022070913430178wet-dry-asphalt-smooth.jpg`, read the same way). The
timestamp is YYYYMMDDhhmmss and a frame counter, so its first eight digits are
the capture day. The zip wraps the folders in `RSCD dataset-1million/`; frames
are 240 wide and 360 tall.

This module only reads names and bytes, so it works on the extracted release
or on the zip itself (`release_files`); `rscd_builder` turns it into a TFDS
data set.
"""

import dataclasses
import hashlib
import os
import zipfile
from typing import Callable, Iterator, Sequence

# The capture day of a frame's name: the rule that groups any folder by day.
from roadflax.data.groups import capture_day

FRICTIONS = ("dry", "wet", "water")
WINTER = ("fresh_snow", "melted_snow", "ice")
PAVED = ("asphalt", "concrete")
UNPAVED = ("mud", "gravel")
UNEVENNESS = ("smooth", "slight", "severe")

# The 27 classes: friction x paved material x unevenness (18), friction x
# unpaved material (6), and the three winter conditions, which name neither
# material nor unevenness.
CLASSES_27 = tuple(
    sorted(
        [f"{f}_{m}_{u}" for f in FRICTIONS for m in PAVED for u in UNEVENNESS]
        + [f"{f}_{m}" for f in FRICTIONS for m in UNPAVED]
        + list(WINTER)
    )
)
# The published project's subset.
CLASSES_3 = ("dry_asphalt_smooth", "dry_concrete_smooth", "dry_gravel")

# Release folders of the official splits, as TFDS split names.
SPLIT_FOLDERS = {"train": "train", "validation": "vali_20k", "test": "test_50k"}
# Published sizes, checked (with a warning, never an error) after reading.
PUBLISHED_SIZES = {
    "27class": {"train": 958_941, "validation": 19_860, "test": 49_500},
    "3class": {"train": 76_231 + 77_938 + 63_417, "test": 3 * 2_350},
}


@dataclasses.dataclass(
    frozen=True, slots=True
)  # A million of them: no __dict__.
class Frame:
  """One image of the release, with what its path says about it.

  Attributes:
    path: where it is: a file path, or a member name inside `archive`.
    archive: the zip holding it, or "" for an extracted release.
    split: the official split ("train", "validation", "test").
    label: class name, one of `CLASSES_27`.
    friction, material, unevenness: the class's parts ("" where it has none).
    capture_day: "YYYY-MM-DD" from the timestamp, "" when the name has none.
  """

  path: str
  archive: str
  split: str
  label: str
  friction: str
  material: str
  unevenness: str
  capture_day: str

  @property
  def file_name(self) -> str:
    return self.path.rsplit("/", 1)[-1]


def class_attributes(label: str) -> tuple[str, str, str]:
  """(friction, material, unevenness) of a class name; "" where absent.

  Raises:
    ValueError: `label` is not an RSCD class.
  """
  if label not in CLASSES_27:
    raise ValueError(f"{label!r} is not an RSCD class")
  if label in WINTER:
    return label, "", ""
  parts = label.split("_")
  return parts[0], parts[1], parts[2] if len(parts) > 2 else ""


def label_from_file_name(file_name: str) -> str | None:
  """The class a flat split's file name gives, or None if it gives none."""
  stem = os.path.splitext(file_name)[0]
  _, _, rest = stem.partition("-")
  label = rest.replace("-", "_")
  return label if label in CLASSES_27 else None


def _frame(path: str, archive: str, split: str, label: str) -> Frame:
  file_name = path.rsplit("/", 1)[-1]
  return Frame(
      path,
      archive,
      split,
      label,
      *class_attributes(label),
      capture_day=capture_day(file_name),
  )


def _classify_member(relative: str) -> tuple[str, str] | None:
  """(split, class) of a path relative to the release root, or None if it is
  not one of the release's JPEG names."""
  parts = relative.split("/")
  if not parts[-1].lower().endswith((".jpg", ".jpeg")):
    return None
  for split, folder in SPLIT_FOLDERS.items():
    if (
        split == "train"
        and len(parts) == 3
        and parts[0] == folder
        and parts[1] in CLASSES_27
    ):
      return split, parts[1]
    if split != "train" and len(parts) == 2 and parts[0] == folder:
      label = label_from_file_name(parts[1])
      return (split, label) if label else None
  return None


def _release_root(names: Sequence[str]) -> str | None:
  """The prefix under which `train/`, `vali_20k/` and `test_50k/` sit ("" at
  the top; the zip wraps them in `RSCD dataset-1million/`), or None when no
  name lies in one of them."""
  for name in names:
    parts = name.split("/")
    for i, part in enumerate(parts[:-1]):
      if part in SPLIT_FOLDERS.values():
        return "/".join(parts[:i])
  return None


def release_files(manual_dir: str) -> tuple[list[Frame], list[str]]:
  """Lists the release's frames in `manual_dir`: the extracted folders, or the
  zip(s) of the release when no extracted folder is there.

  Returns:
    (frames sorted by path, paths that look like release images but are not
    named like one: unknown class or no label in the name).

  Raises:
    FileNotFoundError: `manual_dir` holds neither.
  """
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"{manual_dir} does not exist")
  names = sorted(
      os.path.relpath(os.path.join(d, f), manual_dir).replace(os.sep, "/")
      for d, _, files in os.walk(manual_dir)
      for f in files
  )
  root = _release_root(names)
  if root is not None:
    return _frames(
        names, root, lambda name: os.path.join(manual_dir, name), archive=""
    )
  zips = [
      name
      for name in names
      if "/" not in name and name.lower().endswith(".zip")
  ]
  if not zips:
    raise FileNotFoundError(
        f"{manual_dir} holds neither the extracted release"
        f" ({', '.join(SPLIT_FOLDERS.values())}) nor its zip"
    )
  frames, unnamed = [], []
  for zip_name in zips:
    archive = os.path.join(manual_dir, zip_name)
    with zipfile.ZipFile(archive) as z:
      names = [n for n in z.namelist() if not n.endswith("/")]
    root = _release_root(names)
    if root is None:
      continue
    found, bad = _frames(names, root, lambda name: name, archive=archive)
    frames += found
    unnamed += [f"{archive}:{name}" for name in bad]
  return sorted(frames, key=lambda f: (f.archive, f.path)), unnamed


def _frames(
    names: list[str], root: str, locate: Callable[[str], str], archive: str
) -> tuple[list[Frame], list[str]]:
  """The frames among `names` (paths relative to `manual_dir` or inside a
  zip) under `root`, and the JPEGs there that are not named like frames."""
  frames, unnamed = [], []
  for name in sorted(names):
    if root and not name.startswith(root + "/"):
      continue
    relative = name[len(root) + 1 :] if root else name
    if relative.split("/")[0] not in SPLIT_FOLDERS.values():
      continue
    found = _classify_member(relative)
    if found is None:
      if relative.lower().endswith((".jpg", ".jpeg")):
        unnamed.append(name)
      continue
    frames.append(_frame(locate(name), archive, *found))
  return frames, unnamed


def _day_order_key(day: str, salt: str) -> str:
  return hashlib.sha256(f"{salt}:{day}".encode()).hexdigest()


def split_by_day(
    frames: Sequence[Frame], fractions: dict[str, float], salt: str = "rscd"
) -> dict[str, list[Frame]]:
  """Reassigns whole capture days to splits, so that no day is in two splits.

  Days are taken in a fixed pseudo-random order (a hash of the day and
  `salt`) and given to the splits of `fractions` in turn: each split takes
  days until it holds its fraction of all frames, at least one day; the last
  split takes the rest. So sizes come within one day's frames of the
  fractions. Frames with no capture day each count as a day of their own (they
  cannot leak a day).

  Returns:
    {split: frames}, each in the order of `frames`.
  """

  def day_of(frame: Frame) -> str:
    return frame.capture_day or f"file:{frame.path}"

  sizes: dict[str, int] = {}
  for frame in frames:
    sizes[day_of(frame)] = sizes.get(day_of(frame), 0) + 1
  names = list(fractions)
  targets = [fractions[name] * len(frames) for name in names]
  assignment, current, filled = {}, 0, 0
  for day in sorted(sizes, key=lambda day: _day_order_key(day, salt)):
    assignment[day] = names[current]
    filled += sizes[day]
    if current < len(names) - 1 and filled >= targets[current]:
      current, filled = current + 1, 0
  result: dict[str, list[Frame]] = {name: [] for name in names}
  for frame in frames:
    result[assignment[day_of(frame)]].append(frame)
  return result


def iter_frames(frames: Sequence[Frame]) -> Iterator[tuple[Frame, bytes]]:
  """Each frame with its bytes, opening each zip once rather than per frame."""
  archives: dict[str, zipfile.ZipFile] = {}
  try:
    for frame in frames:
      if frame.archive:
        if frame.archive not in archives:
          archives[frame.archive] = zipfile.ZipFile(frame.archive)
        yield frame, archives[frame.archive].read(frame.path)
      else:
        with open(frame.path, "rb") as f:
          yield frame, f.read()
  finally:
    for archive in archives.values():
      archive.close()
