"""main.py as a user runs it: one clear line and a non-zero exit for each mistake,
and the end-to-end train -> evaluate -> predict path."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(*args, check=False):
  result = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


def error_line(result):
  """The last line on stderr, which must carry the message."""
  assert result.returncode != 0
  return result.stderr.strip().splitlines()[-1]


def tiny_flags(root):
  flags = ["--config=configs/default.py", f"--config.data.root={root}",
           "--config.data.image_size=67", "--config.eval_batch_size=8",
           "--config.log_every_steps=1"]
  for stage in ("pretrain", "classify"):
    flags += [f"--config.stages.{stage}.steps=2", f"--config.stages.{stage}.batch_size=4"]
  return flags + ["--config.stages.classify.learning_rate=0.01"]


def test_summary_prints_the_parameter_table():
  result = main("--mode=summary", "--config=configs/default.py", check=True)
  assert "classifier (encoder + head): 47,349,379" in result.stdout


@pytest.mark.parametrize("flags,message", [
    (["--config.stages.classify.epochz=3"], "epochz"),
    (["--config.stages.classify.epochs=three"], "epochs"),
    (["--config.stages.classify.optimizer=rmsprop"], "is not one of sgd, momentum, adam, adamw"),
    (["--config.data.image_size=64"], "below the minimum of 67x67"),
    (["--config.data.root="], "no data.root is given"),
    (["--config.stage_order=('classify','pretrain')"], "must name an earlier stage"),
])
def test_config_mistakes_end_in_one_line(flags, message, data_root, tmp_path):
  result = main("--config=configs/default.py", f"--config.data.root={data_root}",
                f"--workdir={tmp_path}", *flags)
  assert message in error_line(result)
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("make,message", [
    (lambda root: None, "does not exist"),
    (lambda root: os.makedirs(os.path.join(root, "train")), "has no class folders"),
])
def test_data_mistakes_end_in_one_line(make, message, tmp_path):
  root = str(tmp_path / "data")
  make(root)
  result = main("--config=configs/default.py", f"--config.data.root={root}",
                f"--workdir={tmp_path / 'run'}")
  assert message in error_line(result)
  assert "Traceback" not in result.stderr


def test_evaluate_and_predict_need_a_trained_workdir(tmp_path):
  result = main("--mode=evaluate", f"--workdir={tmp_path}")
  assert "not a roadflax workdir" in error_line(result)


@pytest.mark.slow
def test_train_evaluate_predict_end_to_end(data_root, tmp_path):
  workdir = str(tmp_path / "run")
  main(*tiny_flags(data_root), f"--workdir={workdir}", check=True)
  with open(os.path.join(workdir, "classify", "report.json")) as f:
    assert json.load(f)["num_examples"] == 12

  report_md = os.path.join(workdir, "classify", "report.md")
  os.remove(report_md)
  result = main("--mode=evaluate", f"--workdir={workdir}", check=True)
  assert os.path.exists(report_md)
  assert "| **accuracy** |" in result.stdout

  output = str(tmp_path / "predictions.json")
  image = os.path.join(data_root, "test", "gravel", "000.jpg")
  folder = os.path.join(data_root, "test", "asphalt")
  result = main("--mode=predict", f"--workdir={workdir}", f"--input={image}",
                f"--input={folder}", f"--output={output}", check=True)
  with open(output) as f:
    predictions = json.load(f)["predictions"]
  assert len(predictions) == 5
  assert set(predictions[0]["probabilities"]) == set(helpers.CLASSES)
  assert sum(predictions[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
  assert f"{image}: " in result.stdout

  not_an_image = tmp_path / "notes.jpg"
  not_an_image.write_text("not a picture")
  result = main("--mode=predict", f"--workdir={workdir}", f"--input={not_an_image}")
  assert "notes.jpg" in error_line(result)
  assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_kill_9_then_rerun_ends_like_an_uninterrupted_run(data_root, tmp_path):
  """Kill -9 right after the first mid-stage checkpoint lands, run the same
  command again, and compare with a run that was never interrupted."""
  flags = tiny_flags(data_root) + [
      "--config.stage_order=('classify',)", "--config.stages.classify.init_from=",
      "--config.stages.classify.steps=8", "--config.checkpoint_every_steps=2"]
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  main(*flags, f"--workdir={straight}", check=True)

  process = subprocess.Popen([sys.executable, "main.py", *flags, f"--workdir={killed}"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first_checkpoint = os.path.join(killed, "classify", "checkpoints", "2")
  deadline = time.time() + 300
  while not os.path.exists(first_checkpoint) and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not os.path.exists(os.path.join(killed, "classify", "summary.json")), \
      "the run finished before it could be killed"
  main(*flags, f"--workdir={killed}", check=True)

  step_a, params_a = helpers.final_params(os.path.join(straight, "classify"))
  step_b, params_b = helpers.final_params(os.path.join(killed, "classify"))
  assert step_a == step_b == 8
  for a, b in zip(jax.tree_util.tree_leaves(params_a), jax.tree_util.tree_leaves(params_b)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_rscd3_config_trains_from_the_release_zip(tmp_path):
  from tests import fake_rscd
  release = fake_rscd.write_release(str(tmp_path / "release"),
                                    {"train": 8, "validation": 2, "test": 3})
  fake_rscd.zip_release(release, str(tmp_path / "download" / "RSCD.zip"))
  workdir = str(tmp_path / "run")
  flags = ["--config=configs/rscd3.py", f"--config.data.manual_dir={tmp_path / 'download'}",
           f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.image_size=67",
           "--config.eval_batch_size=8", "--config.stages.classify.learning_rate=0.01"]
  for stage in ("pretrain", "classify"):
    flags += [f"--config.stages.{stage}.steps=2", f"--config.stages.{stage}.batch_size=4"]
  result = main(*flags, f"--workdir={workdir}", check=True)
  assert "train: 24 images (dry_asphalt_smooth 8, dry_concrete_smooth 8, dry_gravel 8)" in (
      result.stderr)
  with open(os.path.join(workdir, "classify", "report.json")) as f:
    assert json.load(f)["num_examples"] == 9


def test_rscd_without_a_release_ends_in_one_line(tmp_path):
  result = main("--config=configs/rscd3.py", f"--config.data.data_dir={tmp_path}",
                f"--workdir={tmp_path / 'run'}")
  assert "set --config.data.manual_dir" in error_line(result)
