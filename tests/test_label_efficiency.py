"""The label-efficiency benchmark: few labels drawn across groups, and one
small run end to end (from scratch and from a pre-training on a pool)."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from roadflax.benchmark import label_efficiency
from tests import helpers


def _frames(groups_per_class: int, frames_per_group: int):
  paths, labels, groups = [], [], []
  for label in range(2):
    for group in range(groups_per_class):
      for frame in range(frames_per_group):
        paths.append(f"c{label}/g{group}/{frame}.jpg")
        labels.append(label)
        groups.append(f"c{label}/g{group}")
  return paths, np.array(labels), groups


def test_few_labels_are_drawn_across_the_groups_of_each_class():
  paths, labels, groups = _frames(groups_per_class=3, frames_per_group=10)
  chosen = label_efficiency.labelled_subset(
      paths, labels, groups, ["a", "b"], per_class=4, seed=0
  )
  for label, name in enumerate(["a", "b"]):
    assert len(chosen[name]) == 4
    assert all(p.startswith(f"c{label}/") for p in chosen[name])
    assert len({p.split("/")[1] for p in chosen[name]}) == 3  # every group
  again = label_efficiency.labelled_subset(
      paths, labels, groups, ["a", "b"], per_class=4, seed=0
  )
  other = label_efficiency.labelled_subset(
      paths, labels, groups, ["a", "b"], per_class=4, seed=1
  )
  assert again == chosen and other != chosen


def test_more_labels_than_frames_is_refused():
  paths, labels, groups = _frames(groups_per_class=1, frames_per_group=3)
  with pytest.raises(ValueError, match="fewer than 5"):
    label_efficiency.labelled_subset(
        paths, labels, groups, ["a", "b"], per_class=5, seed=0
    )


@pytest.mark.slow
def test_a_small_benchmark_runs_end_to_end(data_root, tmp_path):
  pool = tmp_path / "pool"
  pool.mkdir()
  rng = np.random.default_rng(0)
  for i in range(8):
    pixels = rng.integers(0, 255, (48, 72, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(pool / f"{i}.jpg")
  output = tmp_path / "labels.json"
  label_efficiency.main([
      f"--root={data_root}",
      f"--pool={pool}",
      "--labels=2",
      "--seeds=0",
      "--pretrainings=contrastive",
      "--pseudo_label_threshold=0.3",
      "--head_units=16",
      "--batch_size=4",
      "--val_per_class=2",
      "--pretrain_steps=2",
      "--classify_steps=2",
      f"--workdir={tmp_path / 'work'}",
      f"--output={output}",
  ])
  results = json.loads(output.read_text())
  assert {"command", "machine", "commit", "date"} <= set(results)
  cell = results["cells"]["2"]
  assert set(cell) == {"scratch", "contrastive", "scratch+pseudo_labels"}
  for name, start in cell.items():
    assert 0 <= start["summary"]["accuracy"]["mean"] <= 1
    if name != "scratch+pseudo_labels":
      assert 0 <= start["summary"]["probe_accuracy"]["mean"] <= 1
  # Every one of the 8 pool images has a top probability above 0.3.
  assert cell["scratch+pseudo_labels"]["runs"][0]["pseudo_labelled"] == 8
  assert "Linear probe" in (tmp_path / "labels.md").read_text()
  assert (tmp_path / "labels.png").read_bytes()[:4] == b"\x89PNG"
  tree = tmp_path / "work" / "seed0" / "labels2" / "data"
  assert len(os.listdir(tree / "train" / "asphalt")) == 2
  assert len(os.listdir(tree / "val" / "asphalt")) == 2
  summary = json.loads(
      (
          tmp_path
          / "work"
          / "seed0"
          / "pretrain_contrastive"
          / "pretrain"
          / "summary.json"
      ).read_text()
  )
  assert summary["trained_on"]["images"] == 8
  assert "| 2 |" in (tmp_path / "labels.md").read_text()


def test_the_benchmark_suite_labels_runs_it_with_its_flags(tmp_path):
  # In a process of its own (the suite's flags are absl's), with
  # label_efficiency.main replaced by one that records its arguments.
  program = """
import json, os, sys
from absl import app
from roadflax.benchmark import label_efficiency, suites

def fake_main(argv):
  output = next(a for a in argv if a.startswith("--output="))[9:]
  for extension in (".json", ".md", ".png"):
    with open(os.path.splitext(output)[0] + extension, "w") as f:
      f.write(json.dumps(argv) if extension == ".json" else extension)

label_efficiency.main = fake_main
app.run(suites.main, argv=["benchmark", *sys.argv[1:]])
"""
  subprocess.run(
      [
          sys.executable,
          "-c",
          program,
          "--suite=labels",
          "--labels_root=/data/roads",
          "--labels=10",
          "--labels_pretrainings=contrastive",
          f"--workdir={tmp_path}",
          f"--results_dir={tmp_path / 'results'}",
      ],
      cwd=helpers.ROOT,
      check=True,
      timeout=300,
  )
  argv = json.loads(
      (tmp_path / "results" / "label_efficiency.json").read_text()
  )
  assert "--root=/data/roads" in argv and "--labels=10" in argv
  assert "--pretrainings=contrastive" in argv and "--image_size=67" in argv
  for extension in (".md", ".png"):
    assert (
        tmp_path / "results" / f"label_efficiency{extension}"
    ).read_text() == extension
