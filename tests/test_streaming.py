"""Streamed input (TFDS splits, the disk cache), class balance, and training
from configs/rscd3.py on a generated release."""

import json
import os

import numpy as np
import pytest

from roadflax.configs import default, rscd3
from roadflax.data import batching, contract, pipelines, streaming
from roadflax.datasets import rscd, sources, tfds_source
from roadflax.training import train
from tests import fake_rscd
from roadflax.errors import UserError
from tests import helpers

SIZE = 32
NO_AUGMENT = dict(flip=False, crop_scale=1.0, brightness=0.0)
COUNTS = {"train": 12, "validation": 3, "test": 4}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  return fake_rscd.write_release(
      str(tmp_path_factory.mktemp("release")), COUNTS
  )


@pytest.fixture(scope="module")
def rscd_data(release, tmp_path_factory):
  data = _data(
      source="rscd",
      manual_dir=release,
      data_dir=str(tmp_path_factory.mktemp("tfds")),
  )
  return sources.load_dataset(data)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = helpers.write_image_tree(
      str(tmp_path_factory.mktemp("tree")),
      per_split={"train": 10, "val": 3, "test": 3},
  )
  return sources.load_dataset(_data(source="folder", root=root))


def _data(**overrides):
  data = default.get_config().data
  data.image_size = SIZE
  data.shuffle_buffer = 16
  data.update(overrides)
  return data


def _batches(iterator):
  return [{k: np.asarray(v) for k, v in batch.items()} for batch in iterator]


def _same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_class_counts_are_counted_once_per_prepared_set(
    release, tmp_path, monkeypatch
):
  data = _data(
      source="rscd",
      manual_dir=release,
      data_dir=str(tmp_path / "tfds"),
      cache_dir=str(tmp_path / "cache"),
  )
  first = sources.load_dataset(data)
  assert (
      len(os.listdir(tmp_path / "cache" / "label_counts")) == 3
  )  # One per split.

  def count_again(builder, split, *_):
    counted.append(split)
    return np.arange(3)

  counted = []
  monkeypatch.setattr(tfds_source, "_label_counts", count_again)
  again = sources.load_dataset(data)
  assert counted == []
  for split in first.splits:
    np.testing.assert_array_equal(
        again.splits[split].counts, first.splits[split].counts
    )
  # Preparing the set again rewrites its dataset_info.json: counted anew.
  os.utime(
      os.path.join(first.splits["train"].builder.data_dir, "dataset_info.json"),
      ns=(0, 0),
  )
  assert list(sources.load_dataset(data).splits["train"].counts) == [0, 1, 2]
  assert counted == ["train", "validation", "test"]


def test_rscd_source_gives_classes_and_counts(rscd_data):
  assert rscd_data.class_names == rscd.CLASSES_3
  for split, ours in (
      ("train", "train"),
      ("validation", "val"),
      ("test", "test"),
  ):
    assert list(rscd_data.splits[ours].class_counts(3)) == [COUNTS[split]] * 3
    assert isinstance(rscd_data.splits[ours], contract.RecordSplit)
    assert not isinstance(rscd_data.splits[ours], contract.FolderSplit)


def test_stream_is_deterministic_and_resumes_exactly(rscd_data):
  pipeline = pipelines.pipeline_for(rscd_data.splits["train"], _data())
  assert isinstance(pipeline, streaming.StreamPipeline)
  epoch0 = _batches(pipeline.train_batches(batch_size=4, seed=0, epoch=0))
  assert len(epoch0) == 36 // 4
  assert epoch0[0]["image"].shape == (4, SIZE, SIZE, 3)
  _same(epoch0, _batches(pipeline.train_batches(batch_size=4, seed=0, epoch=0)))
  _same(
      epoch0[3:],
      _batches(
          pipeline.train_batches(batch_size=4, seed=0, epoch=0, skip_batches=3)
      ),
  )
  epoch1 = _batches(pipeline.train_batches(batch_size=4, seed=0, epoch=1))
  assert any(
      not np.array_equal(a["label"], b["label"]) for a, b in zip(epoch0, epoch1)
  )


def test_stream_evaluation_covers_each_example_once_over_processes(rscd_data):
  split = rscd_data.splits["test"]
  labels, counts = [], []
  for index in range(2):
    pipeline = pipelines.pipeline_for(
        split, _data(), process_index=index, process_count=2
    )
    batches = _batches(pipeline.eval_batches(batch_size=4))
    counts.append(len(batches))
    labels += [b["label"][b["mask"]] for b in batches]
  assert counts[0] == counts[1] == batching.num_eval_batches(12, 4, 2)
  assert sorted(np.bincount(np.concatenate(labels))) == [4, 4, 4]


@pytest.mark.parametrize("source", ["folder", "rscd"])
def test_disk_cache_serves_the_same_images_and_is_written_once(
    source, folder, rscd_data, tmp_path
):
  dataset = folder if source == "folder" else rscd_data
  split = dataset.splits["val"]
  plain = _batches(
      pipelines.pipeline_for(split, _data()).eval_batches(batch_size=4)
  )
  cached_config = _data(cache="disk", cache_dir=str(tmp_path))
  cached = _batches(
      pipelines.pipeline_for(split, cached_config).eval_batches(batch_size=4)
  )

  def by_image(batches):
    images = np.concatenate([b["image"][b["mask"]] for b in batches])
    return images[np.lexsort(images.reshape(len(images), -1).T)]

  np.testing.assert_array_equal(by_image(plain), by_image(cached))

  [cache_dir] = os.listdir(tmp_path / "preprocessed")
  stamp = os.stat(tmp_path / "preprocessed" / cache_dir).st_mtime_ns
  again = pipelines.pipeline_for(split, cached_config)
  _same(cached, _batches(again.eval_batches(batch_size=4)))
  train_batches = _batches(again.train_batches(batch_size=3, seed=0, epoch=0))
  assert len(train_batches) == len(split) // 3
  assert os.stat(tmp_path / "preprocessed" / cache_dir).st_mtime_ns == stamp


def test_disk_cache_trains_on_exactly_the_folder_pipelines_images(
    folder, tmp_path
):
  split = folder.splits["train"]  # 30 images: one epoch in 6 batches of 5.
  plain = _data(augment=NO_AUGMENT)
  cached = _data(augment=NO_AUGMENT, cache="disk", cache_dir=str(tmp_path))
  references = np.concatenate([
      b["image"]
      for b in pipelines.pipeline_for(split, plain).train_batches(
          batch_size=5, seed=0, epoch=0
      )
  ])
  assert len(references) == len(split)
  pipeline = pipelines.pipeline_for(split, cached)
  assert isinstance(pipeline, streaming.StreamPipeline)
  images = np.concatenate([
      b["image"] for b in pipeline.train_batches(batch_size=5, seed=0, epoch=0)
  ])
  assert images.shape == references.shape and images.dtype == np.float32
  for image in images:
    assert (references == image).all(axis=(1, 2, 3)).sum() == 1


def _imbalanced_folder(root):
  for name, count in (("asphalt", 40), ("concrete", 10), ("gravel", 4)):
    helpers.write_image_tree(
        os.path.join(root, name),
        per_split={"train": count},
        classes=(name,),
        size=(20, 20),
    )
  # Merge into one tree: ROOT/train/CLASS.
  for name in ("asphalt", "concrete", "gravel"):
    os.makedirs(os.path.join(root, "train"), exist_ok=True)
    os.rename(
        os.path.join(root, name, "train", name),
        os.path.join(root, "train", name),
    )
  from roadflax.data import image_folder

  return image_folder.scan_image_folder(root, splits=("train",)).splits["train"]


@pytest.mark.parametrize("cache", ["none", "disk"])
def test_resample_draws_classes_equally_often(cache, tmp_path):
  split = _imbalanced_folder(str(tmp_path / "tree"))
  data = _data(
      balance="resample",
      cache=cache,
      cache_dir=str(tmp_path / "cache"),
      augment=dict(flip=False, crop_scale=1.0, brightness=0.0),
  )
  pipeline = pipelines.pipeline_for(split, data)
  labels = np.concatenate([
      b["label"]
      for epoch in range(4)
      for b in pipeline.train_batches(batch_size=6, seed=0, epoch=epoch)
  ])
  assert len(labels) == 4 * (54 // 6) * 6
  share = np.bincount(labels, minlength=3) / len(labels)
  np.testing.assert_allclose(
      share, 1 / 3, atol=0.1
  )  # unbalanced: 0.74 / 0.19 / 0.07


def test_balancing_factors_equalise_the_classes():
  factors = batching.balancing_factors(np.array([40, 10, 0, 4]))
  assert factors[2] == 0
  np.testing.assert_allclose(factors[[0, 1, 3]] * [40, 10, 4], 54 / 3)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("cache", "ssd", "is not one of auto, none, memory, disk"),
        (
            "balance",
            "oversample",
            "is not one of none, class_weights, resample",
        ),
        ("shuffle_buffer", 0, "must be at least 1"),
    ],
)
def test_data_mistakes_are_refused(key, value, message):
  from roadflax.training import configuration

  config = rscd3.get_config()
  config.data[key] = value
  with pytest.raises(UserError, match=message):
    configuration.check_config(config)


def test_rscd_needs_the_release_the_first_time(tmp_path):
  with pytest.raises(
      UserError, match="is not prepared .* set --config.data.manual_dir"
  ):
    sources.load_dataset(_data(source="rscd", data_dir=str(tmp_path)))
  with pytest.raises(UserError, match="does not exist"):
    sources.load_dataset(
        _data(
            source="rscd",
            data_dir=str(tmp_path),
            manual_dir=str(tmp_path / "nowhere"),
        )
    )


def test_training_from_the_rscd3_config(release, tmp_path):
  config = rscd3.get_config()
  config.data.update(
      manual_dir=release,
      data_dir=str(tmp_path / "tfds"),
      image_size=67,
      balance="class_weights",
  )
  config.eval_batch_size = 8
  config.stage_order = ("classify",)  # the data path, not the recipe
  config.stages.classify.update(
      steps=3,
      batch_size=4,
      init_from="",
      optimizer="momentum",
      learning_rate=0.01,
  )
  train.train_and_evaluate(config, str(tmp_path / "run"))
  with open(tmp_path / "run" / "classify" / "report.json") as f:
    report = json.load(f)
  assert report["num_examples"] == 3 * COUNTS["test"]
  assert list(report["per_class"]) == list(rscd.CLASSES_3)


def test_any_prepared_tfds_set_by_name_with_split_specs(rscd_data):
  data_dir = rscd_data.splits["train"].builder.data_dir.split("/rscd/")[0]
  dataset = sources.load_dataset(
      _data(
          source="tfds",
          tfds_name="rscd/3class",
          data_dir=data_dir,
          tfds_splits=("train[:75%]", "train[75%:]", "test"),
      )
  )
  assert dataset.class_names == rscd.CLASSES_3
  assert len(dataset.splits["train"]) == 27 and len(dataset.splits["val"]) == 9
  with pytest.raises(UserError, match="has no split 'valid'"):
    sources.load_dataset(
        _data(
            source="tfds",
            tfds_name="rscd/3class",
            data_dir=data_dir,
            tfds_splits=("train", "valid", "test"),
        )
    )
  with pytest.raises(UserError, match="tfds_name='no_such_set'"):
    sources.load_dataset(
        _data(source="tfds", tfds_name="no_such_set", data_dir=data_dir)
    )
