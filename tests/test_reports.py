"""Tests for roadflax.results.reports."""

import json
import os
import pathlib

import numpy as np
import pytest

from roadflax.results import reports

NAMES = ["asphalt", "gravel", "dirt"]


def _report(labels, predictions, names=NAMES, **kwargs):
  confusion = reports.confusion_matrix(
      np.array(labels), np.array(predictions), len(names)
  )
  return reports.classification_report(
      confusion, names, checkpoint_step=7, **kwargs
  )


def _metrics(entry):
  return [entry["precision"], entry["recall"], entry["f1"]]


def test_confusion_rows_are_true_columns_are_predicted():
  # Two asphalt examples predicted as dirt: row 0 (true), column 2 (predicted).
  confusion = reports.confusion_matrix(
      np.array([0, 0, 1]), np.array([2, 2, 1]), 3
  )
  assert confusion.dtype == np.int64
  np.testing.assert_array_equal(confusion, [[0, 0, 2], [0, 1, 0], [0, 0, 0]])


def test_hand_computed_example():
  # labels      0 0 0 1 1 2
  # predictions 0 0 1 1 0 0
  # confusion [[2, 1, 0], [1, 1, 0], [1, 0, 0]]
  # column sums (predicted) 4, 2, 0; supports 3, 2, 1; diagonal 2, 1, 0.
  report = _report(
      [0, 0, 0, 1, 1, 2],
      [0, 0, 1, 1, 0, 0],
      extra={"stage": "classifier", "split": "test"},
  )
  assert report["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [1, 0, 0]]
  assert report["accuracy"] == pytest.approx(3 / 6)
  assert report["num_examples"] == 6
  assert report["checkpoint_step"] == 7
  assert report["class_names"] == NAMES
  assert report["stage"] == "classifier" and report["split"] == "test"
  per_class = report["per_class"]
  # asphalt: p = 2/4, r = 2/3, f1 = 2pr/(p+r) = 4/7.
  assert _metrics(per_class["asphalt"]) == pytest.approx([1 / 2, 2 / 3, 4 / 7])
  # gravel: p = 1/2, r = 1/2, f1 = 1/2.
  assert _metrics(per_class["gravel"]) == pytest.approx([1 / 2, 1 / 2, 1 / 2])
  # dirt: never predicted -> precision 0/0 -> 0.0; recall 0/1; f1 0.
  assert _metrics(per_class["dirt"]) == [0.0, 0.0, 0.0]
  assert [per_class[n]["support"] for n in NAMES] == [3, 2, 1]
  assert all(type(per_class[n]["support"]) is int for n in NAMES)
  # macro: plain means over the 3 classes.
  assert _metrics(report["macro_avg"]) == pytest.approx([1 / 3, 7 / 18, 5 / 14])
  # weighted by supports 3, 2, 1 (total 6).
  assert _metrics(report["weighted_avg"]) == pytest.approx(
      [5 / 12, 1 / 2, 19 / 42]
  )
  assert report["macro_avg"]["support"] == 6
  assert report["weighted_avg"]["support"] == 6
  json.dumps(report, allow_nan=False)  # JSON-able as is.


def test_matches_sklearn_known_output():
  # sklearn.metrics.classification_report([0, 1, 2, 2, 2], [0, 0, 2, 2, 1])
  report = _report([0, 1, 2, 2, 2], [0, 0, 2, 2, 1])
  rows = [report["per_class"][n] for n in NAMES]
  assert [r["precision"] for r in rows] == pytest.approx([0.5, 0.0, 1.0])
  assert [r["recall"] for r in rows] == pytest.approx([1.0, 0.0, 2 / 3])
  assert [r["f1"] for r in rows] == pytest.approx([2 / 3, 0.0, 0.8])
  assert [r["support"] for r in rows] == [1, 1, 3]
  assert report["accuracy"] == pytest.approx(0.6)
  assert _metrics(report["macro_avg"]) == pytest.approx(
      [0.5, 0.5556, 0.4889], abs=5e-5
  )
  assert _metrics(report["weighted_avg"]) == pytest.approx(
      [0.7, 0.6, 0.6133], abs=5e-5
  )


def test_class_with_no_examples_and_no_predictions_is_zero():
  report = _report([0, 1], [0, 1])
  assert report["per_class"]["dirt"] == {
      "precision": 0.0,
      "recall": 0.0,
      "f1": 0.0,
      "support": 0,
  }
  # Like sklearn, the macro average still counts the empty class.
  assert _metrics(report["macro_avg"]) == pytest.approx([2 / 3] * 3)
  assert _metrics(report["weighted_avg"]) == pytest.approx([1.0] * 3)


def test_empty_input_gives_zeros():
  report = _report([], [])
  assert report["accuracy"] == 0.0 and report["num_examples"] == 0
  assert _metrics(report["weighted_avg"]) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "labels, predictions",
    [
        ([0, 3], [0, 1]),  # label out of range
        ([0, -1], [0, 1]),  # negative label
        ([0, 1], [0, 5]),  # prediction out of range
        ([0, 1, 2], [0, 1]),  # length mismatch
        ([0.0, 1.0], [0, 1]),  # not integer ids
        ([[0, 1]], [[0, 1]]),  # not 1-D
    ],
)
def test_invalid_labels_raise(labels, predictions):
  with pytest.raises(ValueError):
    reports.confusion_matrix(np.array(labels), np.array(predictions), 3)


def test_invalid_report_inputs_raise():
  confusion = np.eye(3, dtype=np.int64)
  with pytest.raises(ValueError):
    reports.confusion_matrix(np.array([0]), np.array([0]), 0)
  with pytest.raises(ValueError):
    reports.classification_report(confusion, NAMES[:2], checkpoint_step=0)
  with pytest.raises(ValueError):
    reports.classification_report(
        np.ones((2, 3), np.int64), NAMES[:2], checkpoint_step=0
    )
  with pytest.raises(ValueError):
    reports.classification_report(-confusion, NAMES, checkpoint_step=0)
  with pytest.raises(ValueError):
    reports.classification_report(
        confusion, NAMES, checkpoint_step=0, extra={"accuracy": 1.0}
    )


def test_markdown_has_names_numbers_and_layout():
  report = _report(
      [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 0, 0], extra={"stage": "classifier"}
  )
  text = reports.format_markdown(report)
  lines = text.splitlines()
  assert lines[0].startswith("# Classification report")
  assert "| class | precision | recall | f1-score | support |" in lines
  assert "| asphalt | 0.5000 | 0.6667 | 0.5714 | 3 |" in lines
  assert "| gravel | 0.5000 | 0.5000 | 0.5000 | 2 |" in lines
  assert "| dirt | 0.0000 | 0.0000 | 0.0000 | 1 |" in lines
  assert "| **accuracy** |  |  | 0.5000 | 6 |" in lines
  assert "| **macro avg** | 0.3333 | 0.3889 | 0.3571 | 6 |" in lines
  assert "| **weighted avg** | 0.4167 | 0.5000 | 0.4524 | 6 |" in lines
  assert "| true \\ predicted | asphalt | gravel | dirt |" in lines
  assert "| **asphalt** | 2 | 1 | 0 |" in lines
  assert "| **dirt** | 1 | 0 | 0 |" in lines
  assert "num_examples: 6, checkpoint step: 7" in text


def test_markdown_ends_with_the_calibration():
  block = {
      "fitted": True,
      "fitted_on": {"split": "val", "images": 300},
      "temperature": 1.4922,
      "num_bins": 15,
      "ece_before": 0.0231,
      "ece_after": 0.0108,
      "nll_before": 0.1208,
      "nll_after": 0.1047,
  }
  text = reports.format_markdown(
      _report([0, 1], [0, 1], extra={"calibration": block})
  )
  assert text.endswith(
      "\nCalibration: temperature 1.492, fitted on 300 val images; expected"
      " calibration error (15 bins) 0.0231 before, 0.0108 after; NLL 0.1208"
      " before, 0.1047 after (reliability.png).\n"
  )
  block.update(fitted=False, temperature=1.0)
  text = reports.format_markdown(
      _report([0, 1], [0, 1], extra={"calibration": block})
  )
  assert "temperature kept at 1, as all 300 val images are classified" in text
  assert "Calibration" not in reports.format_markdown(_report([0], [0]))


def test_write_report_writes_json_and_markdown(tmp_path):
  report = _report([0, 1, 2], [0, 1, 1], extra={"skipped_files": ["a.png"]})
  json_path, md_path = reports.write_report(report, str(tmp_path / "eval"))
  assert json_path == str(tmp_path / "eval" / "report.json")
  assert md_path == str(tmp_path / "eval" / "report.md")
  with open(json_path, encoding="utf-8") as f:
    assert json.load(f) == report
  with open(md_path, encoding="utf-8") as f:
    assert f.read() == reports.format_markdown(report)
  assert sorted(os.listdir(tmp_path / "eval")) == ["report.json", "report.md"]


def test_failed_write_keeps_old_report_and_leaves_no_temp_files(
    tmp_path, monkeypatch
):
  good = _report([0, 1, 2], [0, 1, 2])
  json_path, md_path = reports.write_report(good, str(tmp_path))
  before = {p: pathlib.Path(p).read_bytes() for p in (json_path, md_path)}

  def broken_fsync(fd):
    raise RuntimeError(
        "disk on fire"
    )  # the new text is written but never lands

  monkeypatch.setattr(os, "fsync", broken_fsync)
  with pytest.raises(RuntimeError):
    reports.write_report(_report([0, 1, 2], [2, 2, 2]), str(tmp_path))
  assert {
      p: pathlib.Path(p).read_bytes() for p in (json_path, md_path)
  } == before
  assert sorted(os.listdir(tmp_path)) == ["report.json", "report.md"]


def test_unserialisable_extra_fails_without_touching_old_report(tmp_path):
  json_path, _ = reports.write_report(_report([0], [0]), str(tmp_path))
  before = pathlib.Path(json_path).read_bytes()
  bad = _report([0], [1], extra={"workdir": object()})
  with pytest.raises(TypeError):
    reports.write_report(bad, str(tmp_path))
  assert pathlib.Path(json_path).read_bytes() == before
  assert sorted(os.listdir(tmp_path)) == ["report.json", "report.md"]
