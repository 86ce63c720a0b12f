"""`python -m roadflax.benchmark --suite=model` at the smallest size: both
systems build the same network, and the tables say what was measured."""

import json
import os
import subprocess
import sys

import pytest

from roadflax.benchmark import model_benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_model_suite_times_jax_against_keras_on_the_same_network(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "roadflax.benchmark", "--suite=model", "--image_size=67",
       "--model_batch_size=2", "--model_steps=1", f"--workdir={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "model_benchmark.json") as f:
    figures = json.load(f)
  assert set(figures) == {"jax", "keras"}
  # The classifier at 67x67 and 3 classes (tests/test_models.py has the count).
  assert figures["jax"]["parameters"] == figures["keras"]["parameters"] == 22_183_555
  for system in figures.values():
    assert system["train_images_per_second"] > 0 and system["infer_images_per_second"] > 0
  assert "| keras | " in result.stdout and "| 1.00x |" in result.stdout
  assert not os.path.exists(tmp_path / "pipeline_benchmark.json")


def test_table_gives_ratios_to_keras():
  figures = {"jax": {"parameters": 10, "train_images_per_second": 30.0,
                     "infer_images_per_second": 300.0},
             "keras": {"parameters": 10, "train_images_per_second": 60.0,
                       "infer_images_per_second": 200.0}}
  table = model_benchmark.table(figures, image_size=224, batch_size=32)
  assert "| jax | 30.0 | 0.50x | 300.0 | 1.50x |" in table
  assert "| keras | 60.0 | 1.00x | 200.0 | 1.00x |" in table


def test_networks_of_different_sizes_are_refused():
  with pytest.raises(RuntimeError, match="differ in size"):
    model_benchmark.check_same_model({"jax": {"parameters": 10}, "keras": {"parameters": 11}})
