"""Folders without split folders, split by group; split.json; the
near-duplicate count between splits; accuracy per group in reports."""

import io
import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from roadflax.configs import default
from roadflax.data import group_split, grouped_folder, groups, image_folder
from roadflax.data import keypoints, near_duplicates
from roadflax.datasets import ground_photos, rscd, sources
from roadflax.errors import UserError
from roadflax.results import group_accuracy
from roadflax.runs import workdirs
from roadflax.training import configuration, evaluate, split_record, train
from tests import helpers

DRIVES = 6  # subfolders per class
PER_DRIVE = 3  # images per subfolder


def write_flat_tree(root, drives=DRIVES, per_drive=PER_DRIVE, seed=0):
  """ROOT/CLASS/driveNN/*.jpg (no split folders), a learnable pattern per
  class, and one image lying directly in each class folder."""
  rng = np.random.default_rng(seed)

  def save(path, label):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = rng.integers(0, 60, (48, 72, 3)) + 60 * label
    Image.fromarray(image.astype(np.uint8)).save(path)

  for label, name in enumerate(helpers.CLASSES):
    for drive in range(drives):
      for i in range(per_drive):
        save(
            os.path.join(root, name, f"drive{drive:02d}", f"{i:03d}.jpg"), label
        )
    save(os.path.join(root, name, "loose.jpg"), label)
  return root


def data_config(root, **overrides):
  data = default.get_config().data
  data.root = str(root)
  data.update(overrides)
  return data


@pytest.fixture(scope="module")
def flat_root(tmp_path_factory):
  return write_flat_tree(str(tmp_path_factory.mktemp("flat")))


@pytest.fixture(scope="module")
def flat_workdir(flat_root, tmp_path_factory):
  """Both tiny stages trained on the flat folder, once."""
  workdir = str(tmp_path_factory.mktemp("flat_run"))
  train.train_and_evaluate(helpers.tiny_config(flat_root), workdir)
  return workdir


def test_a_flat_folder_splits_by_subfolder_with_no_group_in_two_splits(
    flat_root,
):
  dataset = sources.load_dataset(data_config(flat_root))
  assert set(dataset.splits) == {"train", "val", "test"}
  assert dataset.class_names == helpers.CLASSES
  every = [p for split in dataset.splits.values() for p in split.paths]
  assert len(every) == len(set(every)) == 3 * (DRIVES * PER_DRIVE + 1)
  keys = {name: set(split.groups) for name, split in dataset.splits.items()}
  assert not keys["train"] & keys["val"]
  assert not keys["train"] & keys["test"]
  assert not keys["val"] & keys["test"]
  for split in dataset.splits.values():
    assert set(split.labels) == {0, 1, 2}  # every class in every split
    for path, key in zip(split.paths, split.groups):
      parent = os.path.basename(os.path.dirname(path))
      assert key == (parent if parent.startswith("drive") else _own(path))
  # The same folder splits the same way again; another seed, otherwise.
  again = sources.load_dataset(data_config(flat_root))
  assert again.splits["test"].paths == dataset.splits["test"].paths
  other = sources.load_dataset(data_config(flat_root, split_seed=3))
  assert other.splits["test"].paths != dataset.splits["test"].paths


@pytest.mark.parametrize("rule", groups.GROUP_RULES)
def test_every_rule_splits_a_flat_folder_without_sharing_a_group(
    tmp_path, rule
):
  rng = np.random.default_rng(0)
  for name in helpers.CLASSES:
    for drive in range(1, 6):  # drive d: its own folder, name prefix and day
      folder = tmp_path / name / f"drive{drive}"
      folder.mkdir(parents=True)
      for i in range(2):
        pixels = rng.integers(0, 255, (24, 36, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"IMG_2021050{drive}_{i:03d}.jpg")
  dataset = sources.load_dataset(data_config(tmp_path, group_by=rule))
  keys = {name: set(split.groups) for name, split in dataset.splits.items()}
  assert not (keys["train"] & keys["val"] or keys["train"] & keys["test"])
  assert not keys["val"] & keys["test"]
  every = set().union(*keys.values())
  assert len(every) == {"file": 30}.get(rule, 5)
  if rule == "day":
    assert "2021-05-03" in every


def _own(path):
  """The key of an image that is a group of its own: CLASS/NAME."""
  return "/".join(path.split(os.sep)[-2:])


def test_split_folders_keep_their_split_and_get_groups(data_root):
  dataset = sources.load_dataset(data_config(data_root))
  before = image_folder.scan_image_folder(data_root)
  for name, split in dataset.splits.items():
    assert split.paths == before.splits[name].paths
    assert len(split.groups) == len(split.paths)


def test_fractions_hold_per_class_within_a_group():
  labels = np.repeat([0, 1], 100)
  keys = [f"g{i // 2}" for i in range(200)]  # 100 groups of 2, one class each
  split = group_split.split_by_group(
      labels,
      keys,
      ("a", "b"),
      val_fraction=0.15,
      test_fraction=0.2,
      seed=0,
      where="here",
      rule="subfolder",
      noun="subfolders",
  )
  for label in (0, 1):
    counts = {name: 0 for name in ("train", "val", "test")}
    for key, image_label in zip(keys, labels):
      counts[split[key]] += image_label == label
    assert abs(counts["val"] - 15) <= 2 and abs(counts["test"] - 20) <= 2


@pytest.mark.parametrize(
    "rule, pattern, expected",
    [
        (
            "subfolder",
            groups.DEFAULT_PATTERN,
            ["drive03", "drive03", "clip", "c/IMG_20200101_120000.jpg"],
        ),
        (
            "prefix",
            groups.DEFAULT_PATTERN,
            ["frame", "frame", "clip", "IMG_20200101"],
        ),
        ("prefix", r"^[A-Za-z]+", ["frame", "frame", "clip", "IMG"]),
        (
            "file",
            groups.DEFAULT_PATTERN,
            [
                "c/drive03/frame_0001.jpg",
                "c/drive03/deeper/frame_0002.jpg",
                "c/clip/clip-7.png",
                "c/IMG_20200101_120000.jpg",
            ],
        ),
    ],
)
def test_group_rules_name_the_group_of_each_image(
    tmp_path, rule, pattern, expected
):
  class_dir = tmp_path / "c"
  paths = [
      class_dir / "drive03" / "frame_0001.jpg",
      class_dir / "drive03" / "deeper" / "frame_0002.jpg",
      class_dir / "clip" / "clip-7.png",
      class_dir / "IMG_20200101_120000.jpg",
  ]
  assert (
      groups.group_keys(str(class_dir), [str(p) for p in paths], rule, pattern)
      == expected
  )


def test_the_day_rule_reads_exif_first_then_the_file_name(tmp_path):
  tags = Image.Exif()
  tags.get_ifd(0x8769)[0x9003] = "2021:05:03 10:11:12"  # DateTimeOriginal
  picture = Image.new("RGB", (8, 8))
  paths = {
      "IMG_20200101_120000.jpg": tags,  # EXIF wins over the name
      "IMG_20200101_130000.jpg": None,
      "202201252341401-dry-asphalt-smooth.jpg": None,  # RSCD's names
      "frame_0001.jpg": None,  # neither: a group of its own
  }
  for name, exif in paths.items():
    buffer = io.BytesIO()
    picture.save(
        buffer, "JPEG", **({"exif": exif.tobytes()} if exif is not None else {})
    )
    (tmp_path / name).write_bytes(buffer.getvalue())
  keys = groups.group_keys(
      str(tmp_path), [str(tmp_path / n) for n in paths], "day"
  )
  assert keys == [
      "2021-05-03",
      "2020-01-01",
      "2022-01-25",
      f"{tmp_path.name}/frame_0001.jpg",
  ]
  # RSCD's by-day variants use this very rule.
  assert rscd.capture_day is groups.capture_day


def test_too_few_groups_is_one_error_line_naming_the_class(tmp_path):
  root = write_flat_tree(str(tmp_path / "few"))
  gravel = os.path.join(root, "gravel")
  os.remove(os.path.join(gravel, "loose.jpg"))
  for drive in range(2, DRIVES):
    shutil.rmtree(os.path.join(gravel, f"drive{drive:02d}"))
  line = helpers.error_line(
      helpers.run_main(*helpers.tiny_flags(root), f"--workdir={tmp_path / 'w'}")
  )
  assert "class 'gravel'" in line
  assert "only 2 group(s) by data.group_by='subfolder'" in line
  assert not os.path.exists(tmp_path / "w" / workdirs.SPLIT_FILE)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("group_by", "video", "data.group_by='video' is not one of"),
        ("test_fraction", 0.9, "leave nothing to train on"),
        ("val_fraction", 0.0, "must be in (0, 1)"),
        ("near_duplicate_images", -1, "must be >= 0"),
    ],
)
def test_bad_grouping_settings_are_refused(key, value, message):
  config = helpers.tiny_config("/data")
  config.data[key] = value
  with pytest.raises(UserError, match=re.escape(message)) as error:
    configuration.check_config(config)
  assert "\n" not in str(error.value)


def test_a_bad_group_pattern_is_refused():
  config = helpers.tiny_config("/data")
  config.data.update(group_by="prefix", group_pattern="(unclosed")
  with pytest.raises(UserError, match="is not a regular expression"):
    configuration.check_config(config)


def test_split_json_records_the_groups_of_each_split(flat_workdir, flat_root):
  with open(os.path.join(flat_workdir, workdirs.SPLIT_FILE)) as f:
    record = json.load(f)
  assert record["layout"] == grouped_folder.BY_GROUP
  assert record["group_by"] == "subfolder"
  assert (record["val_fraction"], record["test_fraction"]) == (0.15, 0.2)
  seen = {}
  for name, split in record["splits"].items():
    assert split["images"] == sum(
        c["images"] for c in split["classes"].values()
    )
    for entry in split["classes"].values():
      listed = entry["images_per_group"]
      assert sum(listed.values()) + entry["images_alone"] == entry["images"]
      for key in listed:
        assert seen.setdefault(key, name) == name  # one split per group
  assert sorted(seen) == [f"drive{d:02d}" for d in range(DRIVES)]
  alone = [
      entry["images_alone"]
      for split in record["splits"].values()
      for entry in split["classes"].values()
  ]
  assert sum(alone) == 3  # each class's loose image
  duplicates = record["near_duplicates"]
  assert duplicates["compared"]["test"] == record["splits"]["test"]["images"]
  assert duplicates["test"]["images_with_near_duplicate"] == 0


def test_a_resumed_run_checks_its_split(flat_workdir, flat_root, tmp_path):
  # The same folder splits the same way: the run goes on, split.json stays.
  split_json = os.path.join(flat_workdir, workdirs.SPLIT_FILE)
  with open(split_json) as f:
    written = f.read()
  train.train_and_evaluate(helpers.tiny_config(flat_root), flat_workdir)
  with open(split_json) as f:
    assert f.read() == written
  # A group added to the folder would move groups between splits.
  changed = shutil.copytree(flat_root, tmp_path / "changed")
  shutil.copytree(changed / "asphalt" / "drive00", changed / "asphalt" / "new")
  with pytest.raises(UserError, match="no longer splits as") as error:
    split_record.check_resumed(
        flat_workdir, sources.load_dataset(data_config(changed))
    )
  assert "\n" not in str(error.value)


def test_a_run_on_split_folders_records_them_with_their_groups(
    trained_workdir,
):
  with open(os.path.join(trained_workdir, workdirs.SPLIT_FILE)) as f:
    record = json.load(f)
  assert record["layout"] == grouped_folder.SPLIT_FOLDERS
  assert "val_fraction" not in record  # the folders are the split
  assert record["splits"]["test"]["images"] == 12
  assert record["near_duplicates"]["test"]["images_with_near_duplicate"] == 0


def test_no_near_duplicate_check_when_switched_off(data_root, tmp_path):
  data = data_config(data_root, near_duplicate_images=0)
  record = split_record.record_split(
      str(tmp_path), sources.load_dataset(data), data
  )
  assert "near_duplicates" not in record
  assert os.path.exists(tmp_path / workdirs.SPLIT_FILE)


def test_the_test_report_has_accuracy_per_group(flat_workdir):
  with open(os.path.join(flat_workdir, "classify", "report.json")) as f:
    report = json.load(f)
  per_group = report["per_group"]
  assert sum(g["images"] for g in per_group.values()) == report["num_examples"]
  accuracies = [g["accuracy"] for g in per_group.values()]
  assert accuracies == sorted(accuracies)  # worst first
  correct = sum(g["correct"] for g in per_group.values())
  assert correct == pytest.approx(report["accuracy"] * report["num_examples"])
  with open(os.path.join(flat_workdir, "classify", "report.md")) as f:
    assert "## Accuracy per group" in f.read()


def test_accuracy_per_group_lists_the_worst_groups_first():
  labels = np.array([0, 0, 1, 1, 1, 0])
  predicted = np.array([0, 1, 1, 1, 0, 0])
  keys = ["day1", "day1", "day2", "day2", "day3", "day3"]
  per_group = group_accuracy.per_group(labels, predicted, keys, ("a", "b"))
  assert list(per_group) == ["day1", "day3", "day2"]
  assert per_group["day3"] == {
      "images": 2,
      "correct": 1,
      "accuracy": 0.5,
      "classes": ["a", "b"],
  }
  # Single images are no groups to summarise.
  assert (
      group_accuracy.report_entry(["x", "y"], labels[:2], labels[:2], "ab")
      == {}
  )
  many = {f"g{i:03d}": per_group["day1"] for i in range(40)}
  lines = group_accuracy.markdown(
      many, lambda cells: " | ".join(map(str, cells))
  )
  assert lines[0] == "## Accuracy per group (40 groups, lowest first)"
  assert (
      sum(line.startswith("g0") for line in lines)
      == group_accuracy.MARKDOWN_GROUPS
  )
  assert lines[-1] == "10 more groups in report.json."


def test_evaluating_another_flat_folder_tests_all_of_it_by_group(
    flat_workdir, tmp_path
):
  other = write_flat_tree(str(tmp_path / "other"), drives=2, seed=7)
  workdir = helpers.linked_workdir(flat_workdir, tmp_path / "eval")
  shutil.copy(
      os.path.join(flat_workdir, "classify", workdirs.CALIBRATION_FILE),
      os.path.join(workdir, "classify"),
  )
  evaluate.evaluate_workdir(workdir, data_config(other))
  with open(os.path.join(workdir, "classify", "report.json")) as f:
    report = json.load(f)
  assert report["data_root"] == other
  assert report["num_examples"] == 3 * (2 * PER_DRIVE + 1)  # all of it
  assert {"drive00", "drive01"} <= set(report["per_group"])
  assert report["per_group"]["drive00"]["images"] == 3 * PER_DRIVE


def _crop(photo, box, rng, mirror=False):
  """A 240x360 JPEG frame of `photo`'s `box`, re-exposed."""
  frame = photo.crop(box).resize((360, 240), Image.Resampling.BICUBIC)
  if mirror:
    frame = frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  pixels = np.asarray(frame, np.float32) ** rng.uniform(0.8, 1.2)
  pixels = pixels / pixels.max() * 255 * rng.uniform(0.7, 1.0)
  buffer = io.BytesIO()
  Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=90)
  return Image.open(buffer)


def write_photo_tree(root, leaky, seed=0):
  """ROOT/{train,val,test}/gravel/ of frames cut from one photograph: from
  overlapping windows (`leaky`), or train, val and test from separate
  bands of rows (clean: no test pixel was seen in training)."""
  photo = ground_photos.source_photo("gravel")
  rng = np.random.default_rng(seed)
  bands = {"train": (0, 300), "val": (300, 400), "test": (400, 512)}
  counts = {"train": 60, "val": 4, "test": 8}
  for split, count in counts.items():
    top_row, end_row = (0, 512) if leaky else bands[split]
    os.makedirs(os.path.join(root, split, "gravel"))
    for i in range(count):
      rows = int(rng.integers(64, min(128, end_row - top_row) + 1))
      top = int(rng.integers(top_row, end_row - rows + 1))
      left = int(rng.integers(0, 512 - rows * 3 // 2 + 1))
      box = (left, top, left + rows * 3 // 2, top + rows)
      _crop(photo, box, rng, mirror=i % 2 == 1).save(
          os.path.join(root, split, "gravel", f"{split}_{i:02d}.jpg")
      )
  return root


@pytest.mark.parametrize("leaky", [True, False])
def test_the_leak_line_counts_near_duplicates_only_in_a_leaky_folder(
    tmp_path, caplog, leaky
):
  root = write_photo_tree(str(tmp_path / "photos"), leaky)
  dataset = sources.load_dataset(data_config(root))
  os.makedirs(tmp_path / "w")
  with caplog.at_level(logging.INFO, logger="absl"):
    record = split_record.record_split(
        str(tmp_path / "w"), dataset, data_config(root)
    )
  lines = [
      r.getMessage()
      for r in caplog.records
      if "near-duplicates" in r.getMessage()
  ]
  assert len(lines) == 1
  found = record["near_duplicates"]["test"]["images_with_near_duplicate"]
  if leaky:
    assert found >= 7  # nearly every test frame overlaps a train frame
    assert f"{found} of 8 test images" in lines[0]
    assert "e.g. test/gravel/test_" in lines[0]
  else:
    assert found == 0
    assert "0 of 8 test images and 0 of 4 val images" in lines[0]


def test_a_mirrored_re_exposed_copy_is_a_near_duplicate_and_other_photos_are_not():
  rng = np.random.default_rng(0)
  train = [
      _crop(ground_photos.source_photo(name), (0, 0, 300, 200), rng)
      for name in ground_photos.CLASSES
  ]
  held_out = [
      _crop(ground_photos.source_photo("grass"), (30, 20, 300, 200), rng, True),
      _crop(ground_photos.source_photo("gravel"), (0, 300, 300, 500), rng),
  ]

  def found(images):
    return [keypoints.features(keypoints.thumbnail(i)) for i in images]

  matches = near_duplicates.find_near_duplicates(found(held_out), found(train))
  assert set(matches) == {0}  # the grass crop, mirrored; not other gravel
  assert matches[0].reference == ground_photos.CLASSES.index("grass")
  assert matches[0].mirrored
