"""The label audit: folds of whole groups, confident learning, and the whole
command on a folder with deliberately flipped labels."""

import csv
import os
import shutil
import subprocess
import sys

import numpy as np
from streamlit.testing.v1 import AppTest

from roadflax.benchmark import audit_recall
from roadflax.labelling import audit
from tests import helpers
from tests.test_label_page import label_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_folds_keep_groups_whole_and_alike_in_size():
  groups = [f"drive{k % 7}" for k in range(70)] + ["long"] * 20
  folds = audit.fold_of_groups(groups, 4)
  for group in set(groups):
    assert len({f for g, f in zip(groups, folds) if g == group}) == 1
  sizes = np.bincount(folds)
  assert len(sizes) == 4 and sizes.max() - sizes.min() <= 10


def test_confident_learning_finds_the_confidently_contradicted_labels():
  rng = np.random.default_rng(0)
  labels = np.repeat([0, 1, 2], 30)
  probabilities = np.full((90, 3), 0.1)
  probabilities[np.arange(90), labels] = 0.8  # the model agrees ...
  flipped = rng.choice(90, 9, replace=False)
  truth = labels.copy()
  labels[flipped] = (labels[flipped] + 1) % 3  # ... except with these
  issue, suggested, order = audit.label_issues(probabilities, labels)
  assert set(np.flatnonzero(issue)) == set(flipped)
  assert np.array_equal(suggested[flipped], truth[flipped])
  assert set(order[:9]) == set(flipped)


def test_outliers_are_the_images_unlike_the_rest():
  features = np.random.default_rng(0).normal(size=(50, 8))
  features[17] += 12
  assert np.argmax(audit.outlier_scores(features)) == 17


def test_the_audit_ranks_flipped_labels_first(
    confident_workdir, tmp_path, monkeypatch
):
  """10% of a folder's labels flipped; the audit of the folder with a
  trained run's encoder ranks at least 80% of them among its top 10%."""
  source = os.path.join(os.path.dirname(confident_workdir), "colours")
  root = tmp_path / "flipped"
  flipped = audit_recall.flipped_copy(source, str(root), 0.1)  # file -> class
  workdir = tmp_path / "run"
  shutil.copytree(confident_workdir, workdir, symlinks=True)
  result = subprocess.run(
      [sys.executable, "main.py", "--mode=audit", f"--workdir={workdir}",
       "--config=configs/default.py", f"--config.data.root={root}"],
      cwd=ROOT, capture_output=True, text=True, check=False,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  with open(workdir / "audit" / "audit.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == sum(helpers.COLOUR_SPLITS.values()) * 3
  assert audit_recall.recall(rows, flipped) >= 0.8
  for row in rows[: len(flipped)]:
    if row["file"] in flipped:  # the suggestion is the class it came from
      assert row["suggested"] == flipped[row["file"]]
  markdown = (workdir / "audit" / "audit.md").read_text()
  assert "## Labels that look wrong" in markdown
  assert "## Near-duplicates across splits" in markdown
  # The app's Label page shows the list for review.
  monkeypatch.setattr(sys, "argv", ["app.py", "--workdir", str(workdir)])
  at = AppTest.from_file(label_script(tmp_path), default_timeout=120)
  at.run()
  assert not at.exception, at.exception
  issues = sum(r["issue"] == "True" for r in rows)
  assert at.expander[0].label == (
      f"Label audit of this run's data: {issues} of {len(rows)} labels look"
      " wrong"
  )
  assert len(at.dataframe[0].value) == issues


def test_a_flipped_copy_moves_a_share_of_images_and_keeps_every_one(tmp_path):
  source = tmp_path / "source"
  helpers.write_image_tree(str(source), {"train": 20, "val": 5, "test": 5})
  flipped = audit_recall.flipped_copy(str(source), str(tmp_path / "c"), 0.2)
  copied = sorted(
      os.path.relpath(os.path.join(d, n), tmp_path / "c")
      for d, _, names in os.walk(tmp_path / "c")
      for n in names
  )
  assert len(copied) == 90
  assert 8 <= len(flipped) <= 30
  for path, true_class in flipped.items():
    assert path in copied
    split, label, name = path.split("/")
    assert label != true_class and name.startswith(f"{true_class}-")
  rows = [{"file": f} for f in [*flipped, *copied]]
  assert audit_recall.recall(rows, flipped) == 1.0
