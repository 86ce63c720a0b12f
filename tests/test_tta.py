"""Test-time augmentation (`model.tta`): the views, their average, the steps
that use it (unchanged without it), and a workdir, `--mode=evaluate --tta`
and an export predicting with it."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from roadflax.configs import default
from roadflax.data import image_folder, preprocess
from roadflax.errors import UserError
from roadflax.export import exporters, runtimes, trained
from roadflax.files import atomic_write_json, read_json
from roadflax.models import objectives, roadnet, saliency, steps, test_time
from roadflax.results import calibration
from roadflax.runs import workdirs
from roadflax.training import configuration
from tests import helpers

SIZE = roadnet.MIN_IMAGE_SIZE


@pytest.fixture(scope="module")
def network():
  """A randomly initialised network and three images: (model, params,
  images)."""
  model = roadnet.RoadNet(num_classes=3, head_units=helpers.HEAD_UNITS)
  params = roadnet.init_params(model, jax.random.key(0), SIZE)
  images = jax.random.normal(jax.random.key(1), (3, SIZE, SIZE, 3))
  return model, params, images


def _symmetries(image: np.ndarray, tta: str) -> list[np.ndarray]:
  """The views `tta` should take of one [H, W, C] image, made by numpy."""
  flips = [image, image[:, ::-1], image[::-1], image[::-1, ::-1]]
  if tta == "flips":
    return flips
  return flips + [np.rot90(v) for v in flips]


@pytest.mark.parametrize("tta", ["flips", "flips_rot90"])
def test_views_are_each_image_and_its_symmetries_side_by_side(tta):
  images = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
  views = np.asarray(test_time.views(jnp.asarray(images), tta))
  k = test_time.view_count(tta)
  assert views.shape == (2 * k, 4, 4, 1)
  for i, image in enumerate(images):
    mine = views[i * k : (i + 1) * k]
    np.testing.assert_array_equal(mine[0], image)
    expected = {v.tobytes() for v in _symmetries(image, tta)}
    assert {v.tobytes() for v in mine} == expected
    assert len(expected) == k  # all different views


def test_rot90_views_need_square_images():
  with pytest.raises(ValueError, match="square"):
    test_time.views(jnp.zeros((1, 4, 6, 3)), "flips_rot90")


def test_the_average_is_the_log_of_the_mean_softmax():
  logits = np.random.default_rng(0).normal(size=(2 * 4, 3)) * 5
  averaged = np.asarray(test_time.average(jnp.asarray(logits), "flips"))
  mean = calibration.softmax(logits).reshape(2, 4, 3).mean(axis=1)
  np.testing.assert_allclose(averaged, np.log(mean), rtol=1e-5)


def test_a_constructed_model_predicts_the_mean_of_its_views_probabilities():
  """A model whose logits are three corner pixels: no view agrees."""

  def classify(images):
    return jnp.stack(
        [images[:, 0, 0, 0], images[:, 0, -1, 0], images[:, -1, 0, 0]], -1
    )

  images = np.random.default_rng(1).normal(size=(2, 5, 5, 1)) * 3
  for tta in ("flips", "flips_rot90"):
    predicted = jax.nn.softmax(
        test_time.logits(classify, jnp.asarray(images), tta)
    )
    for image, row in zip(images, np.asarray(predicted)):
      views = np.stack(_symmetries(image, tta))
      expected = calibration.softmax(np.asarray(classify(views))).mean(0)
      np.testing.assert_allclose(row, expected, rtol=1e-5)


@pytest.mark.parametrize("tta", ["flips", "flips_rot90"])
def test_a_prediction_with_tta_is_that_of_the_image_flipped(network, tta):
  model, params, images = network
  predict = steps.jit_predict_step(model, 1.5, tta)
  plain = steps.jit_predict_step(model, 1.5)
  turns = [lambda x: x[:, :, ::-1], lambda x: x[:, ::-1]]
  if tta == "flips_rot90":
    turns += [lambda x: jnp.rot90(x, axes=(1, 2)), lambda x: x.swapaxes(1, 2)]
  reference = predict(params, images)
  for turn in turns:
    np.testing.assert_allclose(
        predict(params, turn(images)), reference, atol=1e-6
    )
    # Without it the network sees another image.
    assert not np.allclose(
        plain(params, turn(images)), plain(params, images), atol=1e-6
    )


def test_none_is_bit_for_bit_the_steps_of_before(network):
  model, params, images = network

  @jax.jit
  def before(params, images):
    logits = model.apply(
        {"params": params}, images, method=roadnet.RoadNet.classify
    )
    return jax.nn.softmax(logits / 1.5), logits

  probabilities, logits = before(params, images)
  np.testing.assert_array_equal(
      steps.jit_predict_step(model, 1.5, "none")(params, images), probabilities
  )
  batch = {
      "image": images,
      "label": jnp.array([0, 1, 2]),
      "mask": jnp.array([True, True, False]),
  }
  objective = objectives.Objective("classification")
  _, _, eval_logits = steps.jit_eval_step(model, objective)(params, batch)
  np.testing.assert_array_equal(eval_logits, logits)


def test_the_eval_step_scores_the_averaged_prediction(network):
  model, params, images = network
  labels = jnp.array([0, 1, 2])
  batch = {"image": images, "label": labels, "mask": jnp.ones(3, bool)}
  objective = objectives.Objective("joint")
  metrics, confusion, logits = steps.jit_eval_step(model, objective, "flips")(
      params, batch
  )
  views = model.apply(
      {"params": params},
      test_time.views(images, "flips"),
      method=roadnet.RoadNet.classify,
  )
  expected = np.asarray(test_time.average(views, "flips"))
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
  # The loss is the averaged prediction's NLL plus the reconstruction error
  # of the images themselves, as without augmentation.
  plain = objectives.objective_outputs(
      objective, model, params, batch, train=False
  )
  nll = -np.log(calibration.softmax(expected)[np.arange(3), labels])
  np.testing.assert_allclose(
      metrics.compute()["loss"],
      np.mean(nll + np.asarray(plain["squared_error"])),
      rtol=1e-5,
  )
  np.testing.assert_allclose(
      metrics.compute()["mse"], np.mean(plain["squared_error"]), rtol=1e-5
  )
  predicted = expected.argmax(-1)
  assert int(confusion[np.arange(3), predicted].sum()) == 3


def test_an_explanation_maps_the_class_the_views_predict(network):
  model, params, _ = network
  pixels = np.random.default_rng(2).integers(0, 256, (2, SIZE, SIZE, 3))
  pixels = pixels.astype(np.uint8)
  classifier = trained.TrainedClassifier(
      params=params,
      model=model,
      class_names=("a", "b", "c"),
      preprocessing=preprocess.Preprocessing.from_config(
          default.get_config().data
      ),
      workdir="",
      stage="classify",
      step=0,
      tta="flips",
  )
  probabilities, heatmaps = classifier.explain_function()(pixels)
  np.testing.assert_allclose(
      probabilities, classifier.pixels_function()(pixels), atol=1e-6
  )
  _, expected = saliency.grad_cam(
      model,
      params,
      classifier._normalised(pixels),
      jnp.argmax(probabilities, axis=-1),
  )
  np.testing.assert_allclose(heatmaps, expected, atol=1e-5)


def test_an_unknown_tta_is_one_line():
  config = helpers.tiny_config("/data")
  config.model.tta = "rot"
  with pytest.raises(
      UserError,
      match=r"--config.model.tta='rot' is not one of none, flips, flips_rot90",
  ):
    configuration.check_config(config)


# ------------------------------------------------------------ with a workdir


def _tta_probabilities(classifier, pixels, tta):
  """What a workdir's classifier should give with `tta`, by numpy."""
  per_view = zip(*(_symmetries(image, tta) for image in pixels))
  mean = np.mean(
      [
          calibration.softmax(
              helpers.classifier_logits(classifier, np.stack(view))
          )
          for view in per_view
      ],
      axis=0,
  )
  return calibration.softmax(np.log(mean), classifier.temperature)


def _pixels(workdir, classifier):
  """Six of the workdir's test images as the model takes them."""
  root = read_json(os.path.join(workdir, workdirs.CONFIG_FILE))["data"]["root"]
  paths = image_folder.scan_image_folder(root).splits["test"].paths[::20]
  return np.stack(
      [preprocess.file_pixels(path, classifier.preprocessing) for path in paths]
  )


def _with_run(workdir, tmp_path, **changes):
  """A linked copy of `workdir` whose run.json is its own, with `changes`
  (None: the key removed)."""
  copy = helpers.linked_workdir(workdir, tmp_path / "run")
  run = read_json(os.path.join(workdir, workdirs.RUN_FILE))
  for key, value in changes.items():
    if value is None:
      del run[key]
    else:
      run[key] = value
  os.remove(os.path.join(copy, workdirs.RUN_FILE))
  atomic_write_json(os.path.join(copy, workdirs.RUN_FILE), run)
  return copy


def test_another_tta_in_a_workdir_is_recorded_with_a_warning(tmp_path, caplog):
  config = helpers.tiny_config(str(tmp_path / "data"))
  workdir = str(tmp_path / "run")
  assert workdirs.prepare(workdir, config, helpers.CLASSES)["tta"] == "none"
  config.model.tta = "flips"
  with caplog.at_level(logging.WARNING):
    workdirs.prepare(workdir, config, helpers.CLASSES)
  assert read_json(os.path.join(workdir, workdirs.RUN_FILE))["tta"] == "flips"
  assert "model.tta changes from 'none' to 'flips': stages already" in (
      caplog.text
  )


def test_a_workdir_from_before_tta_predicts_without_it(
    confident_workdir, tmp_path
):
  assert trained.TrainedClassifier.load(confident_workdir).tta == "none"
  old = _with_run(confident_workdir, tmp_path, tta=None)
  assert trained.TrainedClassifier.load(old).tta == "none"


def test_evaluate_with_tta_calibrates_records_and_predicts_with_it(
    confident_workdir, tmp_path
):
  workdir = helpers.linked_workdir(confident_workdir, tmp_path / "run")
  helpers.run_main(
      "--mode=evaluate", f"--workdir={workdir}", "--tta=flips", check=True
  )
  assert read_json(os.path.join(workdir, workdirs.RUN_FILE))["tta"] == "flips"
  original = read_json(os.path.join(confident_workdir, workdirs.RUN_FILE))
  assert original["tta"] == "none"  # the linked original is not written
  report = read_json(os.path.join(workdir, "classify", "report.json"))
  assert report["tta"] == "flips"
  classifier = trained.TrainedClassifier.load(workdir)
  assert classifier.tta == "flips"
  assert report["calibration"]["temperature"] == classifier.temperature
  pixels = _pixels(workdir, classifier)
  np.testing.assert_allclose(
      classifier.jit_pixels_function()(pixels),
      _tta_probabilities(classifier, pixels, "flips"),
      atol=1e-5,
  )


def test_an_export_predicts_with_its_workdir_s_tta(confident_workdir, tmp_path):
  workdir = _with_run(confident_workdir, tmp_path, tta="flips_rot90")
  classifier = trained.TrainedClassifier.load(workdir)
  directory = exporters.export_model(
      workdir, None, "onnx", str(tmp_path / "onnx")
  )
  metadata = read_json(os.path.join(directory, runtimes.METADATA_FILE))
  assert metadata["tta"] == "flips_rot90"
  assert "averaged over 8 mirrored or turned views" in (
      metadata["output"]["meaning"]
  )
  assert metadata["parity"]["within_bound"] is True
  pixels = _pixels(workdir, classifier)
  np.testing.assert_allclose(
      runtimes.load_export(directory).probabilities(pixels),
      _tta_probabilities(classifier, pixels, "flips_rot90"),
      atol=1e-4,
  )
  refused = helpers.run_main(
      "--mode=evaluate", f"--workdir={directory}", "--tta=flips"
  )
  assert helpers.error_line(refused).startswith("error: --tta needs a workdir")
