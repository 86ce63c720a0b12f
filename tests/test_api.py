"""`roadflax.load(...).predict(...)`: every kind of input, training's
preprocessing, per-item errors and whole-input mistakes."""

import io

import numpy as np
import pytest
from PIL import Image

import roadflax
from roadflax.data import preprocess
from roadflax.errors import UserError
from roadflax.serve import predict
from tests.test_exif import picture, tagged


@pytest.fixture(scope="module")
def model(trained_workdir):
  return roadflax.load(trained_workdir)


@pytest.fixture(scope="module")
def files(data_root):
  return [
      f"{data_root}/test/{name}/000.jpg"
      for name in ("asphalt", "concrete", "gravel")
  ]


@pytest.fixture(scope="module")
def expected(trained_workdir, files):
  """What the app's classifier gives from training's normalised input."""
  classifier = predict.Classifier.load(trained_workdir)
  images = np.stack(
      [preprocess.load_image(path, classifier.data_config) for path in files]
  )
  return classifier.predict(images)


def test_a_workdir_predicts_as_training_preprocesses(model, files, expected):
  result = model.predict(files)
  np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
  assert result.classes == [
      model.class_names[i] for i in np.argmax(expected, axis=1)
  ]
  assert result.errors == [None] * 3 and len(result) == 3
  assert model.class_names == ("asphalt", "concrete", "gravel")


def test_paths_bytes_pil_images_and_arrays_agree(model, tmp_path):
  # PNG: its pixels are the same whichever library decodes it (JPEG
  # decoders round differently).
  array = np.asarray(picture(48, 72))
  path = tmp_path / "frame.png"
  Image.fromarray(array).save(path)
  data = path.read_bytes()
  result = model.predict(
      [str(path), path, data, Image.open(io.BytesIO(data)), array]
  )
  np.testing.assert_allclose(
      result.probabilities, np.repeat(result.probabilities[:1], 5, axis=0)
  )
  # One array of N images, and a single item without a list.
  stacked = model.predict(np.stack([array, array]))
  np.testing.assert_allclose(stacked.probabilities, result.probabilities[:2])
  assert model.predict(str(path)).classes == result.classes[:1]


def test_any_size_is_resized_as_training_does(model):
  image = picture(40, 90)
  small = model.predict(np.asarray(image))
  assert small.probabilities.shape == (1, 3)
  np.testing.assert_allclose(small.probabilities.sum(), 1.0, atol=1e-5)
  assert model.pixels(np.asarray(image)).shape == (67, 67, 3)


def test_a_pil_image_is_turned_upright_by_its_exif_orientation(model):
  upright = picture(40, 90)
  lying = Image.open(
      io.BytesIO(tagged(upright.transpose(Image.Transpose.ROTATE_90), "PNG", 6))
  )
  np.testing.assert_array_equal(
      model.pixels(lying), model.pixels(np.asarray(upright))
  )


def test_an_unreadable_item_costs_only_its_own_prediction(
    model, files, expected, tmp_path
):
  bad = tmp_path / "notes.jpg"
  bad.write_text("not a picture")
  result = model.predict(
      [files[0], str(bad), b"\xff\xd8\xffbroken", files[2]], batch_size=2
  )
  assert result.classes[1] is None and result.classes[2] is None
  assert "notes.jpg is not a readable image" in result.errors[1]
  assert result.errors[2].startswith("the image ")
  assert np.isnan(result.probabilities[1:3]).all()
  np.testing.assert_allclose(
      result.probabilities[[0, 3]], expected[[0, 2]], atol=1e-5
  )


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((8, 8, 3), np.float32), "float32; give uint8"),
        (np.zeros((8, 8, 4), np.uint8), r"shape \(8, 8, 4\)"),
        (np.zeros((8, 8), np.uint8), r"shape \(8, 8\)"),
        ([np.zeros((2, 8, 8, 3), np.uint8)], r"item 0 has shape"),
        (np.zeros((0, 8, 3), np.uint8), "without pixels"),
        (42, "cannot classify a int"),
        (["a.jpg", {"path": "b.jpg"}], "item 1 is a dict"),
    ],
)
def test_a_wrong_input_as_a_whole_is_one_clear_error(model, images, message):
  with pytest.raises(UserError, match=message):
    model.predict(images)


def test_load_refuses_what_is_no_trained_model(tmp_path):
  with pytest.raises(UserError, match="not a roadflax workdir"):
    roadflax.load(str(tmp_path))


def test_load_takes_a_stage(trained_workdir):
  assert roadflax.load(trained_workdir, "classify").source.endswith("classify")
  with pytest.raises(UserError, match="no trained classification stage"):
    roadflax.load(trained_workdir, "pretrain")


def test_predictions_below_the_threshold_are_flagged_unsure(
    trained_workdir, files, tmp_path
):
  bad = tmp_path / "notes.jpg"
  bad.write_text("not a picture")
  top = roadflax.load(trained_workdir).predict(files).probabilities.max(1)
  threshold = float(np.median(top))
  result = roadflax.load(trained_workdir, unsure_below=threshold).predict(
      files + [str(bad)]
  )
  assert result.unsure == [bool(p < threshold) for p in top] + [False]
  assert result.unsure[:3].count(True) == 1  # the least sure of three
  assert (
      roadflax.load(trained_workdir, unsure_below=1.0).predict(files).unsure
      == [True] * 3
  )
  with pytest.raises(UserError, match="unsure_below=1.5 is not a probability"):
    roadflax.load(trained_workdir, unsure_below=1.5)
