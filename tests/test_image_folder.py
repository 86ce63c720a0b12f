"""Scanning an image-folder tree: layout errors, the cheap file check, skips."""

import io
import logging
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from roadflax.data import contract, image_folder
from roadflax.errors import UserError

CLASSES = ("asphalt", "gravel", "snow")


def _image_bytes(fmt: str, mode: str = "RGB", size=(60, 40)) -> bytes:
  buffer = io.BytesIO()
  Image.new(mode, size, color=128 if mode == "L" else (90, 120, 30)).save(
      buffer, format=fmt
  )
  return buffer.getvalue()


def _write(path: str, data: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)
  return path


def _tree(
    root, per_class: int = 2, splits=contract.SPLIT_NAMES, classes=CLASSES
) -> str:
  """ROOT/SPLIT/CLASS/NNN.jpg, all valid JPEGs."""
  jpeg = _image_bytes("JPEG")
  for split in splits:
    for name in classes:
      for i in range(per_class):
        _write(os.path.join(root, split, name, f"{i:03d}.jpg"), jpeg)
  return str(root)


def test_scan_lists_classes_paths_and_labels(tmp_path):
  root = _tree(tmp_path, per_class=3)
  gravel = os.path.join(root, "train", "gravel")
  _write(os.path.join(gravel, "UPPER.JPG"), _image_bytes("JPEG"))
  _write(os.path.join(gravel, "x.Jpeg"), _image_bytes("JPEG"))
  _write(os.path.join(gravel, "y.png"), _image_bytes("PNG"))
  _write(os.path.join(gravel, "notes.txt"), b"not an image")
  os.makedirs(os.path.join(root, "train", ".ipynb_checkpoints"))

  folder = image_folder.scan_image_folder(root)

  assert folder.root == root
  assert folder.class_names == CLASSES
  assert set(folder.splits) == set(contract.SPLIT_NAMES)
  train = folder.splits["train"]
  assert len(train) == 12 and train.skipped == ()
  assert train.labels.dtype == np.int32
  assert list(train.class_counts(3)) == [3, 6, 3]
  for path, label in zip(train.paths, train.labels):
    assert os.path.basename(os.path.dirname(path)) == CLASSES[label]
  assert [os.path.basename(p) for p in train.paths[3:9]] == [
      "000.jpg",
      "001.jpg",
      "002.jpg",
      "UPPER.JPG",
      "x.Jpeg",
      "y.png",
  ]
  again = image_folder.scan_image_folder(root)
  assert again.splits["train"].paths == train.paths


def test_scan_reads_only_the_splits_asked_for(tmp_path):
  root = _tree(tmp_path, splits=("train", "val"))
  folder = image_folder.scan_image_folder(root, splits=("train", "val"))
  assert set(folder.splits) == {"train", "val"}


def test_missing_root(tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(UserError, match="nowhere does not exist"):
    image_folder.scan_image_folder(missing)


def test_root_is_a_file(tmp_path):
  path = _write(str(tmp_path / "file.txt"), b"x")
  with pytest.raises(UserError, match="file.txt is not a folder"):
    image_folder.scan_image_folder(path)


def test_missing_split_is_named_with_what_is_there(tmp_path):
  root = _tree(tmp_path, splits=("train", "validation", "test"))
  with pytest.raises(UserError) as error:
    image_folder.scan_image_folder(root)
  message = str(error.value)
  assert os.path.join(root, "val") in message
  assert "validation" in message
  assert "\n" not in message


def test_split_without_class_folders(tmp_path):
  root = _tree(tmp_path, splits=("train", "test"))
  _write(os.path.join(root, "val", "stray.jpg"), _image_bytes("JPEG"))
  with pytest.raises(UserError, match=r"val has no class folders"):
    image_folder.scan_image_folder(root)


def test_class_folders_differing_between_splits(tmp_path):
  root = _tree(tmp_path, splits=("train",))
  _tree(tmp_path, splits=("val",), classes=("asphalt", "gravel"))
  _tree(tmp_path, splits=("test",), classes=CLASSES + ("mud",))
  with pytest.raises(UserError) as error:
    image_folder.scan_image_folder(root)
  message = str(error.value)
  assert "train/ lacks ['mud']" in message
  assert "val/ lacks ['mud', 'snow']" in message
  assert "test/ lacks" not in message


def test_class_folder_without_images(tmp_path):
  root = _tree(tmp_path)
  empty = os.path.join(root, "val", "snow")
  for name in os.listdir(empty):
    os.remove(os.path.join(empty, name))
  _write(os.path.join(empty, "readme.txt"), b"nothing here")
  with pytest.raises(UserError, match=f"{empty} has no image files"):
    image_folder.scan_image_folder(root)


def test_split_without_readable_image(tmp_path):
  root = _tree(tmp_path)
  test_dir = os.path.join(root, "test")
  for name in CLASSES:
    for path in os.listdir(os.path.join(test_dir, name)):
      _write(os.path.join(test_dir, name, path), b"")
  with pytest.raises(UserError, match=f"{test_dir} has no readable image"):
    image_folder.scan_image_folder(root)


def _truncated_jpeg() -> bytes:
  return _image_bytes("JPEG")[:-40]


def _truncated_png() -> bytes:
  return _image_bytes("PNG")[:-20]


def _with_thumbnail(jpeg: bytes) -> bytes:
  """`jpeg` with an APP1 segment holding a small JPEG of its own, as EXIF
  thumbnails are: their end marker must not pass for the image's."""
  thumbnail = _image_bytes("JPEG", size=(8, 8))
  segment = b"Exif\x00\x00" + thumbnail
  return (
      jpeg[:2]
      + b"\xff\xe1"
      + (len(segment) + 2).to_bytes(2, "big")
      + segment
      + jpeg[2:]
  )


def _noise(size: int) -> bytes:
  """Bytes with no JPEG end marker in them."""
  data = (
      np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
  )
  return data.replace(b"\xff", b"\xfe")


def _noisy_jpeg() -> bytes:
  """A JPEG long enough to cut mid-scan."""
  pixels = np.random.default_rng(1).integers(
      0, 256, (64, 96, 3), dtype=np.uint8
  )
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="JPEG")
  return buffer.getvalue()


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"just some text, saved as .jpg\n", "not a JPEG or PNG"),
        (_truncated_jpeg(), "truncated JPEG"),
        (_noisy_jpeg()[:3000], "truncated JPEG"),
        (_with_thumbnail(_noisy_jpeg())[:3000], "truncated JPEG"),
        (_truncated_png(), "truncated PNG"),
        (_image_bytes("PNG")[:60], "truncated PNG"),
    ],
)
def test_check_rejects(tmp_path, data, reason):
  path = _write(str(tmp_path / "image.jpg"), data)
  assert reason in image_folder.check_image_file(path)
  assert reason in image_folder.check_image_bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        _image_bytes("JPEG"),
        _image_bytes("JPEG") + b"\x00" * 20,  # Padding after the end marker.
        _image_bytes("PNG"),  # Named .jpg below: the decoder goes by content.
        _image_bytes("PNG", mode="L"),
        _image_bytes("PNG", mode="RGBA"),
        _with_thumbnail(_noisy_jpeg()),
        # Phones append data after the end marker: a trailer of their own ...
        _noisy_jpeg() + b"SEFH" + _noise(2000),
        # ... or a motion photo's video.
        _with_thumbnail(_noisy_jpeg())
        + b"\x00\x00\x00\x18ftypmp42"
        + _noise(50_000),
        _image_bytes("PNG") + _noise(100),
    ],
)
def test_check_accepts(tmp_path, data):
  path = _write(str(tmp_path / "image.jpg"), data)
  assert image_folder.check_image_file(path) is None
  assert image_folder.check_image_bytes(data) is None
  assert tf.io.decode_image(data, channels=3).shape[2] == 3


def test_check_of_missing_file(tmp_path):
  reason = image_folder.check_image_file(str(tmp_path / "no.jpg"))
  assert "cannot read" in reason


def test_bad_files_are_skipped_counted_and_logged(tmp_path, caplog):
  root = _tree(tmp_path, per_class=2)
  bad = {
      _write(os.path.join(root, "train", "asphalt", "empty.jpg"), b""): "empty",
      _write(
          os.path.join(root, "train", "gravel", "text.jpg"), b"hello"
      ): "not a JPEG or PNG",
      _write(
          os.path.join(root, "train", "snow", "cut.jpeg"), _truncated_jpeg()
      ): "truncated JPEG",
  }
  png_as_jpg = _write(
      os.path.join(root, "train", "snow", "png.jpg"), _image_bytes("PNG")
  )

  with caplog.at_level(logging.WARNING):
    folder = image_folder.scan_image_folder(root)

  train = folder.splits["train"]
  assert set(train.skipped) == set(bad)
  assert len(train) == 7 and png_as_jpg in train.paths
  assert not set(train.paths) & set(bad)
  assert list(train.class_counts(3)) == [2, 2, 3]
  assert folder.splits["val"].skipped == ()
  warnings = [
      r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
  ]
  assert len(warnings) == 1
  assert "skipping 3 of 10" in warnings[0]
  for path, reason in bad.items():
    assert f"{path} ({reason}" in warnings[0]


def test_log_names_the_first_ten_skipped_files_only(tmp_path, caplog):
  root = _tree(tmp_path, per_class=1)
  for i in range(13):
    _write(os.path.join(root, "val", "snow", f"bad{i:02d}.jpg"), b"junk")
  with caplog.at_level(logging.WARNING):
    folder = image_folder.scan_image_folder(root)
  assert len(folder.splits["val"].skipped) == 13
  (message,) = [
      r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
  ]
  assert "bad09.jpg" in message and "bad10.jpg" not in message
  assert "and 3 more" in message
