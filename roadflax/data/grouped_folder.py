"""An image folder with the group of every image, in either layout:

  ROOT/{train,val,test}/CLASS/*  split folders, read as they are
                                 (`image_folder`); each image's group is
                                 named within its split, for reports
  ROOT/CLASS/...                 class folders alone: the images at any depth
                                 below each class folder, grouped by
                                 `data.group_by` (`groups`) and split by
                                 group (`group_split`)

A root holding a train/, val/ or test/ folder is read in the first layout.
Evaluating a trained model on a folder of the second layout can instead take
all its images as the test split (`all_as_test`): a folder never trained on
is held out whole.
"""

import dataclasses
import hashlib
import os
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from roadflax.data import group_split, groups, image_folder
from roadflax.data.contract import SPLIT_NAMES
from roadflax.errors import UserError

SPLIT_FOLDERS = "split folders"
BY_GROUP = "class folders, split by group"
ALL_AS_TEST = "class folders, all as test"


@dataclasses.dataclass(frozen=True, eq=False)
class GroupedSplit(image_folder.Split):
  """A `Split` that knows each image's group key (`groups`)."""

  groups: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Grouping:
  """How a folder's images are grouped and, without split folders, split
  (`data.group_by`, `group_pattern`, `val_fraction`, `test_fraction`,
  `split_seed`)."""

  rule: str = "subfolder"
  pattern: str = groups.DEFAULT_PATTERN
  val_fraction: float = 0.15
  test_fraction: float = 0.2
  seed: int = 0

  @classmethod
  def from_config(cls, data: ml_collections.ConfigDict) -> "Grouping":
    """From `data`; the defaults for keys a config written before them
    lacks (an older workdir's config.json)."""
    return cls(
        rule=data.get("group_by", cls.rule),
        pattern=data.get("group_pattern", cls.pattern),
        val_fraction=data.get("val_fraction", cls.val_fraction),
        test_fraction=data.get("test_fraction", cls.test_fraction),
        seed=data.get("split_seed", cls.seed),
    )


@dataclasses.dataclass(frozen=True)
class GroupedFolder:
  """A scanned folder: a `contract.DataSet` whose splits know their groups."""

  root: str
  class_names: tuple[str, ...]
  splits: dict[str, GroupedSplit]
  grouping: Grouping
  layout: str  # SPLIT_FOLDERS, BY_GROUP or ALL_AS_TEST


def has_split_folders(root: str) -> bool:
  """Whether `root` is read as split folders (also when it is no folder:
  `image_folder` then says what is wrong)."""
  return not os.path.isdir(root) or any(
      os.path.isdir(os.path.join(root, split)) for split in SPLIT_NAMES
  )


def scan(
    root: str, grouping: Grouping, *, all_as_test: bool = False
) -> GroupedFolder:
  """Lists, checks, groups and (without split folders) splits `root`.

  Args:
    root: the folder.
    grouping: the group rule, and the split of a folder without split folders.
    all_as_test: a folder without split folders becomes one test split.

  Raises:
    UserError: the folder is missing or misshapen, a class has no readable
      image, or too few groups to split.
  """
  if has_split_folders(root):
    folder = image_folder.scan_image_folder(root)
    splits = {
        name: _with_groups(
            split, folder.class_names, os.path.join(root, name), grouping
        )
        for name, split in folder.splits.items()
    }
    return GroupedFolder(
        root, folder.class_names, splits, grouping, SPLIT_FOLDERS
    )
  class_names = tuple(image_folder.subfolders(root))
  if not class_names:
    raise UserError(
        f"data root {root} has no class folders: put each class's images in"
        " ROOT/CLASS/ (at any depth below it) or ROOT/{train,val,test}/CLASS/"
    )
  paths, labels = [], []
  for label, name in enumerate(class_names):
    found = _images_below(os.path.join(root, name))
    paths += found
    labels += [label] * len(found)
  checked = image_folder.checked_split(root, paths, labels, len(class_names))
  whole = _with_groups(checked, class_names, root, grouping)
  if all_as_test:
    folder = GroupedFolder(
        root, class_names, {"test": whole}, grouping, ALL_AS_TEST
    )
  else:
    folder = GroupedFolder(
        root,
        class_names,
        _split(whole, class_names, root, grouping),
        grouping,
        BY_GROUP,
    )
  _log_groups(folder)
  return folder


def _images_below(class_dir: str) -> list[str]:
  """Sorted image files at any depth below `class_dir`, hidden ones left out."""
  found = []
  for folder, folders, files in os.walk(class_dir):
    folders[:] = [f for f in folders if not f.startswith(".")]
    found += [
        os.path.join(folder, f)
        for f in files
        if f.lower().endswith(image_folder.IMAGE_EXTENSIONS)
        and not f.startswith(".")
    ]
  if not found:
    raise UserError(
        f"class folder {class_dir} has no image files"
        f" ({'/'.join(image_folder.IMAGE_EXTENSIONS)}) at any depth; add"
        " images or remove it"
    )
  return sorted(found)


def _with_groups(
    split: image_folder.Split,
    class_names: tuple[str, ...],
    base: str,
    grouping: Grouping,
) -> GroupedSplit:
  """`split` (its images listed class by class, in label order) with each
  image's group key; `base` holds the class folders."""
  keys: list[str] = []
  for label, name in enumerate(class_names):
    paths = [split.paths[i] for i in np.flatnonzero(split.labels == label)]
    keys += groups.group_keys(
        os.path.join(base, name), paths, grouping.rule, grouping.pattern
    )
  return GroupedSplit(split.paths, split.labels, split.skipped, tuple(keys))


def _split(
    whole: GroupedSplit,
    class_names: tuple[str, ...],
    root: str,
    grouping: Grouping,
) -> dict[str, GroupedSplit]:
  """`whole` split by group (`group_split`); each unreadable file goes with
  its group, where its group has a readable image."""
  assignment = group_split.split_by_group(
      whole.labels,
      whole.groups,
      class_names,
      val_fraction=grouping.val_fraction,
      test_fraction=grouping.test_fraction,
      seed=grouping.seed,
      where=root,
      rule=grouping.rule,
      noun=groups.GROUP_NOUNS[grouping.rule],
  )
  split_of = np.array([assignment[key] for key in whole.groups])
  skipped_in = {name: [] for name in SPLIT_NAMES}
  for path in whole.skipped:
    class_dir = os.path.join(root, os.path.relpath(path, root).split(os.sep)[0])
    (key,) = groups.group_keys(
        class_dir, [path], grouping.rule, grouping.pattern
    )
    if key in assignment:
      skipped_in[assignment[key]].append(path)
  return {
      name: GroupedSplit(
          tuple(p for p, s in zip(whole.paths, split_of) if s == name),
          whole.labels[split_of == name],
          tuple(skipped_in[name]),
          tuple(g for g, s in zip(whole.groups, split_of) if s == name),
      )
      for name in SPLIT_NAMES
  }


def _log_groups(folder: GroupedFolder) -> None:
  """How the folder was grouped (and split), and what that risks."""
  rule = folder.grouping.rule
  every = [key for split in folder.splits.values() for key in split.groups]
  own = sum(groups.is_own_group(key) for key in every)
  parts = [
      f"{name} {len(split)} images in {len(set(split.groups))} groups"
      for name, split in folder.splits.items()
  ]
  logging.info(
      "%s (%s) by data.group_by=%r: %s",
      folder.root,
      folder.layout,
      rule,
      ", ".join(parts),
  )
  if rule == "file":
    logging.warning(
        "%s: data.group_by='file' makes every image a group of its own, an"
        " i.i.d. split: frames of one drive, video or photograph can sit in"
        " train and test and inflate the test accuracy",
        folder.root,
    )
  elif own:
    logging.warning(
        "%s: %d of %d images are groups of their own (%s), and so are split"
        " image by image, which can leak",
        folder.root,
        own,
        len(every),
        _why_own(rule),
    )


def _why_own(rule: str) -> str:
  return {
      "subfolder": "they lie directly in their class folder, in no subfolder",
      "prefix": "data.group_pattern finds no prefix in their names",
      "day": "neither EXIF nor their names give a capture day",
  }[rule]


def record(folder: GroupedFolder) -> dict[str, Any]:
  """What split.json records of the folder's split: the rule, and per split
  and class the images, the groups with their image counts, and how many
  images are groups of their own (those are not listed one by one); with a
  digest of each split's files, which a resumed run checks."""
  grouping = folder.grouping
  result = {
      "data_root": folder.root,
      "layout": folder.layout,
      "group_by": grouping.rule,
  }
  if grouping.rule == "prefix":
    result["group_pattern"] = grouping.pattern
  if folder.layout == BY_GROUP:
    result.update(
        val_fraction=grouping.val_fraction,
        test_fraction=grouping.test_fraction,
        split_seed=grouping.seed,
    )
  result["splits"] = {
      name: _split_record(split, folder.root, folder.class_names)
      for name, split in folder.splits.items()
  }
  return result


def _split_record(
    split: GroupedSplit, root: str, class_names: tuple[str, ...]
) -> dict[str, Any]:
  digest = hashlib.sha256(split.labels.astype(np.int32).tobytes())
  for path in split.paths:
    digest.update(os.path.relpath(path, root).encode() + b"\0")
  classes = {}
  for label, name in enumerate(class_names):
    counts: dict[str, int] = {}
    for i in np.flatnonzero(split.labels == label):
      counts[split.groups[i]] = counts.get(split.groups[i], 0) + 1
    alone = [key for key in counts if groups.is_own_group(key)]
    classes[name] = {
        "images": sum(counts.values()),
        "groups": len(counts),
        "images_alone": len(alone),
        "images_per_group": {
            key: counts[key] for key in sorted(set(counts) - set(alone))
        },
    }
  return {
      "images": len(split),
      "groups": len(set(split.groups)),
      "files_sha256": digest.hexdigest(),
      "classes": classes,
  }
