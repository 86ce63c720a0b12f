"""main.py as a user runs it: one clear line and exit status 2 for each
mistake, and the end-to-end train -> evaluate -> predict path.

The mistakes go through main.py's flag parsing and `main` in this process
(`helpers.run_main`); each mode runs once as a command in a process of its own.
"""

import concurrent.futures
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from roadflax.files import read_json
from tests import helpers
from tests.helpers import error_line


def test_summary_prints_the_parameter_table():
  result = helpers.command(
      "--mode=summary", "--config=configs/default.py", check=True
  )
  assert "classifier (encoder + head): 47,349,379" in result.stdout


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--config.stages.classify.epochz=3"], "epochz"),
        (["--config.stages.classify.epochs=three"], "epochs"),
        (
            ["--config.stages.classify.optimizer=rmsprop"],
            "is not one of sgd, momentum, adam, adamw",
        ),
        (["--config.data.image_size=64"], "below the minimum of 67x67"),
        (["--config.model.head_units=0"], "head_units=0 must be at least 1"),
        (["--config.profile_steps=-1"], "profile_steps=-1 must be >= 0"),
        (["--config.data.root="], "no data.root is given"),
        (
            ["--config.stage_order=('classify','pretrain')"],
            "must name an earlier stage",
        ),
    ],
)
def test_config_mistakes_end_in_one_line(flags, message, data_root, tmp_path):
  result = helpers.run_main(
      "--config=configs/default.py",
      f"--config.data.root={data_root}",
      f"--workdir={tmp_path}",
      *flags,
  )
  assert message in error_line(result)
  assert result.stderr.splitlines() == [error_line(result)]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda root: None, "does not exist"),
        (
            lambda root: os.makedirs(os.path.join(root, "train")),
            "has no class folders",
        ),
    ],
)
def test_data_mistakes_end_in_one_line(make, message, tmp_path):
  root = str(tmp_path / "data")
  make(root)
  result = helpers.run_main(
      "--config=configs/default.py",
      f"--config.data.root={root}",
      f"--workdir={tmp_path / 'run'}",
  )
  assert message in error_line(result)
  assert result.stderr.splitlines() == [error_line(result)]


@pytest.mark.parametrize("mode", ["evaluate", "predict"])
def test_evaluate_and_predict_need_a_trained_workdir(mode, data_root, tmp_path):
  result = helpers.run_main(
      f"--mode={mode}", f"--workdir={tmp_path}", f"--input={data_root}"
  )
  assert result.stderr.splitlines() == [
      f"error: {tmp_path} is not a roadflax workdir (no run.json); train there "
      "first"
  ]
  assert result.returncode == 2


@pytest.mark.slow
def test_train_evaluate_predict_end_to_end(data_root, tmp_path):
  workdir = str(tmp_path / "run")
  helpers.command(
      *helpers.tiny_flags(data_root), f"--workdir={workdir}", check=True
  )
  report_json = os.path.join(workdir, "classify", "report.json")
  trained = read_json(report_json)
  assert trained["num_examples"] == 12

  report_md = os.path.join(workdir, "classify", "report.md")
  os.remove(report_md)
  output = str(tmp_path / "predictions.json")
  image = os.path.join(data_root, "test", "gravel", "000.jpg")
  folder = os.path.join(data_root, "test", "asphalt")
  # Both read the workdir only (evaluation rewrites the report): they run at
  # once, each leaving a core idle much of its time (imports, compiling).
  with concurrent.futures.ThreadPoolExecutor() as pool:
    evaluating = pool.submit(
        helpers.command, "--mode=evaluate", f"--workdir={workdir}", check=True
    )
    predicting = pool.submit(
        helpers.command,
        "--mode=predict",
        f"--workdir={workdir}",
        f"--input={image}",
        f"--input={folder}",
        f"--output={output}",
        check=True,
    )
  evaluation, prediction_run = evaluating.result(), predicting.result()

  # Evaluation rebuilds the same report from the best checkpoint, and fits
  # the same temperature.
  evaluated = read_json(report_json)
  assert evaluated.pop("loss") == pytest.approx(trained.pop("loss"), rel=1e-5)
  refitted, fitted = evaluated.pop("calibration"), trained.pop("calibration")
  for key in ("temperature", "fitted_temperature"):
    assert refitted[key] == pytest.approx(fitted[key], rel=1e-3)
  assert evaluated == trained
  with open(report_md, encoding="utf-8") as f:
    markdown = f.read()
  assert "| **accuracy** |" in markdown
  assert markdown in evaluation.stdout

  predictions = read_json(output)["predictions"]
  assert [p["path"] for p in predictions] == [image] + [
      os.path.join(folder, f"{i:03d}.jpg") for i in range(4)
  ]
  for prediction in predictions:
    probabilities = prediction["probabilities"]
    assert list(probabilities) == list(helpers.CLASSES)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction["class"] == max(probabilities, key=probabilities.get)
    assert (
        f"{prediction['path']}: {prediction['class']}  ("
        in prediction_run.stdout
    )

  not_an_image = tmp_path / "notes.jpg"
  not_an_image.write_text("not a picture")
  result = helpers.run_main(
      "--mode=predict", f"--workdir={workdir}", f"--input={not_an_image}"
  )
  assert "notes.jpg" in error_line(result)
  assert result.stderr.splitlines() == [error_line(result)]


@pytest.mark.slow
def test_kill_9_then_rerun_ends_like_an_uninterrupted_run(data_root, tmp_path):
  """Kill -9 right after the first mid-stage checkpoint lands, run the same
  command again, and compare with a run that was never interrupted (those
  two in this process: only the killed run needs a process of its own)."""
  flags = helpers.tiny_flags(data_root) + [
      "--config.stage_order=('classify',)",
      "--config.stages.classify.init_from=",
      "--config.stages.classify.steps=8",
      "--config.checkpoint_every_steps=2",
  ]
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  process = subprocess.Popen(
      [sys.executable, "main.py", *flags, f"--workdir={killed}"],
      cwd=helpers.ROOT,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  first_checkpoint = os.path.join(killed, "classify", "checkpoints", "2")

  def kill_at_the_first_checkpoint():
    deadline = time.time() + 300
    while (
        not os.path.exists(first_checkpoint)
        and process.poll() is None
        and time.time() < deadline
    ):
      time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()

  # The uninterrupted run meanwhile: the other process leaves a core idle
  # much of its time (imports, compiling).
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    killing = pool.submit(kill_at_the_first_checkpoint)
    helpers.run_main(*flags, f"--workdir={straight}", check=True)
  killing.result()
  assert os.path.exists(
      first_checkpoint
  ), "the run ended before its first checkpoint"
  assert not os.path.exists(
      os.path.join(killed, "classify", "summary.json")
  ), "the run finished before it could be killed"
  helpers.run_main(*flags, f"--workdir={killed}", check=True)

  step_a, params_a = helpers.final_params(os.path.join(straight, "classify"))
  step_b, params_b = helpers.final_params(os.path.join(killed, "classify"))
  assert step_a == step_b == 8
  for a, b in zip(
      jax.tree_util.tree_leaves(params_a), jax.tree_util.tree_leaves(params_b)
  ):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_rscd3_config_trains_from_the_release_zip(tmp_path, caplog):
  from tests import fake_rscd

  release = fake_rscd.write_release(
      str(tmp_path / "release"), {"train": 8, "validation": 2, "test": 3}
  )
  fake_rscd.zip_release(release, str(tmp_path / "download" / "RSCD.zip"))
  workdir = str(tmp_path / "run")
  flags = [
      "--config=configs/rscd3.py",
      f"--config.data.manual_dir={tmp_path / 'download'}",
      f"--config.data.data_dir={tmp_path / 'tfds'}",
      "--config.data.image_size=67",
      "--config.eval_batch_size=8",
      # The release's path into training, not the recipe: the classifier.
      "--config.stage_order=('classify',)",
      "--config.stages.classify.init_from=",
      "--config.stages.classify.learning_rate=0.01",
      "--config.stages.classify.steps=2",
      "--config.stages.classify.batch_size=4",
  ]
  caplog.set_level(logging.INFO)
  helpers.run_main(*flags, f"--workdir={workdir}", check=True)
  assert (
      "train: 24 images (dry_asphalt_smooth 8, dry_concrete_smooth 8,"
      " dry_gravel 8)"
      in (caplog.text)
  )
  assert (
      read_json(os.path.join(workdir, "classify", "report.json"))[
          "num_examples"
      ]
      == 9
  )


def test_rscd_without_a_release_ends_in_one_line(tmp_path):
  result = helpers.run_main(
      "--config=configs/rscd3.py",
      f"--config.data.data_dir={tmp_path}",
      f"--workdir={tmp_path / 'run'}",
  )
  assert "set --config.data.manual_dir" in error_line(result)
  assert result.stderr.splitlines() == [error_line(result)]
