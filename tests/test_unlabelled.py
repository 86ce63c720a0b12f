"""A stage that trains on data of its own, labels ignored: folders of images
at any depth and of videos (`stages.NAME.data`), what the workdir records of
it, and the one-line errors of bad input."""

import os

import jax
import numpy as np
from PIL import Image
import pytest

from roadflax import files
from roadflax.configs import default
from roadflax.datasets import drives, unlabelled
from roadflax.errors import UserError
from roadflax.models import roadnet
from roadflax.runs import workdirs
from roadflax.training import configuration, train
from tests import helpers


def _own_data(root: str, cache_dir: str, **fields):
  config = default.get_config()
  config.data.cache_dir = cache_dir
  config.stages.pretrain.data.update(source="folder", root=root, **fields)
  return unlabelled.stage_data(config.data, config.stages.pretrain.data)


def _images(folder: str, count: int, start: int = 0) -> None:
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(start)
  for i in range(count):
    pixels = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, f"{start + i:03d}.png"))


def _video(path: str, seconds: int, fps: int = 10) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(1)
  pictures = rng.integers(0, 255, (seconds * fps, 64, 96, 3), dtype=np.uint8)
  drives.write_video(path, pictures, fps=fps)


def test_no_stage_data_is_the_runs_train_split():
  config = default.get_config()
  assert unlabelled.stage_data(config.data, config.stages.pretrain.data) is None


def test_unset_fields_are_the_runs(tmp_path):
  data = _own_data(str(tmp_path), "/cache")
  assert (data.source, data.root, data.cache_dir) == (
      "folder",
      str(tmp_path),
      "/cache",
  )
  assert data.image_size == default.get_config().data.image_size


def test_a_folder_is_every_image_at_any_depth_and_a_frame_a_second_of_videos(
    tmp_path,
):
  root = tmp_path / "pool"
  _images(str(root / "gravel"), 2)  # class folders: names are ignored
  _images(str(root / "drive1" / "front" / "day2"), 3, start=10)
  _images(str(root), 1, start=20)
  _video(str(root / "videos" / "drive.mp4"), seconds=3)
  data = _own_data(str(root), str(tmp_path / "cache"))
  split = unlabelled.load_unlabelled(data)
  assert len(split) == 2 + 3 + 1 + 3  # a frame at 0, 1 and 2 s
  assert set(split.labels.tolist()) == {0}
  frames = [p for p in split.paths if p.startswith(str(tmp_path / "cache"))]
  assert len(frames) == 3
  with Image.open(frames[0]) as frame:
    assert frame.size == (96, 64)
  # The frames are decoded once: a second read takes them from the cache.
  mtimes = [os.path.getmtime(p) for p in frames]
  again = unlabelled.load_unlabelled(data)
  assert again.paths == split.paths
  assert [os.path.getmtime(p) for p in frames] == mtimes


def test_video_sampling_follows_its_setting(tmp_path):
  _video(str(tmp_path / "pool" / "a.mp4"), seconds=3)
  data = _own_data(
      str(tmp_path / "pool"), str(tmp_path / "cache"), video_every_seconds=0.5
  )
  assert len(unlabelled.load_unlabelled(data)) == 6


def test_an_unreadable_video_is_skipped_and_only_unreadable_ones_are_an_error(
    tmp_path, caplog
):
  root = tmp_path / "pool"
  os.makedirs(root)
  (root / "broken.mp4").write_bytes(b"not a video")
  data = _own_data(str(root), str(tmp_path / "cache"))
  with pytest.raises(UserError, match="no readable videos"):
    unlabelled.load_unlabelled(data)
  _images(str(root), 2)
  assert len(unlabelled.load_unlabelled(data)) == 2
  assert "1 of 1 videos under" in caplog.text


def test_a_missing_or_empty_folder_is_one_line(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    unlabelled.load_unlabelled(_own_data(str(tmp_path / "nowhere"), ""))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(UserError, match="holds no images"):
    unlabelled.load_unlabelled(_own_data(str(tmp_path / "empty"), ""))


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"stages.classify.data.source": "folder"},
            "objective must be reconstruction or contrastive",
        ),
        ({"stages.pretrain.data.source": "folder"}, "needs --config"),
        ({"stages.pretrain.data.source": "videos"}, "is not one of"),
        ({"stages.pretrain.data.video_every_seconds": 0.0}, "above 0"),
    ],
)
def test_stage_data_settings_are_checked(data_root, fields, message):
  config = helpers.tiny_config(data_root)
  for key, value in fields.items():
    stage, _, field = key.rpartition(".")
    config[stage.split(".")[0]][stage.split(".")[1]].data[field] = value
  with pytest.raises(UserError, match=message):
    configuration.check_config(config)


def test_pretraining_reads_its_own_folder_and_the_workdir_records_it(
    data_root, tmp_path
):
  pool = tmp_path / "pool"
  _images(str(pool / "a"), 5)
  _video(str(pool / "b" / "clip.mp4"), seconds=2)
  config = helpers.tiny_config(data_root)
  config.data.cache_dir = str(tmp_path / "cache")
  config.stages.pretrain.data.update(source="folder", root=str(pool))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  pretrain = files.read_json(
      os.path.join(workdir, "pretrain", workdirs.SUMMARY_FILE)
  )
  classify = files.read_json(
      os.path.join(workdir, "classify", workdirs.SUMMARY_FILE)
  )
  assert pretrain["trained_on"] == {
      "source": "folder",
      "images": 5 + 2,
      "labels": "ignored",
      "root": str(pool),
      "video_every_seconds": 1.0,
  }
  assert classify["trained_on"] == {"split": "train", "images": 3 * 8}
  assert 0 <= classify["test_accuracy"] <= 1


def test_contrastive_pretraining_on_a_folder_hands_on_encoder_and_head(
    data_root, tmp_path
):
  pool = tmp_path / "pool"
  _images(str(pool / "a"), 6)
  config = helpers.tiny_config(data_root)
  config.data.cache_dir = str(tmp_path / "cache")
  config.stages.pretrain.update(objective="contrastive")
  config.stages.pretrain.data.update(source="folder", root=str(pool))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  pretrain = files.read_json(
      os.path.join(workdir, "pretrain", workdirs.SUMMARY_FILE)
  )
  assert pretrain["trained_on"]["images"] == 6
  _, pretrained = helpers.final_params(os.path.join(workdir, "pretrain"))
  classified, model, _ = workdirs.load_best_params(
      os.path.join(workdir, "classify"), workdirs.load_run(workdir)
  )
  fresh = roadnet.init_params(model, jax.random.key(123), 67)

  def distance(a, b):
    return float(
        np.abs(a["head"]["fc1"]["kernel"] - b["head"]["fc1"]["kernel"]).mean()
    )

  # The classifier started from the pre-trained projection (fc1), not from
  # a fresh draw, and trained on from it.
  assert 0 < distance(classified, pretrained) < distance(fresh, pretrained) / 10
