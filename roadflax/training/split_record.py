"""WORKDIR/split.json: the images a run trains, validates and tests on, by
group, and the near-duplicates between its splits.

Written once, when a workdir first trains, before any stage: the rule that
made the groups, and per split and class the groups and their image counts,
with a digest of the files; and how many val and test images have a
near-duplicate in train (`data.near_duplicates`), which one log line also
says. A resumed run splits its folder again (the split is a pure function of
the files and the config) and checks that it gets the same split: a folder
split by group whose images, `data.group_by`, fractions or seed changed
would move groups between train and test halfway through, so that is
refused; split folders define their own split, so a change there is only
warned of. `--mode=evaluate` checks the same (`evaluation_set`), or tests a
folder the model never saw whole.
"""

import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging

from roadflax.data import grouped_folder, near_duplicates
from roadflax.data.contract import DataSet
from roadflax.datasets import sources
from roadflax.errors import UserError
from roadflax.files import atomic_write_json, read_json_if_present
from roadflax.runs import workdirs

_EXAMPLES = 3  # Example pairs kept per held-out split.


def check_resumed(workdir: str, dataset: DataSet) -> None:
  """Before a run writes anything: refuses a folder split by group that no
  longer splits as the workdir's split.json records (and warns of changed
  split folders). Nothing to check in a new workdir or for other sources.

  Raises:
    UserError: the split differs.
  """
  path = os.path.join(workdir, workdirs.SPLIT_FILE)
  found = read_json_if_present(path)
  if found is not None and isinstance(dataset, grouped_folder.GroupedFolder):
    _check_unchanged(found, grouped_folder.record(dataset), path)


def evaluation_set(
    workdir: str,
    config: ml_collections.ConfigDict,
    data_config: ml_collections.ConfigDict | None,
    class_names: list[str],
) -> DataSet:
  """The data `--mode=evaluate` tests WORKDIR's model on: the run's own
  split, checked against its split.json (`config.data` as the run's); or
  another folder (`data_config`), grouped by its own rule and tested whole
  when it has no split folders."""
  trained_on = workdirs.run_config(workdir, None).data
  other = data_config is not None and sources.is_other_folder(
      config.data, trained_on
  )
  if other:
    for key in ("group_by", "group_pattern"):
      config.data[key] = data_config[key]
  dataset = sources.load_dataset_for(
      config.data,
      class_names,
      f"the model in {workdir}",
      trained_on=trained_on,
  )
  if not other:
    check_resumed(workdir, dataset)
  return dataset


def record_split(
    workdir: str, dataset: DataSet, data: ml_collections.ConfigDict
) -> dict[str, Any] | None:
  """Writes WORKDIR/split.json for a folder data set, with the near-duplicate
  count, unless a run wrote it before (`check_resumed` checked it then, and
  its count is logged again); returns what it holds (None: not a folder).
  """
  if not isinstance(dataset, grouped_folder.GroupedFolder):
    return None
  path = os.path.join(workdir, workdirs.SPLIT_FILE)
  found = read_json_if_present(path)
  if found is not None:
    if "near_duplicates" in found:
      _log(found["near_duplicates"], path)
    return found
  record = grouped_folder.record(dataset)
  if (
      data.near_duplicate_images
      and "train" in dataset.splits
      and jax.process_index() == 0
  ):
    record["near_duplicates"] = near_duplicates_between(
        dataset.splits, dataset.root, max_images=data.near_duplicate_images
    )
    _log(record["near_duplicates"], path)
  if jax.process_index() == 0:
    atomic_write_json(path, record)
  return record


def _log(result: dict[str, Any], path: str) -> None:
  """The near-duplicate count in one line: a warning when there are any."""
  line = _summary_line(result, path)
  found = any(
      result[name]["images_with_near_duplicate"]
      for name in result["compared"]
      if name != "train"
  )
  (logging.warning if found else logging.info)("%s", line)


def _check_unchanged(
    found: dict[str, Any], record: dict[str, Any], path: str
) -> None:
  """Refuses a folder split by group that splits otherwise than `found`
  records; warns of changed split folders."""
  difference = _difference(found, record)
  if difference is None:
    return
  if record["layout"] != grouped_folder.BY_GROUP:
    logging.warning(
        "%s differs from what %s records (%s); its split folders define the"
        " split, so the run goes on",
        record["data_root"],
        path,
        difference,
    )
    return
  raise UserError(
      f"{record['data_root']} no longer splits as {path} records"
      f" ({difference}): its images, data.group_by, group_pattern,"
      " val_fraction, test_fraction or split_seed changed since this workdir"
      " started, which would move images between train and test; restore"
      " them or use a new --workdir"
  )


def _difference(found: dict[str, Any], record: dict[str, Any]) -> str | None:
  """The first way `record` differs from `found`, in words; None if none."""
  for key in ("layout", "group_by"):
    if found.get(key) != record[key]:
      return f"{key} {found.get(key)!r} then, {record[key]!r} now"
  for name, split in record["splits"].items():
    then = found.get("splits", {}).get(name)
    if then is None:
      return f"no {name} split then"
    if then.get("files_sha256") != split["files_sha256"]:
      return (
          f"{name}: {then.get('images')} images in {then.get('groups')} groups"
          f" then, {split['images']} in {split['groups']} now"
      )
  return None


def near_duplicates_between(
    splits: Mapping[str, Any], root: str, *, max_images: int
) -> dict[str, Any]:
  """Which held-out images (val, test) have a near-duplicate in train.

  Args:
    splits: "train" and the held-out splits: image paths (`paths`) and, where
      known, each image's group key (`groups`).
    root: the data folder; paths are recorded relative to it.
    max_images: at most this many images of each split are compared, evenly
      spread over it (its classes come one after another): the time grows
      with the images.

  Returns:
    What split.json records: the method, the images compared per split, and
    per held-out split the count of those with a near-duplicate in train and
    a few examples (paths, groups, agreeing points).
  """
  chosen = {
      name: _spread(len(split.paths), max_images)
      for name, split in splits.items()
  }
  every = near_duplicates.features_of(
      [splits[name].paths[i] for name, index in chosen.items() for i in index]
  )
  found, start = {}, 0
  for name, index in chosen.items():
    found[name], start = every[start : start + len(index)], start + len(index)
  result: dict[str, Any] = {
      "method": (
          f"local features (keypoints.py): >= {near_duplicates.MIN_INLIERS}"
          " points agreeing on one zoom and shift, mirrored copies included"
      ),
      "compared": {name: len(index) for name, index in chosen.items()},
      "images": {name: len(split.paths) for name, split in splits.items()},
  }
  train = splits["train"]
  for name in (n for n in splits if n != "train"):
    matches = sorted(
        near_duplicates.find_near_duplicates(
            found[name], found["train"]
        ).values(),
        key=lambda m: (-m.points, m.query),
    )
    result[name] = {
        "images_with_near_duplicate": len(matches),
        "examples": [
            _example(
                (splits[name], chosen[name][m.query]),
                (train, chosen["train"][m.reference]),
                m,
                root,
            )
            for m in matches[:_EXAMPLES]
        ],
    }
  return result


def _example(
    held_out: tuple[Any, int],
    train: tuple[Any, int],
    match: near_duplicates.Match,
    root: str,
) -> dict[str, Any]:
  """A found pair for split.json: each image (split, index) by path and
  group."""
  (query_split, query), (train_split, reference) = held_out, train
  return {
      "image": os.path.relpath(query_split.paths[query], root),
      "train_image": os.path.relpath(train_split.paths[reference], root),
      "groups": [_group(query_split, query), _group(train_split, reference)],
      "points": match.points,
      "mirrored": match.mirrored,
  }


def _spread(count: int, limit: int) -> list[int]:
  """Up to `limit` indices evenly spread over range(count)."""
  if count <= limit:
    return list(range(count))
  return sorted(set(np.linspace(0, count - 1, limit).round().astype(int)))


def _group(split: Any, index: int) -> str | None:
  groups = getattr(split, "groups", None)
  return None if groups is None else groups[index]


def _summary_line(result: dict[str, Any], where: str) -> str:
  """The one log line of `near_duplicates_between`'s result: how many held-out
  images have a near-duplicate in train, with a few examples."""
  compared, images = result["compared"], result["images"]
  held_out = [name for name in ("test", "val") if name in compared]

  def some(name: str) -> str:
    sample = compared[name] < images[name]
    return f"{compared[name]} {name} images" + (
        f" (a sample of {images[name]})" if sample else ""
    )

  counts = " and ".join(
      f"{result[name]['images_with_near_duplicate']} of {some(name)}"
      for name in held_out
  )
  examples = [e for name in held_out for e in result[name]["examples"]]
  line = (
      f"near-duplicates: {counts} have a near-duplicate among {some('train')}"
  )
  if not examples:
    return f"{line} ({where})"
  shown = "; ".join(
      f"{e['image']} ~ {e['train_image']} (groups {e['groups'][0]} ~"
      f" {e['groups'][1]}, {e['points']} points)"
      for e in examples[:_EXAMPLES]
  )
  return (
      f"{line}, e.g. {shown}: their accuracy measures memory, not the"
      f" surface; regroup (data.group_by) or remove them ({where})"
  )
