"""Exports: every format written from a trained workdir keeps its parity
bound with JAX, says what it is in its metadata and model card, runs again
through `load_export`, and evaluates itself; user mistakes are one line."""

import dataclasses
import functools
import json
import os
import shutil
import sys

import numpy as np
import pytest

import roadflax
from roadflax.benchmark import export_benchmark
from roadflax.configs import default, rscd3
from roadflax.data import image_folder, preprocess
from roadflax.errors import UserError
from roadflax.export import cards, converters, evaluation, exporters, parity
from roadflax.export import runtimes, trained
from roadflax.files import atomic_write_json
from roadflax.models import roadnet
from roadflax.results import calibration
from roadflax.runs import workdirs
from tests import helpers

IMAGE_SIZE = 67
TEST_PER_CLASS = helpers.COLOUR_SPLITS["test"]
TRAIN_PER_CLASS = helpers.COLOUR_SPLITS["train"]


@pytest.fixture(scope="module")
def classifier(confident_workdir):
  return trained.TrainedClassifier.load(confident_workdir)


@pytest.fixture(scope="module")
def test_images(classifier, confident_workdir):
  """(uint8 pixels, labels) of the test split, read file by file as
  `roadflax.load` reads them, not as the exporter does."""
  root = workdir_data_root(confident_workdir)
  split = image_folder.scan_image_folder(root).splits["test"]
  pixels = np.stack([
      preprocess.file_pixels(path, classifier.preprocessing)
      for path in split.paths
  ])
  return pixels, split.labels


def workdir_data_root(workdir: str) -> str:
  with open(os.path.join(workdir, "config.json")) as f:
    return json.load(f)["data"]["root"]


@pytest.fixture(scope="session")
def exported(confident_workdir, tmp_path_factory):
  """export(format) -> its folder, written once per format for the run.

  The onnx folder starts out as a stale earlier export, which the export
  replaces (`test_an_earlier_export_is_replaced`). Each format has a parent
  folder of its own, in which no other export is staged meanwhile.
  """

  def write(format_name: str, folder: str) -> None:
    if format_name == "onnx":
      os.makedirs(folder)
      with open(os.path.join(folder, runtimes.METADATA_FILE), "w") as f:
        f.write('{"format": "onnx"}')
      with open(os.path.join(folder, "stale.txt"), "w") as f:
        f.write("from an earlier export")
    exporters.export_model(confident_workdir, None, format_name, folder)

  def export(format_name: str) -> str:
    return helpers.built_once(
        tmp_path_factory,
        f"exports-{format_name}/{format_name}",
        functools.partial(write, format_name),
    )

  return export


def read_metadata(directory: str) -> dict:
  with open(os.path.join(directory, runtimes.METADATA_FILE)) as f:
    return json.load(f)


@pytest.mark.parametrize("format_name", runtimes.FORMATS)
def test_the_export_keeps_its_parity_bound(exported, format_name):
  measured = read_metadata(exported(format_name))["parity"]

  assert measured["images"] == 3 * TEST_PER_CLASS
  # What makes the int8 bound meaningful here (see `confident_workdir`).
  assert measured["jax_accuracy"] >= 0.95
  if format_name in runtimes.QUANTISED_FORMATS:
    assert measured["top1_agreement"] >= 0.98
    assert abs(measured["accuracy"] - measured["jax_accuracy"]) <= 0.01
  else:
    bound = {"saved_model": 1e-4, "onnx": 1e-4, "tflite": 1e-3}[format_name]
    assert measured["max_abs_difference"] <= bound
    assert measured["top1_agreement"] == 1.0
  assert measured["within_bound"] is True


@pytest.mark.parametrize("format_name", runtimes.FORMATS)
def test_load_export_gives_what_jax_gives(
    exported, format_name, classifier, test_images
):
  pixels, _ = test_images
  some = pixels[::9]  # 14 images: a full batch and a part of one

  export = runtimes.load_export(exported(format_name))
  got = export.probabilities(some)

  assert export.class_names == classifier.class_names
  assert export.preprocessing == classifier.preprocessing
  assert got.dtype == np.float32 and got.shape == (len(some), 3)
  expected = trained.reference_probabilities(classifier, some)
  if format_name in runtimes.QUANTISED_FORMATS:
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(got, expected, atol=0.05)
  else:
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)


@pytest.mark.parametrize("format_name", runtimes.FORMATS)
def test_the_metadata_says_what_goes_in_and_comes_out(
    exported, format_name, classifier, confident_workdir
):
  directory = exported(format_name)
  metadata = read_metadata(directory)

  assert metadata["format"] == format_name
  assert os.path.exists(os.path.join(directory, metadata["file"]))
  assert metadata["class_names"] == list(helpers.CLASSES)
  assert metadata["preprocessing"] == {
      **dataclasses.asdict(classifier.preprocessing),
      "mean": list(classifier.preprocessing.mean),
      "std": list(classifier.preprocessing.std),
  }
  batch = 1 if format_name.startswith("tflite") else None
  assert metadata["input"] == {
      "name": "pixels",
      "dtype": "uint8",
      "shape": [batch, IMAGE_SIZE, IMAGE_SIZE, 3],
  }
  assert metadata["output"]["dtype"] == "float32"
  assert metadata["output"]["shape"] == [batch, 3]
  assert metadata["source"] == {
      "workdir": os.path.abspath(confident_workdir),
      "stage": "classify",
      "step": classifier.step,
  }
  assert metadata["roadflax_version"] == roadflax.__version__
  assert metadata["data_config"]["root"] == workdir_data_root(confident_workdir)
  assert metadata["training_data"]["licence"] is None
  assert ("calibration" in metadata) == (
      format_name in runtimes.QUANTISED_FORMATS
  )


@pytest.mark.parametrize("format_name", runtimes.QUANTISED_FORMATS)
def test_int8_is_calibrated_on_the_whole_small_train_split(
    exported, format_name
):
  metadata = read_metadata(exported(format_name))

  # 300 at most: all 60 training images here.
  assert metadata["calibration"] == {
      "split": "train",
      "images": 3 * TRAIN_PER_CLASS,
  }
  assert "int8" in metadata["output"]["meaning"]


@pytest.mark.parametrize("format_name", ["onnx", "tflite_int8"])
def test_the_model_card_tells_how_to_use_the_model(
    exported, format_name, confident_workdir
):
  directory = exported(format_name)
  with open(os.path.join(directory, runtimes.CARD_FILE)) as f:
    card = f.read()
  with open(os.path.join(confident_workdir, "classify", "report.json")) as f:
    report = json.load(f)

  for name in helpers.CLASSES:
    f1 = report["per_class"][name]["f1"]
    assert f"| {name} | {f1:.4f} |" in card
  assert f"test accuracy: {report['accuracy']:.4f}" in card
  for step in ("EXIF", f"{IMAGE_SIZE}x{IMAGE_SIZE} with Lanczos", "aspect"):
    assert step in card
  assert "ImageEnhance.Contrast(1.5)" in card
  assert "uint8 [N, 67, 67, 3]" in card or "uint8 [1, 67, 67, 3]" in card
  assert parity.summary(read_metadata(directory)["parity"]) in card
  assert "## Intended use and limits" in card
  assert "image folder" in card and "Licence" not in card


def test_the_card_of_a_model_trained_on_rscd_notes_its_licence(exported):
  metadata = read_metadata(exported("onnx"))
  rscd = rscd3.get_config().data
  metadata["training_data"] = {
      "source": rscd.source,
      "description": cards.describe_data(rscd),
      "licence": cards.RSCD_LICENCE if cards.is_rscd(rscd) else None,
  }

  card = cards.model_card(metadata)

  assert "RSCD, variant 3class" in card
  assert "## Licence" in card and "CC BY-NC 4.0" in card
  assert "non-commercial" in card


def test_rscd_is_recognised_by_source_or_tfds_name():
  data = default.get_config().data
  assert not cards.is_rscd(data)
  assert cards.is_rscd(rscd3.get_config().data)
  data.source, data.tfds_name = "tfds", "rscd/27class"
  assert cards.is_rscd(data)
  data.tfds_name = "beans"
  assert not cards.is_rscd(data)


def test_the_saved_model_takes_any_batch_and_holds_the_class_names(exported):
  import tensorflow as tf

  loaded = tf.saved_model.load(
      os.path.join(exported("saved_model"), "saved_model")
  )
  serve = loaded.signatures["serving_default"]
  (given,) = serve.structured_input_signature[1].values()
  (returned,) = serve.structured_outputs.values()

  # (Parity ran it on batches of 32 and 24 images, the round trip on 14.)
  assert given.name == "pixels" and given.dtype == tf.uint8
  assert given.shape.as_list() == [None, IMAGE_SIZE, IMAGE_SIZE, 3]
  assert returned.dtype == tf.float32
  assert returned.shape.as_list() == [None, 3]
  assert [name.decode() for name in loaded.class_names.numpy()] == list(
      helpers.CLASSES
  )


@pytest.mark.parametrize("format_name", ["tflite", "tflite_int8"])
def test_tflite_takes_one_uint8_image_and_gives_float_probabilities(
    exported, format_name
):
  from ai_edge_litert import interpreter

  path = os.path.join(exported(format_name), runtimes.MODEL_FILES[format_name])
  runner = interpreter.Interpreter(model_path=path).get_signature_runner(
      "serving_default"
  )
  (given,) = runner.get_input_details().values()
  (returned,) = runner.get_output_details().values()

  assert given["dtype"] == np.uint8
  assert list(given["shape"]) == [1, IMAGE_SIZE, IMAGE_SIZE, 3]
  assert returned["dtype"] == np.float32
  assert list(returned["shape"]) == [1, 3]


@pytest.mark.parametrize("family", ["tflite", "onnx"])
def test_int8_weights_take_a_quarter_of_the_float_file(exported, family):
  sizes = {
      name: os.path.getsize(
          os.path.join(exported(name), runtimes.MODEL_FILES[name])
      )
      for name in (family, f"{family}_int8")
  }
  assert sizes[f"{family}_int8"] < 0.3 * sizes[family]


def test_onnx_has_a_dynamic_batch_and_the_class_names(exported, test_images):
  import onnx
  import onnxruntime

  path = os.path.join(exported("onnx"), "model.onnx")
  session = onnxruntime.InferenceSession(
      path, providers=["CPUExecutionProvider"]
  )
  (given,) = session.get_inputs()
  props = {p.key: p.value for p in onnx.load(path).metadata_props}

  assert given.name == "pixels" and given.type == "tensor(uint8)"
  assert isinstance(given.shape[0], str)
  assert json.loads(props["class_names"]) == list(helpers.CLASSES)
  for count in (1, 5):
    (got,) = session.run(None, {"pixels": test_images[0][:count]})
    assert got.shape == (count, 3)


def test_a_decoder_head_goes_to_onnx_one_image_at_a_time(
    classifier, test_images, tmp_path
):
  import jax
  import onnxruntime

  # jax2onnx resizes (the decoder's up-sampling) for a known batch only.
  model = roadnet.RoadNet(num_classes=3, head_input="decoder")
  decoder_head = dataclasses.replace(
      classifier,
      model=model,
      params=roadnet.init_params(model, jax.random.key(0), IMAGE_SIZE),
  )
  one = test_images[0][:1]

  assert converters.convert("onnx", decoder_head, str(tmp_path)) == 1

  session = onnxruntime.InferenceSession(
      str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]
  )
  assert session.get_inputs()[0].shape == [1, IMAGE_SIZE, IMAGE_SIZE, 3]
  np.testing.assert_allclose(
      session.run(None, {"pixels": one})[0],
      trained.reference_probabilities(decoder_head, one),
      atol=1e-4,
      rtol=0,
  )


def test_an_earlier_export_is_replaced(exported):
  directory = exported("onnx")

  assert sorted(os.listdir(directory)) == [
      "model.onnx",
      "model_card.md",
      "roadflax_export.json",
  ]
  # Nothing is left of the folders the exports were staged in.
  assert not [
      name
      for name in os.listdir(os.path.dirname(directory))
      if name.startswith(".")
  ]


def own_copy(directory: str, tmp_path) -> str:
  """A copy to write an evaluation into: the exports are shared by tests
  that list their files."""
  return shutil.copytree(directory, tmp_path / os.path.basename(directory))


def test_evaluate_export_reports_the_accuracy_of_its_probabilities(
    exported, test_images, tmp_path
):
  directory = own_copy(exported("onnx"), tmp_path)
  pixels, labels = test_images
  expected = np.mean(
      runtimes.load_export(directory).probabilities(pixels).argmax(1) == labels
  )

  report = evaluation.evaluate_export(directory, None)

  with open(os.path.join(directory, "report.json")) as f:
    assert json.load(f) == report
  assert os.path.exists(os.path.join(directory, "report.md"))
  assert report["num_examples"] == len(labels)
  assert report["accuracy"] == pytest.approx(expected)
  assert report["export_format"] == "onnx"
  assert runtimes.is_export(directory)


def test_evaluate_export_reads_the_data_it_is_given(
    exported, confident_workdir, tmp_path
):
  directory = own_copy(exported("onnx"), tmp_path)
  data = default.get_config().data
  data.root = workdir_data_root(confident_workdir)

  report = evaluation.evaluate_export(directory, data)

  assert report["num_examples"] == 3 * TEST_PER_CLASS
  assert report["data_root"] == data.root


def one_line(error: pytest.ExceptionInfo) -> str:
  message = str(error.value)
  assert message and "\n" not in message
  return message


def test_data_of_other_classes_is_refused(exported, tmp_path):
  data = default.get_config().data
  data.root = helpers.write_image_tree(
      str(tmp_path),
      per_split={"train": 1, "val": 1, "test": 1},
      classes=("dry", "wet", "snow"),
  )

  with pytest.raises(UserError) as error:
    evaluation.evaluate_export(exported("onnx"), data)

  assert "trained on ['asphalt', 'concrete', 'gravel']" in one_line(error)


def test_an_unknown_format_is_refused(confident_workdir, tmp_path):
  with pytest.raises(UserError) as error:
    exporters.export_model(confident_workdir, None, "tfjs", str(tmp_path))

  assert "'tfjs' is not one of saved_model, tflite" in one_line(error)


def test_a_folder_holding_other_files_is_refused(confident_workdir, tmp_path):
  (tmp_path / "notes.txt").write_text("mine")

  with pytest.raises(UserError) as error:
    exporters.export_model(confident_workdir, None, "onnx", str(tmp_path))

  assert "holds files but no earlier export" in one_line(error)
  assert os.listdir(tmp_path) == ["notes.txt"]


def test_a_workdir_without_a_classifier_is_refused(tmp_path):
  with pytest.raises(UserError) as error:
    exporters.export_model(
        str(tmp_path), None, "onnx", str(tmp_path / "export")
    )

  assert "is not a roadflax workdir" in one_line(error)
  assert not (tmp_path / "export").exists()


def test_a_folder_that_is_no_export_is_refused(confident_workdir):
  with pytest.raises(UserError) as error:
    runtimes.load_export(confident_workdir)
  assert "is not a roadflax export" in one_line(error)

  with pytest.raises(UserError) as error:
    evaluation.evaluate_export(confident_workdir, None)
  assert "is not a roadflax export" in one_line(error)


def test_an_export_takes_only_uint8_pixels_of_its_size(exported):
  export = runtimes.load_export(exported("onnx"))

  with pytest.raises(UserError) as error:
    export.probabilities(np.zeros((2, 67, 67, 3), np.float32))
  assert "uint8 pixels [N, 67, 67, 3], got float32" in one_line(error)
  with pytest.raises(UserError):
    export.probabilities(np.zeros((2, 64, 64, 3), np.uint8))


def test_a_missing_converter_package_is_named(
    confident_workdir, tmp_path, monkeypatch
):
  monkeypatch.setitem(sys.modules, "jax2onnx", None)  # import fails

  with pytest.raises(UserError) as error:
    exporters.export_model(
        confident_workdir, None, "onnx", str(tmp_path / "export")
    )

  assert one_line(error) == (
      "the onnx format needs jax2onnx: install roadflax's export extra (pip"
      " install '.[export]' in its checkout)"
  )


def test_a_missing_runtime_package_is_named(exported, monkeypatch):
  directory = exported("tflite")
  monkeypatch.setitem(sys.modules, "ai_edge_litert", None)

  with pytest.raises(UserError) as error:
    runtimes.load_export(directory)

  assert one_line(error) == (
      "the tflite format needs ai_edge_litert: install roadflax's export extra"
      " (pip install '.[export]' in its checkout)"
  )


def test_roadflax_load_predicts_with_an_export_as_with_its_workdir(
    exported, confident_workdir
):
  root = workdir_data_root(confident_workdir)
  files = [f"{root}/test/{name}/001.jpg" for name in helpers.CLASSES]
  from_workdir = roadflax.load(confident_workdir).predict(files)

  for format_name in ("saved_model", "onnx"):
    model = roadflax.load(exported(format_name))
    result = model.predict(files + [b"no image"])
    assert result.classes[:3] == from_workdir.classes
    np.testing.assert_allclose(
        result.probabilities[:3], from_workdir.probabilities, atol=1e-4
    )
    assert result.classes[3] is None and "not readable" in result.errors[3]
  with pytest.raises(UserError, match="is an export"):
    roadflax.load(exported("onnx"), "classify")
  with pytest.raises(UserError, match="its own format's runtime"):
    roadflax.load(exported("onnx"), runtime="openvino")


def test_the_command_exports_and_takes_an_export_as_its_workdir(
    exported, confident_workdir, tmp_path
):
  output = tmp_path / "exported"
  helpers.run_main(
      "--mode=export",
      f"--workdir={confident_workdir}",
      "--format=onnx",  # the quickest to write
      f"--output={output}",
      check=True,
  )
  assert runtimes.read_metadata(str(output))["format"] == "onnx"

  image = f"{workdir_data_root(confident_workdir)}/test/gravel/002.jpg"
  predictions = tmp_path / "predictions.json"
  result = helpers.run_main(
      "--mode=predict",
      f"--workdir={output}",
      f"--input={image}",
      f"--output={predictions}",
      check=True,
  )
  assert f"{image}: gravel" in result.stdout
  assert json.loads(predictions.read_text())["model"] == str(output)

  helpers.run_main("--mode=evaluate", f"--workdir={output}", check=True)
  assert (output / "report.json").exists()


def test_the_command_asks_for_a_format_and_an_output(confident_workdir):
  line = helpers.error_line(
      helpers.run_main("--mode=export", f"--workdir={confident_workdir}")
  )
  assert "--format=FORMAT" in line and "--output=DIR" in line
  line = helpers.error_line(
      helpers.run_main(
          "--mode=export", f"--workdir={confident_workdir}", "--format=h5"
      )
  )
  assert "--format" in line and "saved_model" in line


def test_the_export_benchmark_reports_each_format_against_jax(
    confident_workdir, tmp_path
):
  figures = export_benchmark.measure(
      confident_workdir, str(tmp_path), ["onnx"], repeats=1
  )

  onnx = figures["formats"]["onnx"]
  written = read_metadata(str(tmp_path / "onnx"))
  assert onnx["parity"] == written["parity"]
  assert onnx["bytes"] == os.path.getsize(tmp_path / "onnx" / "model.onnx")
  # 47M float32 weights at 224 px; at 67 px the head is smaller, but the
  # file still holds millions of them.
  assert onnx["bytes"] > 4 * 1e6
  assert onnx["export_seconds"] > 0
  for system in (figures["jax"], onnx):
    assert 0 < system["batch_ms"] < 10_000 and 0 < system["single_ms"]
  row = export_benchmark.table(figures).splitlines()[-1]
  assert row.startswith("| onnx |") and "x |" in row


@pytest.mark.parametrize("format_name", runtimes.FORMATS)
def test_the_metadata_holds_the_stage_calibration(
    exported, format_name, confident_workdir
):
  fitted = workdirs.read_calibration(
      os.path.join(confident_workdir, "classify")
  )
  assert read_metadata(exported(format_name))["temperature_scaling"] == fitted


def test_an_export_divides_the_logits_by_the_stage_temperature(
    confident_workdir, classifier, test_images, tmp_path
):
  workdir = helpers.linked_workdir(confident_workdir, tmp_path / "run")
  fitted = {
      **workdirs.read_calibration(os.path.join(confident_workdir, "classify")),
      "temperature": 2.0,
      "fitted": True,
  }
  atomic_write_json(
      os.path.join(workdir, "classify", workdirs.CALIBRATION_FILE), fitted
  )
  directory = exporters.export_model(
      workdir, None, "onnx", str(tmp_path / "onnx")
  )
  metadata = read_metadata(directory)
  pixels = test_images[0][::9]

  assert metadata["temperature_scaling"] == fitted
  assert "divided by 2 (the temperature" in metadata["output"]["meaning"]
  assert metadata["parity"]["within_bound"] is True
  with open(os.path.join(directory, runtimes.CARD_FILE)) as f:
    assert "calibrated by temperature scaling (logits divided by 2," in f.read()
  np.testing.assert_allclose(
      runtimes.load_export(directory).probabilities(pixels),
      calibration.softmax(helpers.classifier_logits(classifier, pixels), 2.0),
      atol=1e-4,
  )


def test_the_card_of_an_uncalibrated_model_says_how_to_calibrate_it(
    exported,
):
  metadata = read_metadata(exported("onnx"))
  metadata["temperature_scaling"] = None
  card = cards.model_card(metadata)
  assert "scores, not calibrated confidences" in card
  assert "`--mode=evaluate` on the workdir calibrates it" in card


def test_an_export_cannot_explain_and_says_so_in_one_line(
    exported, confident_workdir
):
  directory = exported("onnx")
  image = f"{workdir_data_root(confident_workdir)}/test/gravel/003.jpg"
  with pytest.raises(UserError, match="an export has no gradients"):
    roadflax.load(directory).explain([image])
  line = helpers.error_line(
      helpers.run_main(
          "--mode=predict",
          f"--workdir={directory}",
          f"--input={image}",
          "--explain",
      )
  )
  assert "cannot explain its predictions: an export has no gradients" in line
