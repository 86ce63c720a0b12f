"""The index-ordered pipeline of image folders: settings, order, resumption,
sharding, bad files, and the in-memory cache a run owns."""

import io
import logging
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from roadflax.configs import default
from roadflax.data import augment
from roadflax.data import batching
from roadflax.data import caches
from roadflax.data import contract
from roadflax.data import image_folder
from roadflax.data import indexed
from roadflax.data import pipelines
from roadflax.data import preprocess
from roadflax.data import streaming
from roadflax.errors import UserError
from roadflax.training import configuration
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
      per_split={"train": 8, "val": 3, "test": 1},
      size=(40, 60),
  )
  return image_folder.scan_image_folder(root)


@pytest.fixture(scope="module")
def references(folder):
  """Each file as the model sees it, without augmentation, per split."""
  config = _config()
  return {
      name: np.stack([preprocess.load_image(p, config) for p in split.paths])
      for name, split in folder.splits.items()
  }


def _identify(images: np.ndarray, references: np.ndarray) -> np.ndarray:
  """Which reference each un-augmented image is (one must match exactly)."""
  distances = np.abs(images[:, None] - references[None]).max(axis=(2, 3, 4))
  assert np.all(distances.min(axis=1) < 1e-5)
  return distances.argmin(axis=1)


def _train(
    split,
    config,
    *,
    process_index=0,
    process_count=1,
    batch_size=4,
    seed=0,
    epoch=0,
    skip_batches=0,
    memory_cache=None,
):
  pipeline = indexed.IndexedPipeline(
      split,
      config,
      process_index=process_index,
      process_count=process_count,
      memory_cache=memory_cache,
  )
  return list(
      pipeline.train_batches(
          batch_size=batch_size,
          seed=seed,
          epoch=epoch,
          skip_batches=skip_batches,
      )
  )


def _eval(
    split,
    config,
    *,
    process_index=0,
    process_count=1,
    batch_size=4,
    memory_cache=None,
):
  pipeline = indexed.IndexedPipeline(
      split,
      config,
      process_index=process_index,
      process_count=process_count,
      memory_cache=memory_cache,
  )
  return list(pipeline.eval_batches(batch_size=batch_size))


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(image_size=0), "data.image_size"),
        (dict(contrast=-1.0), "data.contrast"),
        (dict(contrast=0.0), "data.contrast"),
        (dict(std=(0.2, 0.2)), "data.std"),
    ],
)
def test_bad_preprocessing_config(folder, overrides, field):
  with pytest.raises(UserError, match=field):
    indexed.IndexedPipeline(
        folder.splits["val"],
        _config(**overrides),
        process_index=0,
        process_count=1,
    )


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(crop_scale=0.0), "data.augment.crop_scale"),
        (dict(brightness=1.5), "data.augment.brightness"),
    ],
)
def test_bad_augment_config(folder, overrides, field):
  config = _config()
  config.augment.update(overrides)
  with pytest.raises(UserError, match=field):
    indexed.IndexedPipeline(
        folder.splits["val"], config, process_index=0, process_count=1
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(cache="ssd"),
            "data.cache='ssd' is not one of auto, none, memory, disk",
        ),
        (
            dict(balance="oversample"),
            (
                "data.balance='oversample' is not one of none, class_weights,"
                " resample"
            ),
        ),
        (dict(shuffle_buffer=0), "data.shuffle_buffer=0 must be at least 1"),
    ],
)
def test_bad_pipeline_settings(folder, overrides, message):
  with pytest.raises(UserError, match=message):
    pipelines.pipeline_for(
        folder.splits["val"],
        _config(**overrides),
        process_index=0,
        process_count=1,
    )


@pytest.mark.parametrize(
    "key, value",
    [
        ("contrast", 0.0),
        ("contrast", -1.0),
        ("std", (0.2, 0.2)),
        ("augment.crop_scale", 0.0),
        ("augment.brightness", 1.5),
        ("cache", "ssd"),
        ("balance", "oversample"),
        ("shuffle_buffer", 0),
    ],
)
def test_config_check_and_pipeline_apply_the_same_rule(folder, key, value):
  config = helpers.tiny_config(folder.root)
  config.data.update_from_flattened_dict({key: value})
  with pytest.raises(UserError) as from_config_check:
    configuration.check_config(config)
  with pytest.raises(UserError) as from_pipeline:
    pipelines.pipeline_for(
        folder.splits["val"], config.data, process_index=0, process_count=1
    )
  assert str(from_pipeline.value) == str(from_config_check.value)


# ------------------------------------------------------------------ training


def test_steps_per_epoch():
  assert batching.steps_per_epoch(24, 8) == 3
  assert batching.steps_per_epoch(25, 8) == 3
  with pytest.raises(UserError, match="5 training images .* batch of 8"):
    batching.steps_per_epoch(5, 8)


def test_train_epoch_is_the_seeded_permutation(folder, references):
  split = folder.splits["train"]
  batches = _train(split, _config(augment=False), seed=3, epoch=1)
  assert len(batches) == batching.steps_per_epoch(len(split), 4) == 6
  for batch in batches:
    assert batch.keys() == {"image", "label"}
    assert batch["image"].shape == (4, SIZE, SIZE, 3)
    assert batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32
  images = np.concatenate([b["image"] for b in batches])
  index = _identify(images, references["train"])
  np.testing.assert_array_equal(
      index, np.random.default_rng([3, 1]).permutation(len(split))
  )
  np.testing.assert_array_equal(
      np.concatenate([b["label"] for b in batches]), split.labels[index]
  )


def test_train_order_and_augmentation_are_deterministic(folder):
  split = folder.splits["train"]
  first = _train(split, _config(), seed=0, epoch=2)
  _assert_same_batches(first, _train(split, _config(), seed=0, epoch=2))
  other_epoch = _train(split, _config(), seed=0, epoch=3)
  assert not np.array_equal(
      np.concatenate([b["label"] for b in first]),
      np.concatenate([b["label"] for b in other_epoch]),
  )
  plain = _train(split, _config(augment=False), seed=0, epoch=2)
  for augmented, unaugmented in zip(first, plain):
    np.testing.assert_array_equal(augmented["label"], unaugmented["label"])
  assert not np.allclose(first[0]["image"], plain[0]["image"])


def test_skip_batches_resumes_on_the_same_batches(folder):
  split = folder.splits["train"]
  whole = _train(split, _config(), seed=5, epoch=1)
  _assert_same_batches(
      whole[4:], _train(split, _config(), seed=5, epoch=1, skip_batches=4)
  )
  assert _train(split, _config(), seed=5, epoch=1, skip_batches=6) == []


def test_process_shards_split_each_global_batch(folder, references):
  split = folder.splits["train"]  # 24 images: 3 global batches of 2 x 4.
  shards = [
      _train(
          split,
          _config(augment=False),
          process_index=i,
          process_count=2,
          seed=1,
          epoch=0,
      )
      for i in range(2)
  ]
  assert len(shards[0]) == len(shards[1]) == 3
  order = np.random.default_rng([1, 0]).permutation(len(split))
  seen = []
  for step in range(3):
    index = [
        set(_identify(s[step]["image"], references["train"])) for s in shards
    ]
    assert not index[0] & index[1]
    assert index[0] | index[1] == set(order[8 * step : 8 * step + 8])
    seen += [*index[0], *index[1]]
  assert sorted(seen) == list(range(len(split)))


def test_process_shards_drop_the_same_remainder(folder):
  split = folder.splits["train"]  # 24 images: 2 global batches of 2 x 5.
  shards = [
      _train(split, _config(), process_index=i, process_count=2, batch_size=5)
      for i in range(2)
  ]
  assert [len(s) for s in shards] == [2, 2]


@pytest.mark.parametrize("augment", [False, True])
def test_cache_gives_the_same_batches(folder, augment):
  split = folder.splits["train"]
  kwargs = dict(seed=4, epoch=1, skip_batches=1)
  uncached = _train(split, _config(augment=augment), **kwargs)
  cached = _train(split, _config(cache="memory", augment=augment), **kwargs)
  _assert_same_batches(uncached, cached)
  _assert_same_batches(
      _eval(folder.splits["val"], _config()),
      _eval(folder.splits["val"], _config(cache="memory")),
  )


def test_augmentation_is_unchanged_and_keeps_a_static_shape():
  image = tf.constant(
      np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), np.uint8)
  )
  pixels = image.numpy().astype(np.float32)
  flip_only = augment.Augmentation(flip=True, crop_scale=1.0, brightness=0.0)
  flipped = []
  for i in range(16):
    seed = tf.constant([7, i], tf.int64)
    # The draw it always made: the second of three seeds split from the
    # example's, below 0.5.
    draw = tf.random.experimental.stateless_split(seed, 3)[1]
    flip = tf.random.stateless_uniform([], draw).numpy() < 0.5
    out = augment.augment(image, seed, flip_only, SIZE).numpy()
    np.testing.assert_array_equal(out, pixels[:, ::-1] if flip else pixels)
    flipped.append(flip)
  assert 0 < sum(flipped) < 16
  # A crop of drawn size still gives [S, S, 3]: normalising it needs no
  # broadcast.
  every = augment.Augmentation(flip=True, crop_scale=0.5, brightness=0.1)
  traced = tf.function(
      lambda x: augment.augment(x, tf.constant([1, 2], tf.int64), every, SIZE)
  ).get_concrete_function(tf.TensorSpec([SIZE, SIZE, 3], tf.uint8))
  assert traced.structured_outputs.shape == (SIZE, SIZE, 3)


# ---------------------------------------------------------------- evaluation


def test_num_eval_batches():
  assert batching.num_eval_batches(9, 4) == 3
  assert batching.num_eval_batches(8, 4) == 2
  assert batching.num_eval_batches(9, 2, process_count=2) == 3


def test_eval_covers_the_split_once_in_order(folder, references):
  split = folder.splits["val"]  # 9 images.
  batches = _eval(split, _config())
  assert len(batches) == batching.num_eval_batches(9, 4) == 3
  for batch in batches:
    assert batch["image"].shape == (4, SIZE, SIZE, 3)
    assert batch["mask"].dtype == bool and batch["label"].dtype == np.int32
  mask = np.concatenate([b["mask"] for b in batches])
  assert list(mask) == [True] * 9 + [False] * 3
  images = np.concatenate([b["image"] for b in batches])[mask]
  np.testing.assert_array_equal(
      _identify(images, references["val"]), np.arange(9)
  )
  np.testing.assert_array_equal(
      np.concatenate([b["label"] for b in batches])[mask], split.labels
  )


def test_eval_over_two_processes_covers_the_split_once(folder, references):
  split = folder.splits["val"]  # 9 images: 3 global batches of 2 x 2.
  shards = [
      _eval(split, _config(), process_index=i, process_count=2, batch_size=2)
      for i in range(2)
  ]
  assert len(shards[0]) == len(shards[1]) == 3
  seen = []
  for shard in shards:
    mask = np.concatenate([b["mask"] for b in shard])
    images = np.concatenate([b["image"] for b in shard])[mask]
    index = _identify(images, references["val"])
    np.testing.assert_array_equal(
        np.concatenate([b["label"] for b in shard])[mask], split.labels[index]
    )
    seen += list(index)
  assert sorted(seen) == list(range(len(split)))


# -------------------------------------------------------------- bad files


@pytest.fixture(scope="module")
def messy_root(tmp_path_factory):
  """A tree with every kind of bad and unusual file in train and val."""
  root = helpers.write_image_tree(
      str(tmp_path_factory.mktemp("messy")),
      per_split={"train": 3, "val": 2, "test": 1},
      size=(40, 60),
  )
  rng = np.random.default_rng(0)
  for split in ("train", "val"):
    folder = os.path.join(root, split, helpers.CLASSES[0])
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), np.uint8)).save(
        jpeg, format="JPEG"
    )
    _write(os.path.join(folder, "empty.jpg"), b"")
    _write(os.path.join(folder, "text.jpg"), b"this is not a picture\n")
    _write(os.path.join(folder, "cut.jpg"), jpeg.getvalue()[:-64])
    _write(os.path.join(folder, "undecodable.jpg"), UNDECODABLE)
    _write(
        os.path.join(folder, "png.jpg"),
        _png(rng.integers(0, 256, (40, 60, 3), np.uint8)),
    )
    _write(
        os.path.join(folder, "gray.png"),
        _png(rng.integers(0, 256, (40, 60), np.uint8)),
    )
    _write(
        os.path.join(folder, "rgba.png"),
        _png(rng.integers(0, 256, (40, 60, 4), np.uint8)),
    )
    _write(
        os.path.join(folder, "deep.png"),
        _png(rng.integers(0, 65536, (40, 60), np.uint16)),
    )
  return root


def test_bad_files_are_skipped_and_batches_still_come(messy_root, caplog):
  with caplog.at_level(logging.WARNING):
    folder = image_folder.scan_image_folder(messy_root)
  train, val = folder.splits["train"], folder.splits["val"]
  for split, name in ((train, "train"), (val, "val")):
    assert sorted(os.path.basename(p) for p in split.skipped) == [
        "cut.jpg",
        "empty.jpg",
        "text.jpg",
    ]
    (message,) = [
        r.getMessage()
        for r in caplog.records
        if os.path.join(messy_root, name) + ":" in r.getMessage()
    ]
    assert "skipping 3 of" in message
    assert all(path in message for path in split.skipped)
  assert len(train) == 9 + 5 and len(val) == 6 + 5

  # Two batches of 7 take every image, so the undecodable one's place is
  # refilled to keep the batch count.
  batches = _train(train, _config(), batch_size=7)
  assert len(batches) == batching.steps_per_epoch(len(train), 7) == 2
  assert all(np.isfinite(b["image"]).all() for b in batches)
  _assert_same_batches(
      batches, _train(train, _config(cache="memory"), batch_size=7)
  )

  evaluated = _eval(val, _config(), batch_size=4)
  assert len(evaluated) == batching.num_eval_batches(len(val), 4)
  # The undecodable file is left out; everything else is counted once.
  assert sum(b["mask"].sum() for b in evaluated) == len(val) - 1
  _assert_same_batches(
      evaluated, _eval(val, _config(cache="memory"), batch_size=4)
  )


# -------------------------------------------------------------- memory cache


@pytest.fixture
def decodings(monkeypatch):
  """The splits decoded from their files, one entry per decoding."""
  decoded = []
  decode_files = preprocess.decode_files

  def counting(split, p, columns):
    decoded.append(split)
    return decode_files(split, p, columns)

  monkeypatch.setattr(preprocess, "decode_files", counting)
  return decoded


def test_a_run_cache_decodes_each_split_once_for_all_its_pipelines(
    folder, decodings
):
  train, val = folder.splits["train"], folder.splits["val"]
  config = _config(cache="memory")
  run_cache = caches.MemoryCache()
  for _ in range(2):  # Two stages, each with its own pipelines.
    train_pipeline = pipelines.pipeline_for(
        train, config, memory_cache=run_cache
    )
    val_pipeline = pipelines.pipeline_for(val, config, memory_cache=run_cache)
    for epoch in range(2):
      list(train_pipeline.train_batches(batch_size=4, seed=0, epoch=epoch))
      list(val_pipeline.eval_batches(batch_size=4))
  assert decodings == [train, val]
  # Another run's cache is its own.
  next_run = pipelines.pipeline_for(
      train, config, memory_cache=caches.MemoryCache()
  )
  list(next_run.eval_batches(batch_size=4))
  assert decodings == [train, val, train]


def test_a_pipeline_without_a_run_cache_decodes_for_itself(folder, decodings):
  train = folder.splits["train"]
  config = _config(cache="memory")
  pipeline = pipelines.pipeline_for(train, config)
  for epoch in range(2):
    list(pipeline.train_batches(batch_size=4, seed=0, epoch=epoch))
  list(pipeline.eval_batches(batch_size=4))
  assert decodings == [train]
  list(pipelines.pipeline_for(train, config).eval_batches(batch_size=4))
  assert decodings == [train, train]


def test_a_run_cache_decodes_again_for_other_preprocessing(folder, decodings):
  val = folder.splits["val"]
  run_cache = caches.MemoryCache()
  _eval(val, _config(cache="memory"), memory_cache=run_cache)
  larger = _eval(
      val, _config(cache="memory", image_size=40), memory_cache=run_cache
  )
  assert decodings == [val, val]
  assert larger[0]["image"].shape == (4, 40, 40, 3)
  _assert_same_batches(
      larger, _eval(val, _config(cache="memory", image_size=40))
  )


def test_a_training_run_decodes_each_split_once(folder, decodings, tmp_path):
  from roadflax.training import train

  config = helpers.tiny_config(folder.root, pretrain=2, classify=2)
  config.data.cache = "memory"
  train.train_and_evaluate(config, str(tmp_path / "run"))
  # Train, val and test, each once for both stages' training, validation,
  # pictures and test report.
  assert len(decodings) == len({id(split) for split in decodings}) == 3
  config.stage_order = ("classify",)  # one stage is enough to tell
  config.stages.classify.init_from = ""
  train.train_and_evaluate(config, str(tmp_path / "again"))
  assert len(decodings) == 6  # A new run decodes anew.


# ------------------------------------------------------------------ contract


class _CountedOnly:
  """A split by `contract.AnySplit`, but neither files nor records."""

  skipped = ()
  fingerprint = "counted"

  def __len__(self):
    return 3

  def class_counts(self, num_classes):
    return np.ones(num_classes, np.int64)


def test_pipeline_for_tells_splits_apart_by_the_contract(folder, tmp_path):
  split = folder.splits["val"]
  assert isinstance(split, contract.FolderSplit)
  assert not isinstance(split, contract.RecordSplit)
  assert isinstance(
      pipelines.pipeline_for(split, _config()), indexed.IndexedPipeline
  )
  on_disk = _config(cache="disk", cache_dir=str(tmp_path))
  assert isinstance(
      pipelines.pipeline_for(split, on_disk), streaming.StreamPipeline
  )
  counted = _CountedOnly()
  assert isinstance(counted, contract.AnySplit)
  assert not isinstance(counted, contract.FolderSplit)
  with pytest.raises(
      TypeError, match="neither a FolderSplit nor a RecordSplit"
  ):
    pipelines.pipeline_for(counted, _config())


def test_auto_cache_holds_small_folders_in_memory():
  from roadflax.data import batching, indexed

  settings = batching.Settings.from_config(_config(cache="auto"))
  small = batching.AUTO_MEMORY_BYTES // (SIZE * SIZE * 3)
  assert indexed._held_in_memory(settings, small)
  assert not indexed._held_in_memory(settings, small + 1)
  for cache, expected in (("memory", True), ("none", False)):
    settings = batching.Settings.from_config(_config(cache=cache))
    assert indexed._held_in_memory(settings, small + 1) == expected
