"""The training driver: stages, resumption, reports and bad input, in process."""

import datetime
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from roadflax.datasets import sources
from roadflax.models import precision
from roadflax.runs import checkpoints, workdirs
from roadflax.training import reporting, stage_setup, stage_state, train
from roadflax.errors import UserError
from roadflax.files import read_json
from tests import helpers


def test_both_stages_write_their_outputs(trained_workdir):
  for stage in ("pretrain", "classify"):
    stage_dir = os.path.join(trained_workdir, stage)
    assert os.path.exists(os.path.join(stage_dir, workdirs.SUMMARY_FILE))
    assert any(
        f.startswith("events.out.tfevents") for f in os.listdir(stage_dir)
    )
  with open(os.path.join(trained_workdir, "classify", "report.json")) as f:
    report = json.load(f)
  assert report["num_examples"] == 12  # every test image, exactly once
  assert report["class_names"] == list(helpers.CLASSES)
  assert np.array(report["confusion_matrix"]).sum() == 12
  assert os.path.exists(os.path.join(trained_workdir, "classify", "report.md"))
  with open(os.path.join(trained_workdir, workdirs.RUN_FILE)) as f:
    assert json.load(f)["image_size"] == 67


def _set_up_classifier(data_root, workdir, *, dtype="auto", **stage_settings):
  """`stage_setup.setup_stage` of the classify stage in a new `workdir`."""
  config = helpers.tiny_config(data_root)
  config.model.dtype = dtype
  config.stages.classify.update(stage_settings)
  dataset = sources.load_dataset(config.data)
  run_info = workdirs.prepare(workdir, config, dataset.class_names)
  return (
      config,
      run_info,
      stage_setup.setup_stage(config, workdir, "classify", dataset, run_info),
  )


def _close(stage):
  stage.ckpts.close()
  stage.writer.close()


def _same(a, b):
  return all(
      np.array_equal(x, y)
      for x, y in zip(
          jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
      )
  )


def test_classifier_starts_from_the_pretrained_encoder(
    trained_workdir, data_root, tmp_path
):
  run = workdirs.load_run(trained_workdir)
  pretrain_dir = os.path.join(trained_workdir, "pretrain")
  pretrained, _, _ = workdirs.load_best_params(pretrain_dir, run)
  config, run_info, (stage, state) = _set_up_classifier(
      data_root, str(tmp_path), init_from=pretrain_dir
  )
  _close(stage)
  config.stages.classify.init_from = ""
  fresh = stage_state.initial_params(
      config, str(tmp_path), "classify", stage.model, run_info
  )

  assert int(state.step) == 0
  # The trees pre-training trained are its best checkpoint's; the head is new.
  assert _same(state.params["encoder"], pretrained["encoder"])
  assert _same(state.params["decoder"], pretrained["decoder"])
  assert _same(state.params["head"], fresh["head"])
  assert not _same(fresh["encoder"], pretrained["encoder"])
  assert not _same(fresh["head"], pretrained["head"])
  # The decoder is not trained by the classifier: its best is the pre-trained one.
  classify, _, _ = workdirs.load_best_params(
      os.path.join(trained_workdir, "classify"), run
  )
  assert _same(classify["decoder"], pretrained["decoder"])


def test_a_float32_stage_seeds_a_bfloat16_one_that_keeps_float32_weights(
    trained_workdir, data_root, tmp_path
):
  _, _, (stage, state) = _set_up_classifier(
      data_root,
      str(tmp_path),
      dtype="bfloat16",
      init_from=os.path.join(trained_workdir, "pretrain"),
      steps=2,
  )
  assert stage.model.dtype == jnp.bfloat16
  state, trained = train.train_epoch(stage, state, 0, 0)
  train.end_epoch(stage, state, trained)
  stage.ckpts.wait()
  metadata = stage.ckpts.restore_metadata(2)
  saved = stage.ckpts.restore(2, params=state.params)["params"]
  _close(stage)
  assert metadata["compute_dtype"] == "bfloat16"
  assert {x.dtype for x in jax.tree_util.tree_leaves(saved)} == {
      jnp.dtype(jnp.float32)
  }
  assert np.isfinite(trained.train_metrics["loss"])


def test_an_epoch_trains_to_the_end_of_its_pass_and_prints_one_line(
    data_root, tmp_path, capsys
):
  # 24 training images in batches of 4: passes of 6 steps, so 8 steps are a
  # full pass and a partial one.
  _, _, (stage, state) = _set_up_classifier(
      data_root, str(tmp_path), init_from="", steps=8
  )
  state, first = train.train_epoch(stage, state, 0, 0)
  train.end_epoch(stage, state, first)
  state, second = train.train_epoch(stage, state, first.end_step, 1)
  stage.ckpts.wait()
  saved = stage.ckpts.all_steps()
  _close(stage)

  assert (
      first.start_step,
      first.end_step,
      second.start_step,
      second.end_step,
  ) == (0, 6, 6, 8)
  assert int(state.step) == 8
  assert {"loss", "accuracy"} <= set(first.train_metrics)
  assert saved == [6]  # end_epoch's; the second epoch has not ended
  number = r"\d+\.\d{4}"
  assert re.fullmatch(
      rf"classify epoch 1/2 \| train loss {number} accuracy {number} \| "
      rf"val loss {number} accuracy {number} \| \d+ img/s, \d+ s\n",
      capsys.readouterr().out,
  )


def test_epoch_line_reads_as_in_the_readme():
  train_values = {
      "loss": 0.24631,
      "accuracy": 0.90679,
      "top_class_share": 0.5,
      "latent_rms": 1.2,
  }
  line = reporting.epoch_line(
      "classify",
      4,
      10,
      train_values,
      {"loss": 0.16472, "accuracy": 0.96},
      52.4,
      35.2,
  )
  assert line == (
      "classify epoch 5/10 | train loss 0.2463 accuracy 0.9068 | "
      "val loss 0.1647 accuracy 0.9600 | 52 img/s, 35 s"
  )


def test_summary_describes_the_completed_stage(trained_workdir):
  # helpers.tiny_config: 4 steps of batch 4, within one 6-step pass.
  expected = {
      "pretrain": ("reconstruction", "loss"),
      "classify": ("classification", "accuracy"),
  }
  for stage, (objective, best_metric) in expected.items():
    stage_dir = os.path.join(trained_workdir, stage)
    summary = read_json(os.path.join(stage_dir, workdirs.SUMMARY_FILE))
    ckpts = checkpoints.StageCheckpoints(
        os.path.join(stage_dir, "checkpoints"), read_only=True
    )
    assert summary["best_step"] == ckpts.best_step() == 4
    ckpts.close()
    assert {
        k: summary[k]
        for k in (
            "stage",
            "objective",
            "best_metric",
            "total_steps",
            "steps_trained",
            "epochs",
        )
    } == {
        "stage": stage,
        "objective": objective,
        "best_metric": best_metric,
        "total_steps": 4,
        "steps_trained": 4,
        "epochs": 1,
    }
    assert summary["train_images_per_second"] > 0 and summary["seconds"] > 0
    assert datetime.datetime.strptime(
        summary["completed_at"], "%Y-%m-%dT%H:%M:%S%z"
    )
  classify = read_json(
      os.path.join(trained_workdir, "classify", workdirs.SUMMARY_FILE)
  )
  report = read_json(os.path.join(trained_workdir, "classify", "report.json"))
  assert classify["test_accuracy"] == report["accuracy"]
  pretrain = read_json(
      os.path.join(trained_workdir, "pretrain", workdirs.SUMMARY_FILE)
  )
  assert "test_accuracy" not in pretrain


def test_rerun_skips_complete_stages(trained_workdir, data_root):
  before = {
      s: os.path.getmtime(
          os.path.join(trained_workdir, s, workdirs.SUMMARY_FILE)
      )
      for s in ("pretrain", "classify")
  }
  train.train_and_evaluate(helpers.tiny_config(data_root), trained_workdir)
  after = {
      s: os.path.getmtime(
          os.path.join(trained_workdir, s, workdirs.SUMMARY_FILE)
      )
      for s in ("pretrain", "classify")
  }
  assert before == after


def _run_straight_and_interrupted(config, tmp_path, monkeypatch):
  """(workdir, workdir) of `config` trained straight through, and killed right
  after its step-3 checkpoint and run again to the end."""
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train.train_and_evaluate(config, straight)

  original_save = checkpoints.StageCheckpoints.save

  def save_then_die(self, step, **kwargs):
    original_save(self, step, **kwargs)
    if step == 3:
      self.wait()
      raise KeyboardInterrupt  # as if Ctrl-C right after the step-3 checkpoint

  monkeypatch.setattr(checkpoints.StageCheckpoints, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, resumed)
  monkeypatch.setattr(checkpoints.StageCheckpoints, "save", original_save)
  assert not workdirs.stage_complete(os.path.join(resumed, "classify"))
  train.train_and_evaluate(config, resumed)
  return straight, resumed


def _classify_only(data_root, **stage_settings):
  """The classify stage alone, from scratch, 8 steps checkpointed every 3.

  24 training images in batches of 4: 6 steps an epoch, so 8 steps cross an
  epoch boundary; the interruption comes mid-epoch, after step 3.
  """
  config = helpers.tiny_config(data_root, classify=8)
  config.stage_order = ("classify",)
  config.stages.classify.update(init_from="", **stage_settings)
  config.checkpoint_every_steps = 3
  return config


def test_resume_after_interruption_matches_an_uninterrupted_run(
    data_root, tmp_path, monkeypatch
):
  straight, resumed = _run_straight_and_interrupted(
      _classify_only(data_root), tmp_path, monkeypatch
  )
  step_a, params_a = helpers.final_params(os.path.join(straight, "classify"))
  step_b, params_b = helpers.final_params(os.path.join(resumed, "classify"))
  assert step_a == step_b == 8
  # Same program, same inputs, same order: XLA on CPU is deterministic, so the
  # resumed run must match bit for bit (tolerance 0).
  for a, b in zip(
      jax.tree_util.tree_leaves(params_a), jax.tree_util.tree_leaves(params_b)
  ):
    np.testing.assert_array_equal(a, b)


def _checkpoint(stage_dir, step, like):
  """Everything but `train` that checkpoint `step` of a classify stage with
  a weight average holds, shaped `like`."""
  ckpts = checkpoints.StageCheckpoints(
      os.path.join(stage_dir, "checkpoints"), read_only=True
  )
  step = ckpts.latest_step() if step is None else step
  restored = ckpts.restore(
      step,
      params=like,
      ema_params={tree: like[tree] for tree in ("encoder", "head")},
  )
  ckpts.close()
  return step, restored


def test_resume_with_a_weight_average_and_micro_batches_is_exact(
    data_root, tmp_path, monkeypatch
):
  config = _classify_only(data_root, ema_decay=0.9, accumulate_steps=2)
  straight, resumed = _run_straight_and_interrupted(
      config, tmp_path, monkeypatch
  )
  stage_dir = os.path.join(straight, "classify")
  run = workdirs.load_run(straight)
  best, _, best_step = workdirs.load_best_params(stage_dir, run)
  summary = read_json(os.path.join(stage_dir, workdirs.SUMMARY_FILE))
  assert summary["compute_dtype"] == precision.compute_dtype("auto").name
  step_a, a = _checkpoint(stage_dir, None, best)
  step_b, b = _checkpoint(os.path.join(resumed, "classify"), None, best)
  assert step_a == step_b == 8
  # Parameters and their average, bit for bit (see the test above).
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)
  # The best checkpoint's parameters for use are the average of the trees it
  # averaged, and the decoder it did not train.
  _, saved = _checkpoint(stage_dir, best_step, best)
  assert _same(best["head"], saved["ema_params"]["head"])
  assert _same(best["encoder"], saved["ema_params"]["encoder"])
  assert not _same(best["head"], saved["params"]["head"])
  assert _same(best["decoder"], saved["params"]["decoder"])


def test_workdir_of_another_class_set_is_refused(trained_workdir, tmp_path):
  other = helpers.write_image_tree(
      str(tmp_path / "other"), classes=("dry", "wet", "snow")
  )
  with pytest.raises(UserError, match="another model or class set"):
    train.train_and_evaluate(helpers.tiny_config(other), trained_workdir)


def test_workdir_of_another_image_size_is_refused(trained_workdir, data_root):
  config = helpers.tiny_config(data_root)
  config.data.image_size = 80
  with pytest.raises(UserError, match="image_size"):
    train.train_and_evaluate(config, trained_workdir)


def test_workdir_of_another_head_width_is_refused(trained_workdir, data_root):
  config = helpers.tiny_config(data_root)
  config.model.head_units = 2 * helpers.HEAD_UNITS
  with pytest.raises(UserError, match=r"head_units 256 \(this run: 512\)"):
    train.train_and_evaluate(config, trained_workdir)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    data_root, tmp_path
):
  config = helpers.tiny_config(data_root, classify=8)
  config.stage_order = ("classify",)
  config.stages.classify.update(
      init_from="", optimizer="sgd", learning_rate=1e30
  )
  config.checkpoint_every_steps = 1
  with pytest.raises(UserError, match=r"non-finite at step \d+"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not workdirs.stage_complete(str(tmp_path / "classify"))


def _event_tags(stage_dir):
  import tensorflow as tf

  tags = set()
  for name in os.listdir(stage_dir):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(
          os.path.join(stage_dir, name)
      ):
        tags.update(value.tag for value in event.summary.value)
  return tags


def test_tensorboard_gets_curves_and_pictures(trained_workdir):
  pretrain = _event_tags(os.path.join(trained_workdir, "pretrain"))
  assert {
      "train_loss",
      "val_loss",
      "val_mse",
      "learning_rate",
      "val_reconstructions",
      "steps_per_sec",
      "uptime",
  } <= pretrain
  classify = _event_tags(os.path.join(trained_workdir, "classify"))
  assert {
      "train_accuracy",
      "val_accuracy",
      "val_confusion_matrix",
      "test_confusion_matrix",
      "test_reliability_diagram",
      "test_accuracy",
      "test_ece",
      "test_ece_uncalibrated",
      "temperature",
      f"val_precision/{helpers.CLASSES[0]}",
      f"val_recall/{helpers.CLASSES[2]}",
  } <= classify
