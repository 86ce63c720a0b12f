"""The runtime behind a workdir's predictions: `--mode=runtimes` builds and
measures each installed one, `auto` takes the fastest that keeps its bound
with JAX for the current checkpoint, anything missing or stale falls back to
JAX in one line, and Grad-CAM stays with JAX."""

import json
import logging
import os
import sys

import numpy as np
import pytest

import roadflax
from roadflax.errors import UserError
from roadflax.export import choice, runtimes, trained
from tests import helpers


@pytest.fixture(scope="session")
def built(confident_workdir, tmp_path_factory):
  """A workdir holding `confident_workdir`'s model, its runtimes built once
  for the session; tests only read it."""

  def build(workdir: str) -> None:
    helpers.linked_workdir(confident_workdir, workdir)
    choice.build(workdir)

  return helpers.built_once(tmp_path_factory, "runtimes/run", build)


def record_path(workdir: str) -> str:
  return os.path.join(workdir, "classify", choice.FOLDER, choice.RECORD_FILE)


def read_record(workdir: str) -> dict:
  with open(record_path(workdir)) as f:
    return json.load(f)


def test_every_installed_runtime_is_built_and_measured_against_jax(built):
  record = read_record(built)
  entries = record["runtimes"]

  assert list(entries) == [
      name for name in choice.RUNTIMES if choice.installed(name)
  ]
  assert {"openvino", "openvino_int8", "onnx_int8"} <= set(entries)
  for name, entry in entries.items():
    assert entry["images_per_second"] > 0
    if name == "jax":
      continue
    folder = os.path.join(built, "classify", choice.FOLDER, entry["format"])
    assert runtimes.read_metadata(folder)["format"] == entry["format"]
    assert entry["images"] == 3 * helpers.COLOUR_SPLITS["test"]
    expected = (
        entry["top1_agreement"] >= choice.MIN_AGREEMENT
        if name in choice.REDUCED_PRECISION
        else entry["within_bound"]
    )
    assert entry["eligible"] is expected
  # This model is sure of its answers: every runtime agrees with JAX.
  assert all(entry["eligible"] for entry in entries.values())
  fastest = max(entries, key=lambda name: entries[name]["images_per_second"])
  assert record["auto"] == fastest
  classifier = trained.TrainedClassifier.load(built)
  assert record["checkpoint"] == choice.fingerprint(classifier)
  assert record["speed_batch"] == choice.SPEED_BATCH


def test_auto_takes_the_fastest_runtime_that_keeps_its_bound(
    built, tmp_path, caplog
):
  workdir = helpers.linked_workdir(built, tmp_path / "run")
  folder = os.path.join(workdir, "classify", choice.FOLDER)
  os.makedirs(folder)
  os.symlink(
      os.path.join(built, "classify", choice.FOLDER, "onnx"),
      os.path.join(folder, "onnx"),
  )
  record = read_record(built)
  for entry in record["runtimes"].values():
    entry["images_per_second"] = 10.0
  # The fastest of all disagrees with JAX too often to stand in for it.
  record["runtimes"]["openvino_int8"].update(
      images_per_second=1000.0, top1_agreement=0.9, eligible=False
  )
  record["runtimes"]["onnx"]["images_per_second"] = 500.0
  with open(record_path(workdir), "w") as f:
    json.dump(record, f)

  with caplog.at_level(logging.INFO, logger="absl"):
    model = roadflax.load(workdir)

  assert model.runtime == "onnx"
  assert "predicts with runtime onnx (auto): 500 images/s" in caplog.text
  files = colour_files(built)
  np.testing.assert_allclose(
      model.predict(files).probabilities,
      roadflax.load(workdir, runtime="jax").predict(files).probabilities,
      atol=1e-4,
  )


def colour_files(workdir: str) -> list[str]:
  with open(os.path.join(workdir, "config.json")) as f:
    root = json.load(f)["data"]["root"]
  return [
      f"{root}/test/{name}/00{i}.jpg"
      for name in helpers.CLASSES
      for i in (1, 2)
  ]


def test_without_runtimes_auto_predicts_with_jax_and_says_how_to_build_them(
    confident_workdir, tmp_path, caplog
):
  workdir = helpers.linked_workdir(confident_workdir, tmp_path / "run")

  with caplog.at_level(logging.INFO, logger="absl"):
    model = roadflax.load(workdir)

  assert model.runtime == "jax"
  assert (
      "runtime jax: auto found no runtimes (none were built);"
      f" --mode=runtimes --workdir={workdir} builds and measures them"
  ) in caplog.text


def test_runtimes_of_another_checkpoint_are_not_used(built, tmp_path, caplog):
  workdir = helpers.linked_workdir(built, tmp_path / "run")
  record = read_record(built)
  record["checkpoint"]["parameters_hash"] = "0" * 32  # retrained since
  os.makedirs(os.path.join(workdir, "classify", choice.FOLDER))
  with open(record_path(workdir), "w") as f:
    json.dump(record, f)

  with caplog.at_level(logging.INFO, logger="absl"):
    assert roadflax.load(workdir).runtime == "jax"
  assert "(they are of another checkpoint)" in caplog.text
  with pytest.raises(UserError) as error:
    roadflax.load(workdir, runtime="onnx")
  assert str(error.value) == (
      f"no onnx runtime for {workdir}'s current checkpoint (they are of"
      f" another checkpoint): --mode=runtimes --workdir={workdir} builds and"
      " measures them"
  )


@pytest.mark.parametrize("name", ["onnx_int8", "openvino", "openvino_int8"])
def test_a_runtime_named_predicts_as_jax_and_jax_still_explains(built, name):
  files = colour_files(built)
  reference = roadflax.load(built, runtime="jax")
  model = roadflax.load(built, runtime=name)

  assert model.runtime == name and f"runtime={name!r}" in repr(model)
  got, expected = model.predict(files), reference.predict(files)
  assert got.classes == expected.classes
  np.testing.assert_allclose(
      got.probabilities, expected.probabilities, atol=0.05
  )
  why = model.explain(files[:2])
  assert why.heatmaps.shape == (2, 67, 67) and np.isfinite(why.heatmaps).all()


def test_an_unknown_runtime_is_one_line(built):
  with pytest.raises(UserError, match="is not one of auto, jax, saved_model"):
    roadflax.load(built, runtime="tensorrt")


def test_the_commands_build_and_use_runtimes(
    confident_workdir, tmp_path, caplog
):
  workdir = helpers.linked_workdir(confident_workdir, tmp_path / "run")
  helpers.run_main("--mode=runtimes", f"--workdir={workdir}", check=True)
  record = read_record(workdir)
  [image] = colour_files(workdir)[-1:]

  with caplog.at_level(logging.INFO, logger="absl"):
    result = helpers.run_main(
        "--mode=predict", f"--workdir={workdir}", f"--input={image}", check=True
    )

  assert f"{image}: gravel" in result.stdout
  assert f"predicts with runtime {record['auto']} (auto)" in caplog.text
  line = helpers.error_line(
      helpers.run_main(
          "--mode=predict",
          f"--workdir={workdir}",
          f"--input={image}",
          "--runtime=fastest",
      )
  )
  assert "--runtime" in line and "openvino_int8" in line


def test_an_engine_that_does_not_run_the_format_is_refused(built):
  folder = os.path.join(built, "classify", choice.FOLDER, "saved_model")

  with pytest.raises(UserError) as error:
    runtimes.load_export(folder, "openvino")

  assert str(error.value) == (
      f"{folder} is a saved_model export, which tensorflow runs, not openvino"
  )


def test_the_app_offers_the_runtimes_built_for_videos(built, monkeypatch):
  from streamlit.testing.v1 import AppTest

  script = os.path.join(helpers.ROOT, "roadflax", "serve", "app.py")
  monkeypatch.setattr(sys, "argv", [script, "--workdir", built])
  at = AppTest.from_file(script, default_timeout=120)
  at.run()

  assert not at.exception, at.exception
  [runtime] = [box for box in at.sidebar.selectbox if box.label == "Runtime"]
  assert runtime.options == ["auto", *read_record(built)["runtimes"]]
  runtime.select("onnx_int8").run()
  assert not at.exception and not at.error
