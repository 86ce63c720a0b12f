"""Comparing runs: the table, the CSV, the plot, workdir globs and mistakes.

The workdirs are fakes holding the files training writes (TensorBoard events
through clu, as train.py writes them), so no model is trained here.
"""

import csv
import io
import json
import os
import re
import time

import numpy as np
import pytest
from clu import metric_writers
from PIL import Image
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer import event_file_writer

from roadflax.configs import default
from roadflax.results import compare, curves, tables
from roadflax.errors import UserError
from tests import helpers

IMAGE_SIZE = 67
# encoder + head at 67x67 and 3 classes: what `--mode=summary` reports.
CLASSIFIER_PARAMETERS = 22_183_555


def write_json(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(data, f)


def write_events(stage_dir, tag, values, steps_per_epoch=10):
  writer = metric_writers.create_default_writer(stage_dir)
  for epoch, value in enumerate(values, start=1):
    writer.write_scalars(
        epoch * steps_per_epoch, {tag: value, "train_loss": 1.0}
    )
  writer.close()


def report(f1s):
  return {
      "accuracy": float(np.mean(f1s)),
      "class_names": list(helpers.CLASSES),
      "per_class": {
          name: {"precision": f1, "recall": f1, "f1": f1, "support": 4}
          for name, f1 in zip(helpers.CLASSES, f1s)
      },
      "num_examples": 12,
      "checkpoint_step": 60,
  }


def make_workdir(
    root,
    *,
    pretrain=True,
    finished=True,
    accuracies=(0.5, 0.7, 0.8),
    f1s=(0.9, 0.75, 0.6),
    learning_rate=0.01,
    seconds=(30.0, 90.5),
):
  """A workdir as train.py leaves it; `finished=False` stops before the report."""
  config = default.get_config()
  config.data.image_size = IMAGE_SIZE
  config.stages.pretrain.update(epochs=2)
  config.stages.classify.update(
      optimizer="momentum", learning_rate=learning_rate, epochs=3
  )
  if not pretrain:
    config.stage_order = ("classify",)
    config.stages.classify.init_from = ""
  os.makedirs(root)
  write_json(
      os.path.join(root, "run.json"),
      {
          "class_names": list(helpers.CLASSES),
          "image_size": IMAGE_SIZE,
          "head_input": "latent",
      },
  )
  with open(os.path.join(root, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=2))
  if pretrain:
    stage_dir = os.path.join(root, "pretrain")
    write_events(stage_dir, "val_loss", (0.9, 0.6))
    write_json(
        os.path.join(stage_dir, "summary.json"),
        {
            "stage": "pretrain",
            "objective": "reconstruction",
            "epochs": 2,
            "seconds": seconds[0],
            "train_images_per_second": 400.0,
        },
    )
  stage_dir = os.path.join(root, "classify")
  write_events(stage_dir, "val_accuracy", accuracies)
  if finished:
    write_json(
        os.path.join(stage_dir, "summary.json"),
        {
            "stage": "classify",
            "objective": "classification",
            "epochs": 3,
            "seconds": seconds[1],
            "train_images_per_second": 123.4,
            "test_accuracy": float(np.mean(f1s)),
        },
    )
    write_json(os.path.join(stage_dir, "report.json"), report(f1s))
  return root


@pytest.fixture
def runs(tmp_path):
  make_workdir(str(tmp_path / "runs" / "a_pretrained"))
  make_workdir(
      str(tmp_path / "runs" / "b_baseline"),
      pretrain=False,
      accuracies=(0.4, 0.6),
      f1s=(0.5, 0.5, 0.8),
      learning_rate=1e-3,
      seconds=(0.0, 3725.0),
  )
  os.makedirs(tmp_path / "runs" / "logs")  # not a workdir: a glob skips it
  return tmp_path / "runs"


def table_rows(text):
  """The cells of a Markdown table's rows, header first, rule left out."""
  rows = [
      [cell.strip() for cell in line.strip().strip("|").split(" | ")]
      for line in text.splitlines()
      if line.startswith("|")
  ]
  return [rows[0]] + rows[2:]


def test_table_csv_and_plot(runs, tmp_path, capsys):
  output = tmp_path / "out"
  compare.compare_main([str(runs / "*")], str(output))
  header, first, second = table_rows(capsys.readouterr().out)
  assert header == [
      "run",
      "config",
      "optimizer",
      "lr",
      "epochs",
      "test accuracy",
      "F1 asphalt",
      "F1 concrete",
      "F1 gravel",
      "parameters",
      "training time",
      "images/s",
  ]
  assert first == [
      "a_pretrained",
      (
          "pretrain(reconstruction of noise 0.5, adam 1e-3, 2 ep) ->"
          " classify(classification, momentum 0.01, 3 ep)"
      ),
      "momentum",
      "0.01",
      "3",
      "75.0%",
      "0.90",
      "0.75",
      "0.60",
      f"{CLASSIFIER_PARAMETERS:,}",
      "2m 00s",
      "123",
  ]
  assert second[:6] == [
      "b_baseline",
      "classify(classification, momentum 1e-3, 3 ep)",
      "momentum",
      "1e-3",
      "3",
      "60.0%",
  ]
  assert second[-2] == "1h 02m"
  assert (output / "comparison.md").read_text().count("| a_pretrained ") == 1

  with open(output / "comparison.csv", encoding="utf-8") as f:
    records = list(csv.DictReader(f))
  assert list(records[0]) == [
      "run",
      "config",
      "optimizer",
      "learning_rate",
      "epochs",
      "test_accuracy",
      "f1_asphalt",
      "f1_concrete",
      "f1_gravel",
      "parameters",
      "training_seconds",
      "train_images_per_second",
  ]
  assert [r["run"] for r in records] == ["a_pretrained", "b_baseline"]
  assert float(records[0]["test_accuracy"]) == pytest.approx(0.75)
  assert float(records[1]["f1_gravel"]) == pytest.approx(0.8)
  assert int(records[0]["parameters"]) == CLASSIFIER_PARAMETERS
  assert float(records[0]["training_seconds"]) == pytest.approx(120.5)

  image = np.asarray(Image.open(output / "comparison.png").convert("L"))
  assert image.shape[1] > image.shape[0] > 300  # two panels side by side
  assert image.std() > 10  # not blank


def test_parameters_match_the_model_summary():
  """The count from shapes agrees with `layer_table.layer_table`'s classifier total."""
  from roadflax.models import layer_table, roadnet

  text = layer_table.layer_table(roadnet.RoadNet(num_classes=3), IMAGE_SIZE)
  assert f"classifier (encoder + head): {CLASSIFIER_PARAMETERS:,}" in text
  assert (
      compare.classifier_parameters(roadnet.RoadNet(num_classes=3), IMAGE_SIZE)
      == CLASSIFIER_PARAMETERS
  )


def test_curves_come_from_the_events(runs):
  run = compare.summarize_run(str(runs / "a_pretrained"), "a")
  (accuracy,) = run.accuracy_curves
  assert accuracy.steps == (10, 20, 30)
  assert accuracy.values == pytest.approx((0.5, 0.7, 0.8))
  (loss,) = run.reconstruction_curves
  assert loss.values == pytest.approx((0.9, 0.6))


def test_a_resumed_stage_keeps_one_point_per_step(tmp_path):
  stage_dir = str(tmp_path / "classify")
  write_events(stage_dir, "val_accuracy", (0.5, 0.6, 0.7))
  writer = metric_writers.create_default_writer(
      stage_dir
  )  # a second event file
  writer.write_scalars(30, {"val_accuracy": 0.75})
  writer.close()
  steps, values = zip(*curves.read_scalar(stage_dir, "val_accuracy"))
  assert steps == (10, 20, 30)
  assert values == pytest.approx((0.5, 0.6, 0.75))


def test_classic_scalar_summaries_are_read_too(tmp_path):
  """Writers other than tf.summary (e.g. tensorboardX) store simple values."""
  writer = event_file_writer.EventFileWriter(str(tmp_path))
  for step, value in ((5, 0.25), (10, 0.5)):
    summary = summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="val_loss", simple_value=value)]
    )
    writer.add_event(
        event_pb2.Event(step=step, wall_time=time.time(), summary=summary)
    )
  writer.close()
  assert curves.read_scalar(str(tmp_path), "val_loss") == [(5, 0.25), (10, 0.5)]
  assert curves.read_scalar(str(tmp_path / "nothing"), "val_loss") == []


def test_an_unfinished_run_shows_dashes(tmp_path, capsys):
  workdir = make_workdir(str(tmp_path / "running"), finished=False)
  compare.compare_main([workdir], str(tmp_path / "out"))
  _, row = table_rows(capsys.readouterr().out)
  assert row[5:9] == [tables.MISSING] * 4  # test accuracy, F1 of each class
  assert row[-1] == tables.MISSING  # images/s
  assert row[-2] == "30s"  # the finished pretrain stage
  records = list(
      csv.DictReader(
          io.StringIO((tmp_path / "out" / "comparison.csv").read_text())
      )
  )
  assert records[0]["test_accuracy"] == ""


def test_named_workdirs_keep_their_order_and_repeats_drop(runs):
  a, b = str(runs / "a_pretrained"), str(runs / "b_baseline")
  assert compare.expand_workdirs([b, a, a + "/"]) == [b, a]
  assert compare.expand_workdirs([str(runs / "*_*")]) == [a, b]


@pytest.mark.parametrize(
    "item,message",
    [
        ("logs", "is not a roadflax workdir (no run.json)"),
        ("missing", "no such folder"),
        ("x*", "matches nothing"),
        ("l*", "matches no roadflax workdir"),
    ],
)
def test_workdir_mistakes_end_in_one_line(runs, item, message):
  with pytest.raises(UserError, match=re.escape(message)) as error:
    compare.expand_workdirs([str(runs / item)])
  assert "\n" not in str(error.value)


def test_compare_through_main(runs, tmp_path):
  output = tmp_path / "out"
  result = helpers.command(
      "--mode=compare",
      f"--workdir={runs / 'a_pretrained'}",
      f"--workdir={runs / 'b_*'}",
      f"--output={output}",
      check=True,
  )
  assert "| b_baseline " in result.stdout
  assert sorted(os.listdir(output)) == [
      "comparison.csv",
      "comparison.md",
      "comparison.png",
  ]


def test_descriptions_name_corruption_and_normalisation():
  from roadflax.configs import default

  config = default.get_config()
  assert compare.describe_stages(config) == (
      "pretrain(reconstruction of noise 0.5, adam 1e-3, 10 ep) -> "
      "classify(classification, adam 3e-4, 10 ep)"
  )
  config.stages.pretrain.corruption = "mask"
  config.stages.pretrain.corruption_amount = 0.5
  config.model.norm = "group"
  assert compare.describe_stages(config) == (
      "group norm: pretrain(reconstruction of mask 0.5, adam 1e-3, 10 ep) -> "
      "classify(classification, adam 3e-4, 10 ep)"
  )
