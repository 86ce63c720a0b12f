"""The tf.data pipeline: preprocessing, order, resumption, sharding, caching."""

import io
import logging
import os

import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageEnhance
import pytest
import tensorflow as tf

from configs import default
from roadflax.data import image_folder
from roadflax.data import input_pipeline
from roadflax.errors import UserError
from tests import helpers

SIZE = 32
NO_AUGMENT = dict(flip=False, crop_scale=1.0, brightness=0.0)
# JPEG start and end markers around garbage: passes the cheap check, fails to
# decode.
UNDECODABLE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2 + b"\xff\xd9"


def _config(cache: str = "none", augment: bool = True, **overrides):
  data = default.get_config().data
  data.image_size = SIZE
  data.cache = cache
  if not augment:
    data.augment.update(NO_AUGMENT)
  data.update(overrides)
  return data


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _write(path: str, data: bytes) -> str:
  with open(path, "wb") as f:
    f.write(data)
  return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = helpers.write_image_tree(
      str(tmp_path_factory.mktemp("data")),
      per_split={"train": 8, "val": 3, "test": 1}, size=(40, 60))
  return image_folder.scan_image_folder(root)


@pytest.fixture(scope="module")
def references(folder):
  """Each file as the model sees it, without augmentation, per split."""
  config = _config()
  return {name: np.stack([input_pipeline.load_image(p, config)
                          for p in split.paths])
          for name, split in folder.splits.items()}


def _identify(images: np.ndarray, references: np.ndarray) -> np.ndarray:
  """Which reference each un-augmented image is (one must match exactly)."""
  distances = np.abs(images[:, None] - references[None]).max(axis=(2, 3, 4))
  assert np.all(distances.min(axis=1) < 1e-5)
  return distances.argmin(axis=1)


def _train(split, config, *, process_index=0, process_count=1, batch_size=4,
           seed=0, epoch=0, skip_batches=0):
  pipeline = input_pipeline.SplitPipeline(
      split, config, process_index=process_index, process_count=process_count)
  return list(pipeline.train_batches(batch_size=batch_size, seed=seed,
                                     epoch=epoch, skip_batches=skip_batches))


def _eval(split, config, *, process_index=0, process_count=1, batch_size=4):
  pipeline = input_pipeline.SplitPipeline(
      split, config, process_index=process_index, process_count=process_count)
  return list(pipeline.eval_batches(batch_size=batch_size))


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# ------------------------------------------------------------ preprocessing


@pytest.mark.parametrize("array", [
    np.full((20, 30), 77, np.uint8),  # Grayscale.
    np.full((20, 30, 4), 77, np.uint8),  # RGBA.
    np.full((20, 30), 77 * 256 + 200, np.uint16),  # 16-bit grayscale.
], ids=["gray", "rgba", "16bit"])
def test_decode_image_gives_rgb_uint8(array):
  image = input_pipeline.decode_image(tf.constant(_png(array))).numpy()
  assert image.dtype == np.uint8 and image.shape == (20, 30, 3)
  assert np.all(image == 77)


def test_contrast_of_one_is_identity():
  image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), np.uint8)
  out = input_pipeline.resize_and_contrast(image, SIZE, 1.0).numpy()
  assert out.dtype == np.uint8
  assert np.abs(out.astype(int) - image).max() <= 1


def test_contrast_matches_pil():
  rng = np.random.default_rng(1)
  image = rng.integers(60, 200, (SIZE, SIZE, 3), np.uint8)
  out = input_pipeline.resize_and_contrast(image, SIZE, 1.5).numpy()
  pil = np.asarray(ImageEnhance.Contrast(Image.fromarray(image)).enhance(1.5))
  assert out.std() > 1.3 * image.std()
  assert np.abs(out.astype(int) - pil).max() <= 2


def test_resize_ignores_aspect():
  image = np.zeros((40, 60, 3), np.uint8)
  assert input_pipeline.resize_and_contrast(image, 16, 1.5).shape == (16, 16, 3)


def test_normalize():
  out = input_pipeline.normalize(np.array([[[255, 0, 51]]], np.uint8),
                                 (0.5, 0.5, 0.5), (0.5, 0.25, 0.2)).numpy()
  np.testing.assert_allclose(out, [[[1.0, -2.0, -1.5]]], rtol=1e-6)


def test_load_image_and_preprocess_bytes_agree(folder):
  path = folder.splits["val"].paths[0]
  with open(path, "rb") as f:
    from_bytes = input_pipeline.preprocess_bytes(f.read(), _config())
  from_file = input_pipeline.load_image(path, _config())
  assert from_file.dtype == np.float32 and from_file.shape == (SIZE, SIZE, 3)
  np.testing.assert_array_equal(from_file, from_bytes)


def test_load_image_needs_only_the_preprocessing_fields(folder):
  data = _config()
  minimal = {key: data[key]
             for key in ("image_size", "contrast", "mean", "std")}
  out = input_pipeline.load_image(folder.splits["val"].paths[0],
                                  ml_collections.ConfigDict(minimal))
  assert out.shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize("data", [b"hello, I am text", b"", UNDECODABLE])
def test_load_image_rejects_non_images(tmp_path, data):
  path = _write(str(tmp_path / "photo.jpg"), data)
  with pytest.raises(UserError, match="photo.jpg"):
    input_pipeline.load_image(path, _config())
  with pytest.raises(UserError, match="the image"):
    input_pipeline.preprocess_bytes(data, _config())


def test_load_image_of_missing_file(tmp_path):
  with pytest.raises(UserError, match="nothing.png"):
    input_pipeline.load_image(str(tmp_path / "nothing.png"), _config())


@pytest.mark.parametrize("overrides, field", [
    (dict(image_size=0), "data.image_size"),
    (dict(contrast=-1.0), "data.contrast"),
    (dict(std=(0.2, 0.2)), "data.std"),
])
def test_bad_preprocessing_config(folder, overrides, field):
  with pytest.raises(UserError, match=field):
    input_pipeline.SplitPipeline(folder.splits["val"], _config(**overrides),
                                 process_index=0, process_count=1)


@pytest.mark.parametrize("overrides, field", [
    (dict(crop_scale=0.0), "data.augment.crop_scale"),
    (dict(brightness=1.5), "data.augment.brightness"),
])
def test_bad_augment_config(folder, overrides, field):
  config = _config()
  config.augment.update(overrides)
  with pytest.raises(UserError, match=field):
    input_pipeline.SplitPipeline(folder.splits["val"], config,
                                 process_index=0, process_count=1)


# ------------------------------------------------------------------ training


def test_steps_per_epoch():
  assert input_pipeline.steps_per_epoch(24, 8) == 3
  assert input_pipeline.steps_per_epoch(25, 8) == 3
  with pytest.raises(UserError, match="5 training images .* batch of 8"):
    input_pipeline.steps_per_epoch(5, 8)


def test_train_epoch_is_the_seeded_permutation(folder, references):
  split = folder.splits["train"]
  batches = _train(split, _config(augment=False), seed=3, epoch=1)
  assert len(batches) == input_pipeline.steps_per_epoch(len(split), 4) == 6
  for batch in batches:
    assert batch.keys() == {"image", "label"}
    assert batch["image"].shape == (4, SIZE, SIZE, 3)
    assert batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32
  images = np.concatenate([b["image"] for b in batches])
  index = _identify(images, references["train"])
  np.testing.assert_array_equal(
      index, np.random.default_rng([3, 1]).permutation(len(split)))
  np.testing.assert_array_equal(
      np.concatenate([b["label"] for b in batches]), split.labels[index])


def test_train_order_and_augmentation_are_deterministic(folder):
  split = folder.splits["train"]
  first = _train(split, _config(), seed=0, epoch=2)
  _assert_same_batches(first, _train(split, _config(), seed=0, epoch=2))
  other_epoch = _train(split, _config(), seed=0, epoch=3)
  assert not np.array_equal(np.concatenate([b["label"] for b in first]),
                            np.concatenate([b["label"] for b in other_epoch]))
  plain = _train(split, _config(augment=False), seed=0, epoch=2)
  for augmented, unaugmented in zip(first, plain):
    np.testing.assert_array_equal(augmented["label"], unaugmented["label"])
  assert not np.allclose(first[0]["image"], plain[0]["image"])


def test_skip_batches_resumes_on_the_same_batches(folder):
  split = folder.splits["train"]
  whole = _train(split, _config(), seed=5, epoch=1)
  _assert_same_batches(whole[4:], _train(split, _config(), seed=5, epoch=1,
                                         skip_batches=4))
  assert _train(split, _config(), seed=5, epoch=1, skip_batches=6) == []


def test_process_shards_split_each_global_batch(folder, references):
  split = folder.splits["train"]  # 24 images: 3 global batches of 2 x 4.
  shards = [_train(split, _config(augment=False), process_index=i,
                   process_count=2, seed=1, epoch=0) for i in range(2)]
  assert len(shards[0]) == len(shards[1]) == 3
  order = np.random.default_rng([1, 0]).permutation(len(split))
  seen = []
  for step in range(3):
    index = [set(_identify(s[step]["image"], references["train"]))
             for s in shards]
    assert not index[0] & index[1]
    assert index[0] | index[1] == set(order[8 * step:8 * step + 8])
    seen += [*index[0], *index[1]]
  assert sorted(seen) == list(range(len(split)))


def test_process_shards_drop_the_same_remainder(folder):
  split = folder.splits["train"]  # 24 images: 2 global batches of 2 x 5.
  shards = [_train(split, _config(), process_index=i, process_count=2,
                   batch_size=5) for i in range(2)]
  assert [len(s) for s in shards] == [2, 2]


@pytest.mark.parametrize("augment", [False, True])
def test_cache_gives_the_same_batches(folder, augment):
  split = folder.splits["train"]
  kwargs = dict(seed=4, epoch=1, skip_batches=1)
  uncached = _train(split, _config(augment=augment), **kwargs)
  cached = _train(split, _config(cache="memory", augment=augment), **kwargs)
  _assert_same_batches(uncached, cached)
  _assert_same_batches(_eval(folder.splits["val"], _config()),
                       _eval(folder.splits["val"], _config(cache="memory")))


# ---------------------------------------------------------------- evaluation


def test_num_eval_batches():
  assert input_pipeline.num_eval_batches(9, 4) == 3
  assert input_pipeline.num_eval_batches(8, 4) == 2
  assert input_pipeline.num_eval_batches(9, 2, process_count=2) == 3


def test_eval_covers_the_split_once_in_order(folder, references):
  split = folder.splits["val"]  # 9 images.
  batches = _eval(split, _config())
  assert len(batches) == input_pipeline.num_eval_batches(9, 4) == 3
  for batch in batches:
    assert batch["image"].shape == (4, SIZE, SIZE, 3)
    assert batch["mask"].dtype == bool and batch["label"].dtype == np.int32
  mask = np.concatenate([b["mask"] for b in batches])
  assert list(mask) == [True] * 9 + [False] * 3
  images = np.concatenate([b["image"] for b in batches])[mask]
  np.testing.assert_array_equal(_identify(images, references["val"]),
                                np.arange(9))
  np.testing.assert_array_equal(
      np.concatenate([b["label"] for b in batches])[mask], split.labels)


def test_eval_over_two_processes_covers_the_split_once(folder, references):
  split = folder.splits["val"]  # 9 images: 3 global batches of 2 x 2.
  shards = [_eval(split, _config(), process_index=i, process_count=2,
                  batch_size=2) for i in range(2)]
  assert len(shards[0]) == len(shards[1]) == 3
  seen = []
  for shard in shards:
    mask = np.concatenate([b["mask"] for b in shard])
    images = np.concatenate([b["image"] for b in shard])[mask]
    index = _identify(images, references["val"])
    np.testing.assert_array_equal(
        np.concatenate([b["label"] for b in shard])[mask], split.labels[index])
    seen += list(index)
  assert sorted(seen) == list(range(len(split)))


# -------------------------------------------------------------- bad files


@pytest.fixture(scope="module")
def messy_root(tmp_path_factory):
  """A tree with every kind of bad and unusual file in train and val."""
  root = helpers.write_image_tree(
      str(tmp_path_factory.mktemp("messy")),
      per_split={"train": 3, "val": 2, "test": 1}, size=(40, 60))
  rng = np.random.default_rng(0)
  for split in ("train", "val"):
    folder = os.path.join(root, split, helpers.CLASSES[0])
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), np.uint8)).save(
        jpeg, format="JPEG")
    _write(os.path.join(folder, "empty.jpg"), b"")
    _write(os.path.join(folder, "text.jpg"), b"this is not a picture\n")
    _write(os.path.join(folder, "cut.jpg"), jpeg.getvalue()[:-64])
    _write(os.path.join(folder, "undecodable.jpg"), UNDECODABLE)
    _write(os.path.join(folder, "png.jpg"),
           _png(rng.integers(0, 256, (40, 60, 3), np.uint8)))
    _write(os.path.join(folder, "gray.png"),
           _png(rng.integers(0, 256, (40, 60), np.uint8)))
    _write(os.path.join(folder, "rgba.png"),
           _png(rng.integers(0, 256, (40, 60, 4), np.uint8)))
    _write(os.path.join(folder, "deep.png"),
           _png(rng.integers(0, 65536, (40, 60), np.uint16)))
  return root


def test_bad_files_are_skipped_and_batches_still_come(messy_root, caplog):
  with caplog.at_level(logging.WARNING):
    folder = image_folder.scan_image_folder(messy_root)
  train, val = folder.splits["train"], folder.splits["val"]
  for split, name in ((train, "train"), (val, "val")):
    assert sorted(os.path.basename(p) for p in split.skipped) == [
        "cut.jpg", "empty.jpg", "text.jpg"]
    (message,) = [r.getMessage() for r in caplog.records
                  if os.path.join(messy_root, name) + ":" in r.getMessage()]
    assert "skipping 3 of" in message
    assert all(path in message for path in split.skipped)
  assert len(train) == 9 + 5 and len(val) == 6 + 5

  # Two batches of 7 take every image, so the undecodable one's place is
  # refilled to keep the batch count.
  batches = _train(train, _config(), batch_size=7)
  assert len(batches) == input_pipeline.steps_per_epoch(len(train), 7) == 2
  assert all(np.isfinite(b["image"]).all() for b in batches)
  _assert_same_batches(batches, _train(train, _config(cache="memory"),
                                       batch_size=7))

  evaluated = _eval(val, _config(), batch_size=4)
  assert len(evaluated) == input_pipeline.num_eval_batches(len(val), 4)
  # The undecodable file is left out; everything else is counted once.
  assert sum(b["mask"].sum() for b in evaluated) == len(val) - 1
  _assert_same_batches(evaluated, _eval(val, _config(cache="memory"),
                                        batch_size=4))
