"""Semi-supervised fine-tuning: a classification stage trained on the
labelled split plus the pool images its teacher labels confidently."""

import os

import numpy as np
from PIL import Image
import pytest

from roadflax import files
from roadflax.configs import default
from roadflax.errors import UserError
from roadflax.runs import workdirs
from roadflax.training import configuration, pseudo_labels, train
from tests import helpers


def _pool(folder, count=6):
  os.makedirs(folder)
  rng = np.random.default_rng(0)
  for i in range(count):
    pixels = rng.integers(0, 255, (48, 72, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))


def _config(data_root, pool, threshold, teacher="classify"):
  config = helpers.tiny_config(data_root)
  config.stages.self_train = default.stage(
      objective="classification",
      optimizer="momentum",
      learning_rate=0.01,
      steps=3,
      batch_size=4,
      init_from=teacher,
      pseudo_label_threshold=threshold,
  )
  config.stages.self_train.data.update(source="folder", root=str(pool))
  config.stage_order = ("pretrain", "classify", "self_train")
  return config


def test_the_confident_pool_images_join_the_training_split(data_root, tmp_path):
  _pool(tmp_path / "pool")
  config = _config(data_root, tmp_path / "pool", threshold=0.3)
  config.data.cache_dir = str(tmp_path / "cache")
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  record = files.read_json(
      os.path.join(workdir, "self_train", pseudo_labels.FILE)
  )
  assert record["pool_images"] == 6 and record["threshold"] == 0.3
  assert record["teacher"] == os.path.join(workdir, "classify")
  chosen = record["images"]
  assert len(chosen) == 6  # three classes: the top probability is above 0.3
  # The teacher's own answers: the same images, classes and probabilities.
  run = workdirs.load_run(workdir)
  model = workdirs.network(run)
  from roadflax.data import image_folder

  pool = image_folder.checked_split(
      str(tmp_path / "pool"),
      sorted(str(p) for p in (tmp_path / "pool").iterdir()),
      [0] * 6,
      num_classes=1,
  )
  probabilities = pseudo_labels.teacher_probabilities(
      config, os.path.join(workdir, "classify"), model, run, pool
  )
  expected = [
      (path, int(np.argmax(p)))
      for path, p in zip(pool.paths, probabilities)
      if p.max() >= 0.3
  ]
  assert [(c["path"], c["label"]) for c in chosen] == expected
  summary = files.read_json(
      os.path.join(workdir, "self_train", workdirs.SUMMARY_FILE)
  )
  trained_on = summary["trained_on"]
  assert trained_on["labelled"] == 3 * 8
  assert sum(trained_on["pseudo_labelled"].values()) == len(chosen)
  assert trained_on["images"] == 3 * 8 + len(chosen)


def test_settings_and_teachers_are_checked(data_root, tmp_path):
  _pool(tmp_path / "pool")
  with pytest.raises(UserError, match=r"must be in \(0, 1\]"):
    configuration.check_config(_config(data_root, tmp_path / "pool", 1.5))
  config = _config(data_root, tmp_path / "pool", 0.9)
  config.stages.self_train.init_from = ""
  with pytest.raises(UserError, match="init_from"):
    configuration.check_config(config)
  # A reconstruction stage is no teacher.
  config = _config(data_root, tmp_path / "pool", 0.5, teacher="pretrain")
  config.data.cache_dir = str(tmp_path / "cache")
  config.stage_order = ("pretrain", "self_train")
  with pytest.raises(UserError, match="trained no classifier"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def test_only_answers_at_or_above_the_threshold_are_kept():
  probabilities = np.array(
      [[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]
  )
  chosen = pseudo_labels.confident(["a", "b", "c"], probabilities, 0.8)
  assert [(c["path"], c["label"]) for c in chosen] == [("a", 0), ("c", 2)]
  assert chosen[1]["probability"] == pytest.approx(0.8)
