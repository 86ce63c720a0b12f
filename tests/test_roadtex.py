"""The built-in synthetic set: determinism, layout, atomicity, and that colour
alone does not separate its classes while texture does."""

import os

import numpy as np
import pytest

from roadflax.data import image_folder
from roadflax.datasets import roadtex
from tests import helpers


def test_frames_are_deterministic_per_seed():
  a = roadtex.render_frame(2, np.random.default_rng([0, 0, 2, 5]))
  b = roadtex.render_frame(2, np.random.default_rng([0, 0, 2, 5]))
  c = roadtex.render_frame(2, np.random.default_rng([1, 0, 2, 5]))
  assert a.shape == (240, 360, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("cache"))
  return roadtex.ensure_generated(
      train_per_class=60,
      val_per_class=2,
      test_per_class=45,
      seed=3,
      cache_dir=cache,
      progress=False,
  )


def test_tree_layout_and_reuse(small_set):
  folder = image_folder.scan_image_folder(small_set)
  assert folder.class_names == roadtex.CLASS_NAMES
  assert [len(folder.splits[s]) for s in ("train", "val", "test")] == [
      180,
      6,
      135,
  ]
  marker = os.path.join(small_set, "roadtex.json")
  before = os.path.getmtime(marker)
  again = roadtex.ensure_generated(
      train_per_class=60,
      val_per_class=2,
      test_per_class=45,
      seed=3,
      cache_dir=os.path.dirname(small_set),
      progress=False,
  )
  assert again == small_set and os.path.getmtime(marker) == before


def test_files_do_not_depend_on_the_worker_count(
    small_set, tmp_path, monkeypatch
):
  monkeypatch.setattr(os, "cpu_count", lambda: 1)
  other = roadtex.ensure_generated(
      train_per_class=1,
      val_per_class=1,
      test_per_class=1,
      seed=3,
      cache_dir=str(tmp_path),
      progress=False,
  )
  name = os.path.join("train", roadtex.CLASS_NAMES[1], "000000.jpg")
  with (
      open(os.path.join(other, name), "rb") as a,
      open(os.path.join(small_set, name), "rb") as b,
  ):
    assert a.read() == b.read()


def test_interrupted_generation_leaves_no_tree(tmp_path, monkeypatch):
  def interrupted_after_one(results, **kwargs):
    yield next(iter(results))
    raise KeyboardInterrupt  # as if Ctrl-C during generation

  monkeypatch.setattr(roadtex, "tqdm", interrupted_after_one)
  with pytest.raises(KeyboardInterrupt):
    roadtex.ensure_generated(
        train_per_class=2,
        val_per_class=1,
        test_per_class=1,
        cache_dir=str(tmp_path),
        progress=False,
    )
  assert os.listdir(tmp_path) == []


def _texture(image):
  """Gradient statistics of the brightness, normalised by its spread."""
  grey = image.mean(-1)[::2, ::2]
  grey = (grey - grey.mean()) / (grey.std() + 1e-6)
  dx, dy = np.diff(grey, axis=1), np.diff(grey, axis=0)
  return np.array([
      np.abs(dx).mean(),
      np.abs(dy).mean(),
      (dx**2).mean(),
      (dy**2).mean(),
      np.mean(np.abs(dx) > 1.0),
      np.mean(np.abs(dy) > 1.0),
  ])


def test_colour_and_brightness_alone_do_not_separate_the_classes(small_set):
  accuracy = helpers.logistic_regression_accuracy(
      helpers.image_features(small_set, "train", helpers.colour_statistics),
      helpers.image_features(small_set, "test", helpers.colour_statistics),
  )
  assert accuracy < 0.75


def test_the_same_classifier_does_separate_colour_coded_classes():
  """The check above can fail: colour-coded classes are found at once."""
  rng = np.random.default_rng(0)

  def sample(n):
    y = rng.integers(0, 3, n)
    return rng.normal(size=(n, 6)) * 0.3 + y[:, None], y

  assert helpers.logistic_regression_accuracy(sample(150), sample(90)) > 0.9


def test_texture_separates_the_classes(small_set):
  accuracy = helpers.logistic_regression_accuracy(
      helpers.image_features(small_set, "train", _texture),
      helpers.image_features(small_set, "test", _texture),
  )
  assert accuracy > 0.8
