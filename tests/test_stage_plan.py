"""Stage length (the step floor), early stopping and the training-health check."""

import math

import numpy as np
import pytest

from roadflax.configs import default
from roadflax import files
from roadflax.runs import workdirs
from roadflax.training import evaluate, health, stage_plan, train
from tests import helpers


def test_small_split_is_stretched_to_the_step_floor():
  stage = default.stage(epochs=10, min_steps=400, batch_size=32)
  plan = stage_plan.plan_stage(stage, num_train_examples=300)  # 9 steps a pass
  assert (plan.steps_per_pass, plan.total_steps, plan.passes) == (9, 400, 45)
  assert plan.epoch_steps == 40.0 and plan.stretched


def test_large_split_is_not_stretched():
  stage = default.stage(epochs=10, min_steps=400, batch_size=32)
  plan = stage_plan.plan_stage(stage, num_train_examples=3200)
  assert (plan.total_steps, plan.epoch_steps, plan.passes) == (1000, 100.0, 10)
  assert not plan.stretched


def test_explicit_steps_win_over_epochs_and_floor():
  stage = default.stage(epochs=10, min_steps=400, steps=7, batch_size=32)
  plan = stage_plan.plan_stage(stage, num_train_examples=300)
  assert (plan.total_steps, plan.epoch_steps) == (7, 9.0)


def test_schedule_keeps_its_shape_when_stretched():
  from roadflax.models import optimizers

  stage = default.stage(
      epochs=10,
      min_steps=400,
      learning_rate=1.0,
      schedule="cosine",
      warmup_epochs=1.0,
  )
  plan = stage_plan.plan_stage(stage, num_train_examples=300)
  schedule = optimizers.learning_rate_schedule(
      stage, plan.epoch_steps, plan.total_steps
  )
  # Warm-up is one configured epoch: 40 steps, not one 9-step pass.
  assert float(schedule(20)) == pytest.approx(0.5)
  assert float(schedule(40)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "step,best,stops", [(50, 10, True), (49, 10, False), (50, None, False)]
)
def test_patience_counts_configured_epochs_since_the_best(step, best, stops):
  stage = default.stage(epochs=10, min_steps=400, early_stopping_patience=1)
  plan = stage_plan.plan_stage(
      stage, num_train_examples=300
  )  # epochs of 40 steps
  assert stage_plan.should_stop_early(stage, plan, step, best) is stops


def test_patience_zero_never_stops():
  stage = default.stage(epochs=10)
  plan = stage_plan.plan_stage(stage, num_train_examples=300)
  assert not stage_plan.should_stop_early(stage, plan, 10_000, 0)


def _train_with_validation_worse_each_epoch(
    data_root, tmp_path, monkeypatch, **stage_fields
) -> tuple[dict, int]:
  """Trains a classifier of 24 images, batch 4 (6 steps an epoch, 10 epochs)
  whose validation accuracy falls every epoch; its summary and how many
  evaluations ran."""
  config = helpers.tiny_config(data_root)
  config.stage_order = ("classify",)
  config.stages.classify.update(
      init_from="",
      steps=0,
      epochs=10,
      min_steps=0,
      early_stopping_patience=2,
      **stage_fields,
  )
  original = evaluate.evaluate_split
  evaluations = []

  def worse_each_time(*args, **kwargs):
    result = original(*args, **kwargs)
    evaluations.append(1)
    result.metrics["accuracy"] = 1.0 / len(evaluations)
    return result

  monkeypatch.setattr(evaluate, "evaluate_split", worse_each_time)
  train.train_and_evaluate(config, str(tmp_path))
  summary = files.read_json(str(tmp_path / "classify" / workdirs.SUMMARY_FILE))
  return summary, len(evaluations)


def test_run_stops_early_and_keeps_the_best_checkpoint(
    data_root, tmp_path, monkeypatch, capsys
):
  # With patience 2 the stage stops after epoch 3 and keeps epoch 1.
  summary, evaluations = _train_with_validation_worse_each_epoch(
      data_root, tmp_path, monkeypatch, select="best"
  )
  assert (
      summary["steps_trained"],
      summary["best_step"],
      summary["total_steps"],
      summary["selected"],
  ) == (18, 6, 60, "best")
  # Three epochs of validation, then the validation split again for the
  # calibration of the best checkpoint, and the test split.
  assert evaluations == 3 + 2
  assert "stopped early at step 18 of 60" in capsys.readouterr().out


def test_a_small_validation_split_trains_to_the_end_and_hands_on_the_last(
    data_root, tmp_path, monkeypatch, capsys
):
  # auto: the tiny folder's 12 validation images cannot pick a checkpoint,
  # so patience and the falling validation accuracy change nothing.
  summary, evaluations = _train_with_validation_worse_each_epoch(
      data_root, tmp_path, monkeypatch
  )
  assert (
      summary["steps_trained"],
      summary["best_step"],
      summary["selected"],
  ) == (60, 60, "last")
  assert evaluations == 10 + 2
  assert "stopped early" not in capsys.readouterr().out
  report = files.read_json(str(tmp_path / "classify" / "report.json"))
  assert report["checkpoint_step"] == 60


@pytest.mark.parametrize(
    "select, num_val, expected",
    [
        ("auto", 299, False),
        ("auto", 300, True),
        ("best", 3, True),
        ("last", 10_000, False),
    ],
)
def test_checkpoint_selection_trusts_validation_only_when_it_is_large_enough(
    select, num_val, expected
):
  stage = default.stage(select=select, select_min_val_images=300)
  assert stage_plan.selects_best(stage, num_val) is expected


def _check(**overrides):
  fields = dict(
      stage_name="classify",
      num_classes=3,
      classifies=True,
      window_steps=100,
      collapse_fraction=0.95,
      activation_growth=10.0,
      learning_rate=0.1,
  )
  fields.update(overrides)
  return health.HealthCheck(**fields)


def _values(loss=0.5, share=0.4, rms=1.0):
  return {
      "loss": np.float32(loss),
      "top_class_share": np.float32(share),
      "latent_rms": np.float32(rms),
  }


def test_loss_at_chance_is_reported_once_after_the_window():
  check = _check()
  chance = math.log(3)
  assert check.update(50, _values(loss=chance)) == []
  assert check.update(100, _values(loss=chance)) == []
  [warning] = check.update(150, _values(loss=chance))
  assert warning.startswith(
      "warning: stage 'classify', for 100 steps: the training loss has stayed"
      " at ln(3)"
  )
  assert "learning rate (0.1)" in warning and "\n" not in warning
  assert check.update(200, _values(loss=chance)) == []  # once per stage


def test_a_problem_that_clears_restarts_its_window():
  check = _check()
  chance = math.log(3)
  check.update(50, _values(loss=chance))
  check.update(100, _values(loss=0.3))  # learning after all
  assert check.update(150, _values(loss=chance)) == []
  assert check.update(250, _values(loss=chance)) != []


def test_collapse_divergence_and_activation_growth_are_reported():
  check = _check(window_steps=10)
  check.update(10, _values(rms=4.0))
  check.update(20, _values(rms=2.0))  # growth counts from the lowest value seen
  check.update(30, _values(loss=50.0, share=1.0, rms=30.0))
  warnings = check.update(40, _values(loss=50.0, share=1.0, rms=30.0))
  assert any("collapsed to one class" in w for w in warnings)
  assert any("loss (50) has stayed above 3 x ln(3)" in w for w in warnings)
  assert any("grown 15-fold" in w and "model.norm" in w for w in warnings)


def test_dying_activations_are_reported():
  check = _check(window_steps=10)
  for step, rms in ((10, 0.14), (20, 0.01), (30, 0.003)):
    warnings = check.update(step, _values(rms=rms))
  [warning] = warnings
  assert "shrunk 47-fold" in warning and "ReLUs are dying" in warning


def test_reconstruction_stages_are_not_judged_on_classes():
  check = _check(classifies=False, window_steps=10)
  for step in (10, 20, 30):
    assert (
        check.update(
            step,
            {"loss": np.float32(math.log(3)), "latent_rms": np.float32(1.0)},
        )
        == []
    )


def test_off_when_the_window_is_zero():
  check = _check(window_steps=0)
  assert check.update(1000, _values(loss=math.log(3), share=1.0, rms=1e6)) == []


def test_too_high_a_learning_rate_gets_the_one_line_warning(
    data_root, tmp_path, capsys
):
  config = helpers.tiny_config(data_root, classify=12)
  config.stage_order = ("classify",)
  config.stages.classify.update(
      init_from="", optimizer="adam", learning_rate=0.05
  )
  config.health.window_steps = 4  # two logs apart: well inside the 12 steps
  train.train_and_evaluate(config, str(tmp_path))
  warnings = [
      line
      for line in capsys.readouterr().out.splitlines()
      if line.startswith("warning: stage 'classify', for ")
  ]
  assert (
      warnings
  ), "a learning rate of 0.05 with Adam should collapse the classifier"
  assert "learning rate (0.05)" in warnings[0]


def test_a_stretched_epoch_is_evaluated_once_not_after_every_pass():
  # 32 images at batch 8: 4 steps a pass; 10 epochs stretched to 200 steps.
  plan = stage_plan.plan_stage(
      default.stage(batch_size=8, epochs=10, min_steps=200), 32
  )
  assert (plan.steps_per_pass, plan.total_steps, plan.passes) == (4, 200, 50)
  evaluated = [p for p in range(plan.passes) if plan.evaluates_after(p)]
  assert evaluated == list(range(4, 50, 5))
  # An epoch of one pass (a large split): after every pass.
  plan = stage_plan.plan_stage(default.stage(batch_size=8, epochs=3), 32)
  assert [p for p in range(plan.passes) if plan.evaluates_after(p)] == [0, 1, 2]
  # An exact number of steps: the schedule's epoch stays a pass, but
  # validation comes every steps / epochs, and after the last (partial) pass.
  plan = stage_plan.plan_stage(
      default.stage(batch_size=8, steps=34, epochs=3), 32
  )
  assert (plan.epoch_steps, plan.passes) == (4.0, 9)
  assert [p for p in range(plan.passes) if plan.evaluates_after(p)] == [2, 5, 8]
