"""Calibrated confidence: the temperature fit and its guard, the calibration
error, what a trained stage writes, and probabilities scaled wherever they are
given."""

import dataclasses
import json
import logging
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from roadflax.configs import default
from roadflax.data import preprocess
from roadflax.errors import UserError
from roadflax.export import cards, trained
from roadflax.files import atomic_write_json, read_json
from roadflax.results import calibration
from roadflax.runs import workdirs
from roadflax.serve import model, predict
from roadflax.training import calibrate, configuration, evaluate
from tests import helpers


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_the_fit_recovers_the_temperature_the_labels_were_drawn_at(
    true_temperature,
):
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (20000, 4))
  probabilities = calibration.softmax(logits, true_temperature)
  drawn = (rng.random((len(logits), 1)) > probabilities.cumsum(1)).sum(1)
  labels = np.minimum(drawn, 3)  # a sum of probabilities may fall short of 1

  fitted = calibrate.fit_temperature(logits, labels)

  assert fitted == pytest.approx(true_temperature, rel=0.05)
  assert calibration.negative_log_likelihood(
      logits, labels, fitted
  ) < calibration.negative_log_likelihood(logits, labels)


def test_a_split_without_an_error_keeps_the_temperature_at_1(tmp_path):
  logits = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.5]])
  record = calibrate.calibrate_stage(
      logits, np.array([0, 1, 0]), str(tmp_path), checkpoint_step=7
  )
  assert record["temperature"] == 1.0 and record["fitted"] is False
  assert record["guard"] == "all_right" and record["fitted_temperature"] is None
  assert record["nll_after"] == record["nll_before"]
  assert workdirs.read_calibration(str(tmp_path)) == record
  # With one error among them, one temperature fits best.
  fitted = calibrate.fit_temperature(logits, np.array([0, 1, 1]))
  assert calibrate.MIN_TEMPERATURE * 1.01 < fitted < 0.99


def test_scaling_is_a_power_of_the_probabilities_renormalised():
  logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
  p = calibration.softmax(logits)
  powered = p**0.5 / np.sum(p**0.5, axis=1, keepdims=True)
  np.testing.assert_allclose(calibration.softmax(logits, 2.0), powered)
  np.testing.assert_array_equal(
      calibration.softmax(logits, 2.0).argmax(1), p.argmax(1)
  )


def test_negative_log_likelihood_of_a_hand_made_case():
  logits = np.array([[0.0, np.log(3.0)], [np.log(3.0), 0.0]])
  # Each true class has probability 3/4, then 1/4.
  assert calibration.negative_log_likelihood(
      logits, np.array([1, 1])
  ) == pytest.approx(-(np.log(0.75) + np.log(0.25)) / 2)


def test_calibration_error_of_a_hand_made_case():
  probabilities = np.array([
      [0.9, 0.1, 0.0],  # right, bin (13/15, 14/15]
      [0.9, 0.0, 0.1],  # wrong, same bin
      [0.4, 0.6, 0.0],  # right: 0.6 = 9/15 is its bin's upper end
      [0.0, 0.45, 0.55],  # right, bin (8/15, 9/15]
  ])
  labels = np.array([0, 1, 1, 2])

  bins = calibration.reliability_bins(probabilities, labels)

  assert len(bins) == calibration.NUM_BINS == 15
  assert [b["count"] for b in bins] == [0] * 8 + [2] + [0] * 4 + [2, 0]
  assert bins[8]["confidence"] == pytest.approx(0.575)
  assert bins[8]["accuracy"] == 1.0 and bins[13]["accuracy"] == 0.5
  assert bins[0]["confidence"] is None
  # Half the examples 0.425 too unsure, half 0.4 too sure.
  assert calibration.expected_calibration_error(
      probabilities, labels
  ) == pytest.approx(0.5 * 0.425 + 0.5 * 0.4)


def test_a_model_right_as_often_as_it_is_sure_has_no_calibration_error():
  probabilities = np.array([[0.75, 0.25]] * 4)
  assert calibration.expected_calibration_error(
      probabilities, np.array([0, 0, 0, 1])
  ) == pytest.approx(0.0)


def test_a_trained_stage_writes_its_calibration_and_reliability(
    trained_workdir,
):
  stage_dir = os.path.join(trained_workdir, "classify")
  fitted = read_json(os.path.join(stage_dir, workdirs.CALIBRATION_FILE))
  report = read_json(os.path.join(stage_dir, "report.json"))

  assert fitted["split"] == "val" and fitted["images"] == 12
  assert fitted["checkpoint_step"] == report["checkpoint_step"]
  assert (
      calibrate.MIN_TEMPERATURE
      <= fitted["temperature"]
      <= calibrate.MAX_TEMPERATURE
  )
  # The fit can only lower the validation NLL it minimises.
  assert fitted["nll_after"] <= fitted["nll_before"] + 1e-9
  block = report["calibration"]
  assert block["temperature"] == fitted["temperature"]
  # 12 validation images are too few to fit on (calibration.min_images).
  assert fitted["guard"] in ("too_few_images", "all_right")
  assert fitted["temperature"] == 1.0 and not fitted["fitted"]
  for key in ("fitted_temperature", "guard", "guard_reason"):
    assert block[key] == fitted[key]
  assert block["fitted_on"] == {"split": "val", "images": 12, "groups": None}
  assert {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(block)
  assert 0 <= block["ece_after"] <= 1 and 0 <= block["ece_before"] <= 1
  for when in ("before", "after"):
    assert sum(b["count"] for b in block["bins"][when]) == 12
  assert block["fitted"] == fitted["fitted"]
  with open(os.path.join(stage_dir, "report.md"), encoding="utf-8") as f:
    assert (
        f"\nCalibration: temperature kept at 1 ({fitted['guard']}: " in f.read()
    )
  with Image.open(os.path.join(stage_dir, evaluate.RELIABILITY_FILE)) as png:
    assert png.format == "PNG" and png.mode == "RGB" and png.width > 400


@pytest.fixture(scope="module")
def pixels(data_root, trained_workdir):
  p = trained.TrainedClassifier.load(trained_workdir).preprocessing
  return np.stack([
      preprocess.file_pixels(f"{data_root}/test/{name}/001.jpg", p)
      for name in helpers.CLASSES
  ])


def test_the_classifier_divides_its_logits_by_the_temperature(
    trained_workdir, pixels
):
  classifier = trained.TrainedClassifier.load(trained_workdir)
  stage_dir = os.path.join(trained_workdir, "classify")
  assert classifier.calibrated
  assert (
      classifier.temperature
      == read_json(os.path.join(stage_dir, workdirs.CALIBRATION_FILE))[
          "temperature"
      ]
  )
  logits = helpers.classifier_logits(classifier, pixels)
  for temperature in (classifier.temperature, 3.0):
    scaled = dataclasses.replace(
        classifier, calibration={"temperature": temperature}
    )
    expected = calibration.softmax(logits, temperature)
    for function in (scaled.pixels_function(), scaled.jit_pixels_function()):
      np.testing.assert_allclose(function(pixels), expected, atol=1e-5)


def test_a_stage_trained_before_calibration_is_calibrated_by_evaluate(
    trained_workdir, pixels, tmp_path, caplog
):
  # The trained workdir as a run before calibration existed left it.
  workdir = helpers.linked_workdir(trained_workdir, tmp_path / "run")
  with caplog.at_level(logging.WARNING):
    classifier = trained.TrainedClassifier.load(workdir)
  assert not classifier.calibrated and classifier.temperature == 1.0
  assert f"--mode=evaluate --workdir={workdir} calibrates it" in caplog.text
  np.testing.assert_allclose(
      classifier.jit_pixels_function()(pixels),
      calibration.softmax(helpers.classifier_logits(classifier, pixels)),
      atol=1e-5,
  )

  evaluate.evaluate_workdir(workdir, None)

  refitted = trained.TrainedClassifier.load(workdir)
  original = trained.TrainedClassifier.load(trained_workdir)
  assert refitted.calibrated
  assert refitted.temperature == pytest.approx(original.temperature, rel=1e-3)
  assert refitted.calibration["fitted_temperature"] == pytest.approx(
      original.calibration["fitted_temperature"], rel=1e-3
  )
  report = read_json(os.path.join(workdir, "classify", "report.json"))
  assert report["calibration"]["temperature"] == refitted.temperature
  assert os.path.exists(
      os.path.join(workdir, "classify", evaluate.RELIABILITY_FILE)
  )


def _drawn(true_temperature, images, seed=0):
  """Logits of 3 classes and labels drawn from softmax(logits /
  true_temperature): the temperature of least NLL is near it."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 2, (images, 3))
  probabilities = calibration.softmax(logits, true_temperature)
  drawn = (rng.random((images, 1)) > probabilities.cumsum(1)).sum(1)
  return logits, np.minimum(drawn, 2)


def _groups(labels, per_class):
  """Example i's group: one of `per_class` groups of its class, in turn."""
  return labels * 1000 + np.arange(len(labels)) % per_class


def _guard(**changes):
  return dataclasses.replace(calibrate.Guard.from_config(), **changes)


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_too_few_images_keep_the_temperature_at_1(true_temperature):
  logits, labels = _drawn(true_temperature, 60)

  kept = calibrate.guarded_temperature(logits, labels, _groups(labels, 10))

  assert kept.guard == "too_few_images" and kept.temperature == 1.0
  assert kept.fitted_temperature == calibrate.fit_temperature(logits, labels)
  assert (kept.fitted_temperature > 1) == (true_temperature > 1)
  assert "60 validation images are fewer than calibration.min_images=100" in (
      kept.reason
  )
  used = calibrate.guarded_temperature(
      logits, labels, _groups(labels, 10), _guard(min_images=60)
  )
  assert used.temperature == kept.fitted_temperature != 1.0


def test_a_sharpening_temperature_without_enough_groups_is_bounded_at_1():
  logits, labels = _drawn(0.5, 3000)
  fitted = calibrate.fit_temperature(logits, labels)
  assert fitted == pytest.approx(0.5, rel=0.1)

  unknown = calibrate.guarded_temperature(logits, labels, None)
  assert unknown.guard == "groups_unknown" and unknown.temperature == 1.0
  assert unknown.fitted_temperature == fitted and unknown.groups is None
  # Frames of 2 photographs per class, or of one video of all classes.
  for groups, count in ((_groups(labels, 2), 6), (np.zeros(3000, int), 1)):
    few = calibrate.guarded_temperature(logits, labels, groups)
    assert few.guard == "too_few_groups" and few.temperature == 1.0
    assert few.fitted_temperature == fitted and few.groups == count
    assert "needs 5 per class (calibration.min_groups_to_sharpen)" in (
        few.reason
    )
  # A class without validation examples has no groups.
  seen = labels < 2
  absent = calibrate.guarded_temperature(
      logits[seen], labels[seen], _groups(labels[seen], 10)
  )
  assert absent.guard == "too_few_groups"


def test_a_sharpening_temperature_with_enough_groups_is_used():
  logits, labels = _drawn(0.5, 3000)

  used = calibrate.guarded_temperature(logits, labels, _groups(labels, 5))

  assert used.guard == "none" and used.groups == 15
  assert used.temperature == used.fitted_temperature
  assert used.temperature == pytest.approx(0.5, rel=0.1)
  # The groups are alike, so a temperature fitted without some carries over
  # to them.
  held_out = used.held_out
  assert held_out["folds"] == 5 and len(held_out["temperatures"]) == 5
  assert all(t < 1 for t in held_out["temperatures"])
  assert held_out["nll_after"] < held_out["nll_before"]
  assert held_out["ece_after"] < held_out["ece_before"]


def test_a_softening_temperature_is_used_whatever_the_groups():
  logits, labels = _drawn(2.5, 300)
  fitted = calibrate.fit_temperature(logits, labels)
  assert fitted > 1.5

  for groups in (None, np.zeros(300, int), _groups(labels, 10)):
    used = calibrate.guarded_temperature(logits, labels, groups)
    assert used.guard == "none" and used.temperature == fitted
    assert used.held_out is None


def _sources(seed=0):
  """15 sources of 40 frames, 5 per class: one per class sure (margin 2)
  and right half the time, the others unsure (margin 0.5) and right 97% of
  the time. Pooled, the frames ask for sharpening; but a temperature fitted
  on the unsure sources makes the sure ones' errors far worse."""
  rng = np.random.default_rng(seed)
  logits, labels, groups = [], [], []
  for label in range(3):
    for source in range(5):
      margin, right = (2.0, 0.5) if source == 0 else (0.5, 0.97)
      for _ in range(40):
        top = (
            label if rng.random() < right else (label + 1 + rng.integers(2)) % 3
        )
        frame = rng.normal(0, 0.3, 3)
        frame[top] += margin
        logits.append(frame)
        labels.append(label)
        groups.append(10 * label + source)
  return np.array(logits), np.array(labels), np.array(groups)


def test_a_sharpening_temperature_that_fails_on_held_out_groups_is_bounded():
  logits, labels, groups = _sources()
  fitted = calibrate.fit_temperature(logits, labels)
  assert fitted < 1

  bounded = calibrate.guarded_temperature(logits, labels, groups)

  assert bounded.guard == "no_held_out_gain" and bounded.temperature == 1.0
  assert bounded.fitted_temperature == fitted
  held_out = bounded.held_out
  assert held_out["nll_after"] > held_out["nll_before"]
  assert f"{held_out['folds']} folds of 15 groups" in bounded.reason
  # Without the check, enough groups are enough.
  unchecked = calibrate.guarded_temperature(
      logits, labels, groups, _guard(held_out_folds=0)
  )
  assert unchecked.guard == "none" and unchecked.temperature == fitted


def test_held_out_folds_keep_groups_whole_and_hold_every_class():
  _, labels, groups = _sources()
  fold = calibrate._group_folds(labels, groups, 5)
  for group in np.unique(groups):
    assert len(set(fold[groups == group])) == 1
  for k in range(5):
    assert set(labels[fold == k]) == {0, 1, 2}
  # Fewer groups than folds: one fold per group.
  assert set(calibrate._group_folds(labels, groups // 10, 5)) == {0, 1, 2}


def test_calibration_json_records_the_fit_the_temperature_and_why(
    tmp_path, caplog
):
  logits, labels = _drawn(0.5, 300)
  with caplog.at_level(logging.INFO):
    record = calibrate.calibrate_stage(
        logits, labels, str(tmp_path), checkpoint_step=3
    )
  assert workdirs.read_calibration(str(tmp_path)) == record
  assert record["temperature"] == 1.0 and record["fitted"] is False
  assert record["fitted_temperature"] == calibrate.fit_temperature(
      logits, labels
  )
  assert record["guard"] == "groups_unknown" in calibrate.GUARDS
  assert record["guard_reason"].startswith("the fitted temperature 0.")
  assert record["groups"] is None and record["held_out"] is None
  assert record["settings"] == {
      "min_images": 100,
      "min_groups_to_sharpen": 5,
      "held_out_folds": 5,
  }
  # Its scores are those of the temperature used.
  assert record["nll_after"] == record["nll_before"]
  assert [r.message for r in caplog.records if "guard" in r.message] == [
      "temperature kept at 1 (guard groups_unknown): " + record["guard_reason"]
  ]

  record = calibrate.calibrate_stage(
      logits,
      labels,
      str(tmp_path),
      checkpoint_step=3,
      groups=_groups(labels, 5),
      guard=_guard(held_out_folds=3),
  )
  assert record["fitted"] and record["guard"] == "none"
  assert record["temperature"] == record["fitted_temperature"] < 1
  assert record["groups"] == 15 and record["held_out"]["folds"] == 3
  assert record["nll_after"] < record["nll_before"]
  assert workdirs.read_calibration(str(tmp_path)) == record
  # Group keys may be names: those of a folder tree's subfolders.
  named = calibrate.guarded_temperature(
      logits, labels, np.char.add("drive", _groups(labels, 5).astype(str))
  )
  assert (named.guard, named.groups) == ("none", 15)
  with pytest.raises(ValueError, match=r"groups must be int or str \[300\]"):
    calibrate.calibrate_stage(
        logits, labels, str(tmp_path), checkpoint_step=3, groups=labels[:9]
    )


def test_the_guard_reads_the_config_and_defaults_what_it_lacks():
  assert calibrate.Guard.from_config() == calibrate.Guard(100, 5, 5)
  # A workdir's config.json from before the guard existed.
  old = default.get_config().to_dict()
  del old["calibration"]
  assert calibrate.Guard.from_config(
      ml_collections.ConfigDict(old)
  ) == calibrate.Guard(100, 5, 5)
  partial = ml_collections.ConfigDict(
      {**old, "calibration": {"min_images": 20}}
  )
  assert calibrate.Guard.from_config(partial) == calibrate.Guard(20, 5, 5)
  # The defaults an old workdir gets are default.py's.
  assert calibrate.Guard() == calibrate.Guard.from_config(default.get_config())


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("min_images", 0, "calibration.min_images=0 must be at least 1"),
        ("min_groups_to_sharpen", 0, "must be at least 1"),
        ("held_out_folds", 1, r"must be 0 \(no held-out check\) or at least"),
    ],
)
def test_the_guard_settings_are_checked(key, value, message):
  config = default.get_config()
  config.data.root = "/data/roads"
  config.calibration[key] = value
  with pytest.raises(UserError, match=message):
    configuration.check_config(config)


def _write_calibration(workdir, **record):
  atomic_write_json(
      os.path.join(workdir, "classify", workdirs.CALIBRATION_FILE),
      {
          "split": "val",
          "images": 40,
          "checkpoint_step": 1,
          "num_bins": 15,
          "nll_before": 1.0,
          "nll_after": 0.9,
          "ece_before": 0.2,
          "ece_after": 0.1,
          **record,
      },
  )


def test_an_old_calibration_json_still_loads(trained_workdir, tmp_path, caplog):
  workdir = helpers.linked_workdir(trained_workdir, tmp_path / "run")
  _write_calibration(workdir, temperature=0.5, fitted=True)
  with caplog.at_level(logging.WARNING):
    classifier = trained.TrainedClassifier.load(workdir)
  assert classifier.calibrated and classifier.temperature == 0.5
  assert "temperature 0.5 sharpens, fitted before the guard" in caplog.text
  assert "divided by 0.5, fitted on 40 validation images" in (
      cards._confidence(classifier.calibration)
  )
  old = {**classifier.calibration, "temperature": 1.0, "fitted": False}
  assert "all 40 validation images were classified right" in (
      cards._confidence(old)
  )


def test_the_card_gives_the_guard_s_reason(trained_workdir):
  fitted = workdirs.read_calibration(os.path.join(trained_workdir, "classify"))
  assert cards._confidence(fitted) == (
      "Its probabilities are as the network gives them (temperature 1):"
      f" {fitted['guard_reason']}."
  )


def test_the_unsure_flag_reads_the_temperature_used(
    trained_workdir, data_root, pixels, tmp_path
):
  workdir = helpers.linked_workdir(trained_workdir, tmp_path / "run")
  paths = [f"{data_root}/test/{name}/001.jpg" for name in helpers.CLASSES]
  logits = helpers.classifier_logits(
      trained.TrainedClassifier.load(trained_workdir), pixels
  )
  # The guard kept 1 where 0.3 was fitted: a threshold between the two
  # confidences of the image they differ most on tells which one is used.
  plain, sharp = (calibration.softmax(logits, t).max(1) for t in (1.0, 0.3))
  image = int(np.argmax(sharp - plain))
  assert sharp[image] - plain[image] > 1e-3
  threshold = float(plain[image] + sharp[image]) / 2
  for record, temperature in (
      (dict(fitted=False, fitted_temperature=0.3, guard="too_few_groups"), 1),
      (dict(fitted=True, fitted_temperature=0.3, guard="none"), 0.3),
  ):
    _write_calibration(
        workdir, temperature=float(temperature), guard_reason="", **record
    )
    expected = calibration.softmax(logits, temperature)

    found = model.load(workdir, unsure_below=threshold).predict(paths)
    app = predict.Classifier.load(workdir)

    np.testing.assert_allclose(found.probabilities, expected, atol=1e-5)
    assert found.unsure == list(expected.max(1) < threshold)
    assert found.unsure[image] == (temperature == 1)
    p = app.trained.preprocessing
    np.testing.assert_allclose(
        app.predict((pixels / 255.0 - np.array(p.mean)) / np.array(p.std)),
        expected,
        atol=1e-5,
    )


def test_an_old_workdir_evaluated_on_another_folder_reports_its_calibration(
    trained_workdir, tmp_path
):
  # A workdir whose config.json predates config.calibration.
  workdir = helpers.linked_workdir(trained_workdir, tmp_path / "run")
  config_path = os.path.join(workdir, workdirs.CONFIG_FILE)
  old = read_json(config_path)
  del old["calibration"]
  os.remove(config_path)
  with open(config_path, "w", encoding="utf-8") as f:
    json.dump(old, f)
  other = helpers.write_image_tree(
      str(tmp_path / "other"), {"train": 1, "val": 40, "test": 5}, seed=1
  )
  data = default.get_config().data
  data.root = other

  evaluate.evaluate_workdir(workdir, data)

  stage_dir = os.path.join(workdir, "classify")
  fitted = workdirs.read_calibration(stage_dir)
  block = read_json(os.path.join(stage_dir, "report.json"))["calibration"]
  assert fitted["images"] == 120 and fitted["settings"]["min_images"] == 100
  # 120 images are enough; no groups are known, so only T >= 1 is used.
  assert fitted["guard"] in ("none", "groups_unknown", "all_right")
  assert fitted["temperature"] == (
      fitted["fitted_temperature"] if fitted["guard"] == "none" else 1.0
  )
  assert fitted["temperature"] >= 1
  assert block["temperature"] == fitted["temperature"]
  assert block["fitted_on"] == {"split": "val", "images": 120, "groups": None}
  assert block["guard"] == fitted["guard"]
  # The scores are of this folder's test split, before and after the T used.
  assert sum(b["count"] for b in block["bins"]["after"]) == 15
  assert set(block) >= {"ece_before", "ece_after", "nll_before", "nll_after"}
  if fitted["temperature"] == 1.0:
    assert block["nll_after"] == block["nll_before"]
  else:
    assert block["nll_after"] != block["nll_before"]


def test_only_groups_that_hold_several_images_reach_the_guard():
  from types import SimpleNamespace

  from roadflax.training import evaluate

  assert evaluate.known_groups(SimpleNamespace()) is None
  singletons = SimpleNamespace(groups=("a.jpg", "b.jpg", "c.jpg"))
  assert evaluate.known_groups(singletons) is None
  shared = SimpleNamespace(groups=("drive1", "drive1", "drive2"))
  np.testing.assert_array_equal(
      evaluate.known_groups(shared), ["drive1", "drive1", "drive2"]
  )
