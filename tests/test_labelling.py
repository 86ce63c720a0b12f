"""Labelling: the queue of a drive's frames ordered by the model's doubt,
labels written once and atomically, imports, and what goes wrong on disk."""

import csv
import errno
import io
import multiprocessing
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import roadflax
from roadflax.errors import UserError
from roadflax.files import read_json
from roadflax.labelling import hashing, imports, queue, store
from roadflax.labelling.store import LabelStore
from tests import drive_video, helpers
from tests.drive_video import ASPHALT, CLASS_NAMES, GRAVEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
  return helpers.built_once(tmp_path_factory, "drive", drive_video.build)


@pytest.fixture(scope="module")
def knowing(drive):
  return drive_video.knowing_model(drive)


@pytest.fixture
def built(drive, knowing, tmp_path):
  """A queue of the drive (a frame every 0.1 s) in a new labelled folder."""
  root = str(tmp_path / "labelled")
  videos = os.path.join(drive, "videos")
  return root, queue.build_queue(knowing, [videos], root, every=0.1)


def pictures(drive):
  return np.load(os.path.join(drive, "references.npz"))["pictures"]


def test_a_picture_and_its_jpeg_hash_alike_and_other_pictures_do_not(drive):
  first, second = pictures(drive)[:2]
  buffer = io.BytesIO()
  Image.fromarray(first).save(buffer, "JPEG", quality=70)
  again = np.asarray(Image.open(buffer))
  assert (
      hashing.distance(hashing.dhash(first), hashing.dhash(again))
      <= hashing.NEAR_BITS
  )
  assert (
      hashing.distance(hashing.dhash(first), hashing.dhash(second))
      > hashing.NEAR_BITS
  )
  assert hashing.distance(0b1, 0b110) == 3


def test_the_queue_keeps_one_frame_per_picture_least_confident_first(built):
  root, built_queue = built
  rows = built_queue.frames
  # 22 s at 0.1 s: 220 frames of 44 pictures, each filmed for 0.5 s.
  assert built_queue.sampled == 220
  assert 40 <= len(rows) <= 48
  assert built_queue.near_duplicates == 220 - len(rows)
  margins = [r["margin"] for r in rows]
  assert margins == sorted(margins)
  assert len({r["id"] for r in rows}) == len(rows)
  assert {r["group"] for r in rows} == {"drive"}
  for row in rows:
    assert os.path.isfile(os.path.join(root, row["frame"]))
    assert row["guess"] in CLASS_NAMES
  on_disk = queue.read_queue(root)
  assert [r["id"] for r in on_disk] == [r["id"] for r in rows]
  assert all(r["label"] == "" for r in on_disk)
  # The frames hide from training: only a dot folder and CSV files.
  assert sorted(os.listdir(root)) == [queue.FRAMES_DIR, queue.QUEUE_FILE]


def test_the_knowing_model_guesses_the_drive(built):
  _, built_queue = built
  right = [
      r["guess"] == drive_video.true_class(r["time_s"])
      for r in built_queue.frames
  ]
  assert np.mean(right) > 0.9


def test_labelled_frames_leave_the_queue(built, drive, knowing):
  root, built_queue = built
  labels = LabelStore(root, CLASS_NAMES)
  for row in built_queue.frames[:5]:
    labels.add(row, row["guess"], os.path.join(root, row["frame"]))
  again = queue.build_queue(
      knowing, [os.path.join(drive, "videos")], root, every=0.1
  )
  assert again.labelled_before == 5
  # Nor do the frames that look like them.
  assert len(again.frames) == len(built_queue.frames) - 5
  assert not {r["id"] for r in built_queue.frames[:5]} & {
      r["id"] for r in again.frames
  }


def test_a_label_is_an_image_in_its_class_and_group_and_a_row(built):
  root, built_queue = built
  labels = LabelStore(root, CLASS_NAMES)
  first, second = built_queue.frames[:2]
  row, added = labels.add(first, GRAVEL, os.path.join(root, first["frame"]))
  assert added
  image = os.path.join(root, GRAVEL, "drive", f"{first['id']}.jpg")
  assert row["file"] == os.path.relpath(image, root)
  with (
      open(image, "rb") as f,
      open(os.path.join(root, first["frame"]), "rb") as g,
  ):
    assert f.read() == g.read()
  # A second label of the same frame is answered with the first.
  row_again, added = labels.add(first, ASPHALT, image)
  assert not added and row_again["label"] == GRAVEL
  assert not os.path.exists(os.path.join(root, ASPHALT))
  # skip: a row, no image.
  row, added = labels.add(
      second, store.SKIP, os.path.join(root, second["frame"])
  )
  assert added and row["file"] == ""
  rows = list(csv.DictReader(open(os.path.join(root, store.LABELS_FILE))))
  assert [r["label"] for r in rows] == [GRAVEL, "skip"]
  assert rows[0]["source"].endswith("drive.mp4")
  assert float(rows[0]["time_s"]) == first["time_s"]
  with pytest.raises(UserError, match="not one of the model's classes"):
    labels.add(built_queue.frames[2], "mud", image)


def _label_all(root, frames, label, barrier):
  """One labeller: every frame, one label, as fast as it can."""
  labels = LabelStore(root, CLASS_NAMES)
  barrier.wait()
  for row in frames:
    labels.add(row, label, os.path.join(root, row["frame"]))


def test_two_labellers_at_once_write_every_frame_exactly_once(built):
  root, built_queue = built
  frames = built_queue.frames[:20]
  context = multiprocessing.get_context("fork")
  barrier = context.Barrier(2)
  workers = [
      context.Process(target=_label_all, args=(root, order, label, barrier))
      for order, label in ((frames, ASPHALT), (frames[::-1], GRAVEL))
  ]
  for worker in workers:
    worker.start()
  for worker in workers:
    worker.join(60)
    assert worker.exitcode == 0
  rows = list(csv.DictReader(open(os.path.join(root, store.LABELS_FILE))))
  assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in frames)
  images = [
      name
      for label in (ASPHALT, GRAVEL)
      if os.path.isdir(os.path.join(root, label, "drive"))
      for name in os.listdir(os.path.join(root, label, "drive"))
  ]
  assert sorted(images) == sorted(f"{r['id']}.jpg" for r in frames)
  for row in rows:
    assert os.path.isfile(os.path.join(root, row["file"]))


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EROFS, "read-only file system"),
    ],
)
@pytest.mark.parametrize("failing", ["image", "row"])
def test_a_full_or_read_only_disk_is_one_line_and_loses_nothing(
    built, monkeypatch, code, words, failing
):
  root, built_queue = built
  labels = LabelStore(root, CLASS_NAMES)
  first, second = built_queue.frames[:2]
  labels.add(first, ASPHALT, os.path.join(root, first["frame"]))
  before = open(os.path.join(root, store.LABELS_FILE)).read()

  def no_room(*args, **kwargs):
    raise OSError(code, os.strerror(code))

  if failing == "image":
    monkeypatch.setattr(store, "_copy", no_room)
  else:
    monkeypatch.setattr(LabelStore, "_append", no_room)
  with pytest.raises(UserError) as raised:
    labels.add(second, GRAVEL, os.path.join(root, second["frame"]))
  assert words in str(raised.value) and "\n" not in str(raised.value)
  assert open(os.path.join(root, store.LABELS_FILE)).read() == before
  assert not os.path.exists(os.path.join(root, GRAVEL))
  assert not [n for n in os.listdir(os.path.join(root, ASPHALT, "drive"))
              if n.startswith(".tmp")]  # fmt: skip
  monkeypatch.undo()
  _, added = labels.add(second, GRAVEL, os.path.join(root, second["frame"]))
  assert added  # once there is room, the same label goes through


def test_unreadable_videos_and_images_are_one_line_each(
    drive, knowing, tmp_path
):
  inputs = tmp_path / "inputs"
  inputs.mkdir()
  shutil.copy(os.path.join(drive, "videos", "drive.mp4"), inputs)
  (inputs / "broken.mp4").write_bytes(b"not a video")
  (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
  noise = np.random.default_rng(0).integers(0, 256, (60, 90, 3), np.uint8)
  Image.fromarray(noise).save(inputs / "photo.png")
  built_queue = queue.build_queue(
      knowing, [str(inputs)], str(tmp_path / "out"), every=1.0
  )
  assert len(built_queue.warnings) == 2
  assert all("\n" not in w for w in built_queue.warnings)
  assert any("broken.mp4" in w for w in built_queue.warnings)
  assert any("broken.jpg" in w for w in built_queue.warnings)
  assert {r["group"] for r in built_queue.frames} == {"drive", "inputs"}
  only_broken = tmp_path / "only_broken"
  only_broken.mkdir()
  (only_broken / "broken.mp4").write_bytes(b"not a video")
  with pytest.raises(UserError, match="could be read"):
    queue.build_queue(knowing, [str(only_broken)], str(tmp_path / "o2"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="no videos and no images"):
    queue.build_queue(knowing, [str(tmp_path / "empty")], str(tmp_path / "o3"))


def test_a_filled_in_queue_imports_once(built):
  root, built_queue = built
  path = os.path.join(root, queue.QUEUE_FILE)
  rows = queue.read_queue(root)
  for row in rows[:6]:
    row["label"] = drive_video.true_class(float(row["time_s"]))
  rows[6]["label"] = "unknown"
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, queue.FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  labels = LabelStore(root, CLASS_NAMES)
  done = imports.import_labels(labels, path)
  assert (done.added, done.labelled_before) == (7, 0)
  assert done.unlabelled == len(rows) - 7
  again = imports.import_labels(labels, path)
  assert (again.added, again.labelled_before) == (0, 7)
  stored = labels.labels()
  assert len(stored) == 7
  for row in rows[:6]:
    assert stored[row["id"]]["label"] == row["label"]
    assert os.path.isfile(os.path.join(root, stored[row["id"]]["file"]))


def test_an_import_with_a_wrong_class_writes_nothing(built, tmp_path):
  root, built_queue = built
  elsewhere = tmp_path / "elsewhere.csv"
  frame = os.path.join(root, built_queue.frames[0]["frame"])
  elsewhere.write_text(
      f"file,label\n{frame},{ASPHALT}\n{frame},Gravel\n", encoding="utf-8"
  )
  labels = LabelStore(root, CLASS_NAMES)
  with pytest.raises(UserError, match=r"\['Gravel'\]"):
    imports.import_labels(labels, str(elsewhere))
  assert labels.labels() == {}
  (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff cut short")
  elsewhere.write_text(
      f"file,label\n{frame},{ASPHALT}\nphoto.jpg,{GRAVEL}\n", encoding="utf-8"
  )
  done = imports.import_labels(labels, str(elsewhere))
  assert done.added == 1 and len(done.warnings) == 1
  assert "photo.jpg" in done.warnings[0]


@pytest.mark.slow
def test_label_mode_queues_a_drive_and_imports_it(
    trained_workdir, drive, tmp_path
):
  out = tmp_path / "labelled"
  command = [sys.executable, "main.py", "--mode=label",
             f"--workdir={trained_workdir}", f"--output={out}"]  # fmt: skip
  result = subprocess.run(
      [*command, f"--input={drive}/videos"],
      cwd=ROOT, capture_output=True, text=True, check=False,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  assert "queued" in result.stdout and "least confident first" in result.stdout
  rows = queue.read_queue(str(out))
  assert len(rows) >= 10  # a frame a second, near-duplicates dropped
  rows[0]["label"] = rows[0]["guess"]
  with open(out / queue.QUEUE_FILE, "w", newline="") as f:
    writer = csv.DictWriter(f, queue.FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  result = subprocess.run(
      [*command, f"--labels={out}/{queue.QUEUE_FILE}"],
      cwd=ROOT, capture_output=True, text=True, check=False,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  assert "imported 1 labels" in result.stdout
  both = subprocess.run(
      [*command, f"--input={drive}/videos", "--labels=x.csv"],
      cwd=ROOT, capture_output=True, text=True, check=False,
  )  # fmt: skip
  assert "not both" in helpers.error_line(both)


@pytest.mark.slow
def test_a_fine_tune_reports_the_accuracy_before_and_after(
    trained_workdir, data_root, tmp_path, monkeypatch
):
  from roadflax.configs import fine_tune
  from roadflax.training import train

  labelled = tmp_path / "labelled"  # as the Label page writes: CLASS/GROUP/
  for split in ("train", "val", "test"):
    for name in helpers.CLASSES:
      for k, path in enumerate(
          sorted(os.listdir(f"{data_root}/{split}/{name}"))
      ):
        group = labelled / name / f"drive{k % 4}"
        group.mkdir(parents=True, exist_ok=True)
        shutil.copy(
            f"{data_root}/{split}/{name}/{path}", group / f"{split}-{k}.jpg"
        )
  config = fine_tune.get_config()
  config.data.root = str(labelled)
  config.data.image_size = 67
  config.model.head_units = helpers.HEAD_UNITS
  config.eval_batch_size = 8
  config.stages.classify.update(
      steps=4, batch_size=4, init_from=trained_workdir
  )
  workdir = tmp_path / "tuned"
  train.train_and_evaluate(config, str(workdir))

  report = read_json(workdir / "classify" / "report.json")
  start = report["started_from"]
  assert start["stage_dir"] == os.path.join(
      os.path.abspath(trained_workdir), "classify"
  )
  # Before: the run fine-tuned from, on the same held-out groups.
  split = read_json(workdir / "split.json")
  test_images = [
      str(labelled / name / group / image)
      for name, entry in split["splits"]["test"]["classes"].items()
      for group in entry["images_per_group"]
      for image in sorted(os.listdir(labelled / name / group))
  ]
  labels = [
      os.path.basename(os.path.dirname(os.path.dirname(p))) for p in test_images
  ]
  before = roadflax.load(trained_workdir).predict(test_images)
  assert start["accuracy"] == pytest.approx(
      np.mean([c == label for c, label in zip(before.classes, labels)])
  )
  assert start["per_group"].keys() == report["per_group"].keys()
  with open(workdir / "classify" / "report.md", encoding="utf-8") as f:
    assert f"Started from {start['stage_dir']}" in f.read()
  # The app's model card shows the change.
  from streamlit.testing.v1 import AppTest

  app_script = os.path.join(ROOT, "roadflax", "serve", "app.py")
  monkeypatch.setattr(sys, "argv", [app_script, "--workdir", str(workdir)])
  at = AppTest.from_file(app_script, default_timeout=120)
  at.run()
  assert not at.exception, at.exception
  [accuracy] = [m for m in at.metric if m.label == "Test accuracy"]
  change = report["accuracy"] - start["accuracy"]
  assert (
      accuracy.delta == f"{change:+.1%} over the model it was fine-tuned from"
  )


def test_a_queue_on_a_read_only_disk_is_one_line(
    drive, knowing, tmp_path, monkeypatch
):
  def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))

  monkeypatch.setattr(queue.files, "atomic_write", read_only)
  with pytest.raises(UserError) as raised:
    queue.build_queue(
        knowing, [os.path.join(drive, "videos")], str(tmp_path / "out")
    )
  assert "read-only file system" in str(raised.value)
  assert "\n" not in str(raised.value)
