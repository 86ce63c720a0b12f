"""Calibrated confidence: the temperature fit, the calibration error, what a
trained stage writes, and probabilities scaled wherever they are given."""

import dataclasses
import logging
import os

import numpy as np
import pytest
from PIL import Image

from roadflax.data import preprocess
from roadflax.export import trained
from roadflax.files import read_json
from roadflax.results import calibration
from roadflax.runs import workdirs
from roadflax.training import calibrate, evaluate
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
  assert block["fitted_on"] == {"split": "val", "images": 12}
  assert {"ece_before", "ece_after", "nll_before", "nll_after"} <= set(block)
  assert 0 <= block["ece_after"] <= 1 and 0 <= block["ece_before"] <= 1
  for when in ("before", "after"):
    assert sum(b["count"] for b in block["bins"][when]) == 12
  assert block["fitted"] == fitted["fitted"]
  with open(os.path.join(stage_dir, "report.md"), encoding="utf-8") as f:
    assert "\nCalibration: temperature " in f.read()
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
  report = read_json(os.path.join(workdir, "classify", "report.json"))
  assert report["calibration"]["temperature"] == refitted.temperature
  assert os.path.exists(
      os.path.join(workdir, "classify", evaluate.RELIABILITY_FILE)
  )
