"""The training driver: stages, resumption, reports and bad input, in process."""

import json
import os

import jax
import numpy as np
import pytest

from roadflax.runs import checkpoints, workdirs
from roadflax.training import train
from roadflax.errors import UserError
from tests import helpers


def test_both_stages_write_their_outputs(trained_workdir):
  for stage in ("pretrain", "classify"):
    stage_dir = os.path.join(trained_workdir, stage)
    assert os.path.exists(os.path.join(stage_dir, workdirs.SUMMARY_FILE))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(stage_dir))
  with open(os.path.join(trained_workdir, "classify", "report.json")) as f:
    report = json.load(f)
  assert report["num_examples"] == 12  # every test image, exactly once
  assert report["class_names"] == list(helpers.CLASSES)
  assert np.array(report["confusion_matrix"]).sum() == 12
  assert os.path.exists(os.path.join(trained_workdir, "classify", "report.md"))
  with open(os.path.join(trained_workdir, workdirs.RUN_FILE)) as f:
    assert json.load(f)["image_size"] == 67


def test_classifier_starts_from_the_pretrained_encoder(trained_workdir):
  run = workdirs.load_run(trained_workdir)
  pretrained, _, _ = workdirs.load_best_params(os.path.join(trained_workdir, "pretrain"), run)
  ckpts = checkpoints.StageCheckpoints(os.path.join(trained_workdir, "classify", "checkpoints"),
                                       read_only=True)
  # The decoder is not trained_workdir by the classifier: it is the pre-trained_workdir one.
  classify, _, _ = workdirs.load_best_params(os.path.join(trained_workdir, "classify"), run)
  for a, b in zip(jax.tree_util.tree_leaves(pretrained["decoder"]),
                  jax.tree_util.tree_leaves(classify["decoder"])):
    np.testing.assert_array_equal(a, b)
  assert ckpts.best_step() is not None


def test_rerun_skips_complete_stages(trained_workdir, data_root):
  before = {s: os.path.getmtime(os.path.join(trained_workdir, s, workdirs.SUMMARY_FILE))
            for s in ("pretrain", "classify")}
  train.train_and_evaluate(helpers.tiny_config(data_root), trained_workdir)
  after = {s: os.path.getmtime(os.path.join(trained_workdir, s, workdirs.SUMMARY_FILE))
           for s in ("pretrain", "classify")}
  assert before == after


def test_resume_after_interruption_matches_an_uninterrupted_run(data_root, tmp_path, monkeypatch):
  # 24 training images in batches of 4: 6 steps an epoch, so 8 steps cross an
  # epoch boundary; the interruption comes mid-epoch, after step 3.
  config = helpers.tiny_config(data_root, classify=8)
  config.stage_order = ("classify",)
  config.stages.classify.init_from = ""
  config.checkpoint_every_steps = 3
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

  step_a, params_a = helpers.final_params(os.path.join(straight, "classify"))
  step_b, params_b = helpers.final_params(os.path.join(resumed, "classify"))
  assert step_a == step_b == 8
  # Same program, same inputs, same order: XLA on CPU is deterministic, so the
  # resumed run must match bit for bit (tolerance 0).
  for a, b in zip(jax.tree_util.tree_leaves(params_a), jax.tree_util.tree_leaves(params_b)):
    np.testing.assert_array_equal(a, b)


def test_workdir_of_another_class_set_is_refused(trained_workdir, tmp_path):
  other = helpers.write_image_tree(str(tmp_path / "other"), classes=("dry", "wet", "snow"))
  with pytest.raises(UserError, match="another model or class set"):
    train.train_and_evaluate(helpers.tiny_config(other), trained_workdir)


def test_workdir_of_another_image_size_is_refused(trained_workdir, data_root):
  config = helpers.tiny_config(data_root)
  config.data.image_size = 80
  with pytest.raises(UserError, match="image_size"):
    train.train_and_evaluate(config, trained_workdir)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data_root, tmp_path):
  config = helpers.tiny_config(data_root, classify=8)
  config.stage_order = ("classify",)
  config.stages.classify.update(init_from="", optimizer="sgd", learning_rate=1e30)
  config.checkpoint_every_steps = 1
  with pytest.raises(UserError, match=r"non-finite at step \d+"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not workdirs.stage_complete(str(tmp_path / "classify"))


def _event_tags(stage_dir):
  import tensorflow as tf
  tags = set()
  for name in os.listdir(stage_dir):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(stage_dir, name)):
        tags.update(value.tag for value in event.summary.value)
  return tags


def test_tensorboard_gets_curves_and_pictures(trained_workdir):
  pretrain = _event_tags(os.path.join(trained_workdir, "pretrain"))
  assert {"train_loss", "val_loss", "val_mse", "learning_rate", "val_reconstructions"} <= pretrain
  classify = _event_tags(os.path.join(trained_workdir, "classify"))
  assert {"train_accuracy", "val_accuracy", "val_confusion_matrix", "test_confusion_matrix",
          "test_accuracy", f"val_precision/{helpers.CLASSES[0]}",
          f"val_recall/{helpers.CLASSES[2]}"} <= classify
