"""Train, validation and test splits made of whole groups, stratified by class.

A folder without split folders is split here: every group (`groups`) goes
to one split, so no drive, video, day or photograph is in two. The
fractions hold per class, over its images: each class's validation and test
splits get about `val_fraction` and `test_fraction` of its images, and
first at least one group holding the class each, so that every split sees
every class when the class has three groups or more. A group of several
classes (one drive over asphalt and gravel) counts for each.

The split is a pure function of the groups, their class counts and the
seed: groups are taken in the order of a hash of (seed, key), so the same
folder splits the same way on every run and machine, and adding a group
moves few others.
"""

import hashlib
from typing import Sequence

import numpy as np
from absl import logging

from roadflax.data.contract import SPLIT_NAMES
from roadflax.errors import UserError

# Splits in the order that the smallest are given their first groups.
_COVER_ORDER = ("test", "val", "train")


def split_by_group(
    labels: np.ndarray,
    groups: Sequence[str],
    class_names: Sequence[str],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    where: str,
    rule: str,
    noun: str,
) -> dict[str, str]:
  """Assigns each group to "train", "val" or "test".

  Args:
    labels: int [N], each image's class.
    groups: [N], each image's group key.
    class_names: the classes, in label order (for messages).
    val_fraction, test_fraction: each class's share of images in val and
      test (train takes the rest).
    seed: picks the order groups are taken in.
    where: the folder, for messages.
    rule: the `data.group_by` rule that made the groups, and `noun` what
      they are ("subfolders", "capture days"), for messages.

  Returns:
    {group key: split name}.

  Raises:
    UserError: a class has images in fewer than three groups.
  """
  keys, group_of = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
  counts = np.zeros((len(keys), len(class_names)), np.int64)
  np.add.at(counts, (group_of, np.asarray(labels)), 1)
  _check_enough(counts, class_names, where, rule, noun)
  fractions = np.array(
      [1 - val_fraction - test_fraction, val_fraction, test_fraction]
  )
  targets = fractions[:, None] * counts.sum(axis=0)[None, :]  # [split, class]
  order = sorted(range(len(keys)), key=lambda g: _order_key(seed, keys[g]))
  split_of = np.full(len(keys), -1)
  filled = np.zeros_like(targets)

  def assign(group: int, split: int) -> None:
    split_of[group] = split
    filled[split] += counts[group]

  present = counts > 0
  for label in np.argsort(present.sum(axis=0), kind="stable"):
    for split in (SPLIT_NAMES.index(name) for name in _COVER_ORDER):
      if filled[split, label] == 0:
        group = _first_fitting(
            [g for g in order if split_of[g] < 0 and present[g, label]],
            counts[:, label],
            targets[split, label],
        )
        if group is not None:
          assign(group, split)
  share = counts / np.maximum(counts.sum(axis=0), 1)  # of its class's images
  for group in (g for g in order if split_of[g] < 0):
    need = (targets - filled) / np.maximum(targets, 1)
    assign(group, int(np.argmax(need @ share[group])))
  _warn_missing(filled, class_names, where)
  return {str(key): SPLIT_NAMES[s] for key, s in zip(keys, split_of)}


def _order_key(seed: int, key: str) -> str:
  return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def _check_enough(
    counts: np.ndarray,
    class_names: Sequence[str],
    where: str,
    rule: str,
    noun: str,
) -> None:
  """A UserError naming the first class with images in fewer than three
  groups: one for each split is the least a split by group needs."""
  for label, name in enumerate(class_names):
    found = int(np.sum(counts[:, label] > 0))
    if found < len(SPLIT_NAMES):
      raise UserError(
          f"class {name!r} under {where} falls into only {found} group(s) by"
          f" data.group_by={rule!r} ({noun}): a split by group needs at least"
          f" {len(SPLIT_NAMES)}, one each for train, val and test; add {noun},"
          " choose another data.group_by, or make train/, val/ and test/"
          " folders"
      )


def _first_fitting(
    candidates: list[int], sizes: np.ndarray, target: float
) -> int | None:
  """The first candidate group no larger than `target`, else the smallest;
  None when there is no candidate."""
  for group in candidates:
    if sizes[group] <= target:
      return group
  return min(candidates, key=lambda g: sizes[g], default=None)


def _warn_missing(
    filled: np.ndarray, class_names: Sequence[str], where: str
) -> None:
  """Says which splits lack a class: possible when groups span classes."""
  missing = [
      f"{split} lacks {name}"
      for s, split in enumerate(SPLIT_NAMES)
      for c, name in enumerate(class_names)
      if filled[s, c] == 0
  ]
  if missing:
    logging.warning(
        "%s: splitting by group left %s: its groups span classes that the"
        " split could not separate",
        where,
        ", ".join(missing),
    )
