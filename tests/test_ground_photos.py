"""The small real-photo set (scikit-image's brick, grass and gravel photos)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from roadflax.benchmark import audit_recall
from roadflax.configs import default
from roadflax.data import image_folder
from roadflax.datasets import ground_photos
from roadflax.labelling import audit
from tests import helpers


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  return ground_photos.write_folder(
      str(tmp_path_factory.mktemp("ground")),
      train_per_class=40,
      val_per_class=15,
      test_per_class=30,
  )


def test_folder_layout_and_frames(photos):
  folder = image_folder.scan_image_folder(photos)
  assert folder.class_names == ground_photos.CLASSES
  assert [len(folder.splits[s]) for s in ("train", "val", "test")] == [
      120,
      45,
      90,
  ]
  path = folder.splits["test"].paths[0]
  with Image.open(path) as frame:
    assert (frame.format, frame.mode, frame.size) == ("JPEG", "RGB", (360, 240))


def test_frames_are_deterministic_per_seed(tmp_path):
  a = ground_photos.write_folder(
      str(tmp_path / "a"), train_per_class=2, val_per_class=1, test_per_class=1
  )
  b = ground_photos.write_folder(
      str(tmp_path / "b"), train_per_class=2, val_per_class=1, test_per_class=1
  )
  c = ground_photos.write_folder(
      str(tmp_path / "c"),
      train_per_class=2,
      val_per_class=1,
      test_per_class=1,
      seed=1,
  )
  name = os.path.join("train", "gravel", "gravel_0001.jpg")
  read = lambda root: np.asarray(Image.open(os.path.join(root, name)))  # noqa: E731
  np.testing.assert_array_equal(read(a), read(b))
  assert not np.array_equal(read(a), read(c))


def test_splits_are_cut_from_disjoint_rows():
  rng = np.random.default_rng(0)
  bands = list(ground_photos.BANDS.values())
  for (_, end), (start, _) in zip(bands, bands[1:]):
    assert end <= start
  for top_row, end_row in bands:
    for _ in range(200):
      left, top, right, bottom = ground_photos.window(
          (top_row, end_row), 512, rng
      )
      assert top_row <= top < bottom <= end_row and 0 <= left < right <= 512
      assert right - left == (bottom - top) * 3 // 2


def test_colour_alone_does_not_separate_the_classes(photos):
  accuracy = helpers.logistic_regression_accuracy(
      helpers.image_features(photos, "train", helpers.colour_statistics),
      helpers.image_features(photos, "test", helpers.colour_statistics),
  )
  assert accuracy < 0.7


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
  """(folder, workdir) of configs/default.py at 67 px on 60/15/30 ground
  photos per class."""
  return helpers.learning_test_run(
      ground_photos.write_folder,
      tmp_path_factory.mktemp("learned"),
      classify_min_steps=100,
  )


@pytest.mark.slow
def test_default_recipe_learns_real_photos(learned):
  """configs/default.py, at the smallest input size (67 px) and a smaller
  step floor to fit CI, learns the real photos well above chance (1/3):
  0.67-0.77 over seeds 0-3. At this size and budget grass and gravel stay
  hard to tell apart (two of three classes are learned); at the default
  224 px the own-images command measures 95%+ (docs/study/measured.md)."""
  with open(os.path.join(learned[1], "classify", "report.json")) as f:
    assert json.load(f)["accuracy"] >= 0.6


@pytest.mark.slow
def test_the_audit_finds_flipped_labels_of_real_photos(learned, tmp_path):
  """10% of the labels flipped (three draws): the audit with that run's
  encoder ranks on average at least 80% of them among as many top-ranked
  images (84.8, 85.7 and 84.4% measured; docs/guides/labelling.md)."""
  folder, workdir = learned
  recalls = []
  for seed in range(3):
    copy = str(tmp_path / f"flipped{seed}")
    flipped = audit_recall.flipped_copy(folder, copy, 0.1, seed)
    data = default.get_config().data
    data.root = copy
    found = audit.audit_workdir(workdir, data)
    recalls.append(audit_recall.recall(found["rows"], flipped))
  assert np.mean(recalls) >= 0.8, recalls
