"""The RSCD release reader and the `rscd` TFDS builder, on a generated release
with the real layout and names (extracted and zipped, with bad files)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from roadflax.datasets import rscd, rscd_builder  # noqa: F401  (registers rscd)
from tests import fake_rscd

COUNTS = {"train": 6, "validation": 2, "test": 3}
BAD_FILES = {  # Release-named files the builder must skip, by split.
    "test_50k/20210103999999001-dry-gravel.jpg": b"",
    "vali_20k/20210115999999002-dry-asphalt-smooth.jpg": (
        b"<html>not an image</html>"
    ),
    "train/dry_concrete_smooth/20210207999999003-dry-concrete-smooth.jpg": (
        None
    ),  # truncated
}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """A release of 27 classes plus bad files, extracted (in the zip's top
  folder, as unzipping leaves it) and zipped."""
  extracted = str(tmp_path_factory.mktemp("rscd_release"))
  root = os.path.join(extracted, "RSCD dataset-1million")
  fake_rscd.write_release(root, COUNTS, classes=rscd.CLASSES_27)
  for name, data in BAD_FILES.items():
    if data is None:
      good = sorted(os.listdir(os.path.join(root, os.path.dirname(name))))[0]
      with open(os.path.join(root, os.path.dirname(name), good), "rb") as f:
        data = f.read()[:200]
    with open(os.path.join(root, name), "wb") as f:
      f.write(data)
  zipped = str(tmp_path_factory.mktemp("rscd_zip"))
  fake_rscd.zip_release(root, os.path.join(zipped, "RSCD.zip"))
  return {"extracted": extracted, "zip": zipped}


def build(name, manual_dir, data_dir):
  builder = tfds.builder(name, data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
  )
  return builder


def examples(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


def test_class_names_and_attributes():
  assert len(rscd.CLASSES_27) == 27
  assert set(rscd.CLASSES_3) <= set(rscd.CLASSES_27)
  assert rscd.class_attributes("water_concrete_severe") == (
      "water",
      "concrete",
      "severe",
  )
  assert rscd.class_attributes("dry_gravel") == ("dry", "gravel", "")
  assert rscd.class_attributes("fresh_snow") == ("fresh_snow", "", "")
  with pytest.raises(ValueError):
    rscd.class_attributes("dry_sand")


@pytest.mark.parametrize(
    "file_name,label,day",
    [
        (
            "20210115123456789-dry-asphalt-smooth.jpg",
            "dry_asphalt_smooth",
            "2021-01-15",
        ),
        (
            "202201252341401-dry-asphalt-smooth.jpg",
            "dry_asphalt_smooth",
            "2022-01-25",
        ),
        (
            "2022070913430178wet-dry-asphalt-smooth.jpg",
            "dry_asphalt_smooth",
            "2022-07-09",
        ),
        ("20201231000000000-water-gravel.jpg", "water_gravel", "2020-12-31"),
        ("20210301080000123-fresh_snow.jpg", "fresh_snow", "2021-03-01"),
        ("20210301080000123-melted_snow.JPG", "melted_snow", "2021-03-01"),
        (
            "20210399080000123-dry-sand.jpg",
            None,
            "",
        ),  # no such class, no such day
        ("frame-ice.jpg", "ice", ""),
    ],
)
def test_labels_and_days_from_file_names(file_name, label, day):
  assert rscd.label_from_file_name(file_name) == label
  assert rscd.capture_day(file_name) == day


@pytest.mark.parametrize("layout", ["extracted", "zip"])
def test_release_files_reads_the_tree_or_its_zip(release, layout):
  frames, unnamed = rscd.release_files(release[layout])
  per_split = {split: sum(f.split == split for f in frames) for split in COUNTS}
  # Bad files are listed here (they have release names) and skipped at build.
  assert per_split == {split: 27 * n + 1 for split, n in COUNTS.items()}
  assert unnamed == []
  frame = next(
      f
      for f in frames
      if f.split == "test" and f.label == "wet_concrete_slight"
  )
  assert (frame.friction, frame.material, frame.unevenness) == (
      "wet",
      "concrete",
      "slight",
  )
  assert frame.capture_day in {
      f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in fake_rscd.DAYS
  }


@pytest.mark.parametrize("layout", ["extracted", "zip"])
def test_builder_3class_and_27class(release, layout, tmp_path):
  three = build("rscd/3class", release[layout], tmp_path)
  assert three.info.features["label"].names == list(rscd.CLASSES_3)
  # One bad file per split falls in the 3 classes and is skipped.
  assert {s: three.info.splits[s].num_examples for s in COUNTS} == {
      s: 3 * n for s, n in COUNTS.items()
  }
  test = examples(three, "test")
  assert sorted(np.bincount([e["label"] for e in test])) == [3, 3, 3]
  for e in test:
    name = rscd.CLASSES_3[e["label"]]
    assert e["file_name"].decode().endswith(f"-{name.replace('_', '-')}.jpg")
    assert (
        e["friction"].decode(),
        e["material"].decode(),
    ) == rscd.class_attributes(name)[:2]
    assert e["image"].shape == (90, 60, 3)

  twenty_seven = build("rscd/27class", release[layout], tmp_path)
  assert len(twenty_seven.info.features["label"].names) == 27
  assert {s: twenty_seven.info.splits[s].num_examples for s in COUNTS} == {
      s: 27 * n for s, n in COUNTS.items()
  }
  snow = [
      e
      for e in examples(twenty_seven, "validation")
      if twenty_seven.info.features["label"].int2str(e["label"]) == "fresh_snow"
  ]
  assert len(snow) == 2 and all(e["material"] == b"" for e in snow)


def test_by_day_splits_share_no_day(release, tmp_path):
  builder = build("rscd/27class_by_day", release["extracted"], tmp_path)
  days = {
      split: {e["capture_day"] for e in examples(builder, split)}
      for split in ("train", "validation", "test")
  }
  assert all(days.values())
  assert not days["train"] & days["validation"]
  assert not days["train"] & days["test"]
  assert not days["validation"] & days["test"]
  total = sum(builder.info.splits[s].num_examples for s in days)
  assert total == 27 * sum(COUNTS.values())


def test_split_by_day_follows_the_fractions_within_a_day():
  frames = [
      rscd.Frame(
          f"{i}", "", "train", "ice", "ice", "", "", f"2021-01-{1 + i % 30:02d}"
      )
      for i in range(3000)
  ]
  parts = rscd.split_by_day(
      frames, {"validation": 0.1, "test": 0.2, "train": 0.7}
  )
  for name, fraction in (("validation", 0.1), ("test", 0.2)):
    assert (
        abs(len(parts[name]) - fraction * 3000) <= 100
    )  # one day holds 100 frames
  assert sum(map(len, parts.values())) == 3000


def test_size_differences_from_the_published_release_are_warned(
    release, tmp_path, caplog
):
  build("rscd/3class", release["extracted"], tmp_path)
  warned = " ".join(r.getMessage() for r in caplog.records)
  # Sizes are those of the release's files, bad ones included.
  assert "train has 19 frames, the published release 217586" in warned
  assert "test has 10 frames, the published release 7050" in warned
  assert "rscd/3class test: 9 frames, 1 skipped" in warned


@pytest.mark.slow
def test_tfds_build_command(release, tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "roadflax.datasets.tfds_build",
          "rscd",
          "--config=27class",
          f"--manual_dir={release['zip']}",
          f"--data_dir={tmp_path}",
      ],
      capture_output=True,
      text=True,
      timeout=600,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  assert result.returncode == 0, result.stderr[-2000:]
  builder = tfds.builder("rscd/27class", data_dir=str(tmp_path))
  assert builder.info.splits["train"].num_examples == 27 * COUNTS["train"]
