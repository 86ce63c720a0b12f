"""`python -m roadflax.benchmark --suite=model` at the smallest size: both
systems build the same network, and the tables say what was measured."""

import json
import math
import os
import subprocess
import sys

import pytest

from roadflax.benchmark import model_benchmark
from tests import helpers

# The classifier at 67x67 and 3 classes (tests/test_compare.py has the count).
PARAMETERS = 22_183_555
PHASES = ("train", "infer")


@pytest.mark.slow
def test_model_suite_times_jax_against_keras_on_the_same_network(tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "roadflax.benchmark",
          "--suite=model",
          "--image_size=67",
          "--model_batch_size=2",
          "--model_steps=1",
          f"--workdir={tmp_path}",
      ],
      cwd=helpers.ROOT,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "model_benchmark.json") as f:
    figures = json.load(f)
  assert list(figures) == list(model_benchmark.SYSTEMS) == ["jax", "keras"]
  for system in figures.values():
    assert system["parameters"] == PARAMETERS
    for phase in PHASES:
      speed = system[f"{phase}_images_per_second"]
      assert math.isfinite(speed) and speed > 0

  # One row per system: its figures as measured, and its ratios to Keras.
  rows = [
      line.strip("|").split(" | ")
      for line in result.stdout.splitlines()
      if line.startswith("| ") and not line.startswith("| system ")
  ]
  assert [row[0].strip() for row in rows] == ["jax", "keras"]
  for row in rows:
    measured, keras = figures[row[0].strip()], figures["keras"]
    for phase, speed, ratio in zip(PHASES, row[1::2], row[2::2]):
      key = f"{phase}_images_per_second"
      assert float(speed) == pytest.approx(measured[key], abs=0.051)
      assert float(ratio.strip().rstrip("x")) == pytest.approx(
          measured[key] / keras[key], abs=0.0051
      )
  assert (
      f"classifier of {PARAMETERS:,} parameters at 67x67, batch 2, float32"
      in (result.stdout)
  )
  assert (tmp_path / "model_benchmark.md").read_text() in result.stdout
  assert not os.path.exists(tmp_path / "pipeline_benchmark.json")


def test_table_gives_ratios_to_keras():
  figures = {
      "jax": {
          "parameters": 10,
          "train_images_per_second": 30.0,
          "infer_images_per_second": 300.0,
      },
      "keras": {
          "parameters": 10,
          "train_images_per_second": 60.0,
          "infer_images_per_second": 200.0,
      },
  }
  table = model_benchmark.table(figures, image_size=224, batch_size=32)
  assert "| jax | 30.0 | 0.50x | 300.0 | 1.50x |" in table
  assert "| keras | 60.0 | 1.00x | 200.0 | 1.00x |" in table


def test_networks_of_different_sizes_are_refused():
  with pytest.raises(RuntimeError, match="differ in size"):
    model_benchmark.check_same_model(
        {"jax": {"parameters": 10}, "keras": {"parameters": 11}}
    )
