"""`predict.Classifier` on files, and the batching every prediction path uses."""

import json

import numpy as np
import pytest

from roadflax.serve import model, predict
from roadflax.errors import UserError


def test_in_batches_caps_and_pads_batches_and_keeps_the_order():
  shapes = []

  def double(images):
    shapes.append(images.shape)
    return images * 2

  images = np.arange(11, dtype=np.float32).reshape(11, 1)
  np.testing.assert_array_equal(
      model.in_batches(double, images, batch_size=4), images * 2
  )
  # Two full batches, then 3 images padded to 4.
  assert shapes == [(4, 1), (4, 1), (4, 1)]
  shapes.clear()
  model.in_batches(double, images[:5], batch_size=8)
  assert shapes == [(8, 1)]
  shapes.clear()
  model.in_batches(double, images[:1], batch_size=8)
  assert shapes == [(1, 1)]


@pytest.fixture(scope="module")
def classifier(trained_workdir):
  return predict.Classifier.load(trained_workdir)


def test_a_bad_file_is_skipped_and_the_others_predicted(
    classifier, data_root, tmp_path
):
  good = f"{data_root}/test/gravel/000.jpg"
  bad = tmp_path / "notes.jpg"
  bad.write_text("not a picture")

  results = classifier.predict_files([good, str(bad), good], batch_size=2)

  assert [r["path"] for r in results] == [good, str(bad), good]
  assert "notes.jpg" in results[1]["error"] and "class" not in results[1]
  assert results[0]["probabilities"] == results[2]["probabilities"]
  assert sum(results[0]["probabilities"].values()) == pytest.approx(
      1.0, abs=1e-5
  )


def test_predict_main_writes_predictions_and_skipped_files(
    trained_workdir, data_root, tmp_path
):
  bad = tmp_path / "empty.jpg"
  bad.write_bytes(b"")
  output = tmp_path / "predictions.json"

  predict.predict_main(
      trained_workdir, [f"{data_root}/test/asphalt", str(bad)], str(output)
  )

  written = json.loads(output.read_text())
  assert len(written["predictions"]) == 4
  assert [s["path"] for s in written["skipped"]] == [str(bad)]
  assert "empty file" in written["skipped"][0]["error"]


def test_predict_main_fails_when_no_file_is_readable(trained_workdir, tmp_path):
  bad = tmp_path / "notes.jpg"
  bad.write_text("not a picture")
  with pytest.raises(UserError, match="notes.jpg"):
    predict.predict_main(trained_workdir, [str(bad), str(bad)], None)
