"""One image as the model sees it: decoding, resize and contrast, normalising,
files and uploads, and the checked preprocessing settings."""

import io

import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageEnhance
import pytest
import tensorflow as tf

from roadflax.configs import default
from roadflax.data import image_folder
from roadflax.data import preprocess
from roadflax.errors import UserError
from tests import helpers

SIZE = 32
# JPEG start and end markers around garbage: passes the cheap check, fails to
# decode.
UNDECODABLE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2 + b"\xff\xd9"


def _config(**overrides):
  data = default.get_config().data
  data.image_size = SIZE
  data.update(overrides)
  return data


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
  root = helpers.write_image_tree(
      str(tmp_path_factory.mktemp("data")), per_split={"val": 1}, size=(40, 60)
  )
  return (
      image_folder.scan_image_folder(root, splits=("val",))
      .splits["val"]
      .paths[0]
  )


@pytest.mark.parametrize(
    "array",
    [
        np.full((20, 30), 77, np.uint8),  # Grayscale.
        np.full((20, 30, 4), 77, np.uint8),  # RGBA.
        np.full((20, 30), 77 * 256 + 200, np.uint16),  # 16-bit grayscale.
    ],
    ids=["gray", "rgba", "16bit"],
)
def test_decode_image_gives_rgb_uint8(array):
  image = preprocess.decode_image(tf.constant(_png(array))).numpy()
  assert image.dtype == np.uint8 and image.shape == (20, 30, 3)
  assert np.all(image == 77)


def test_contrast_of_one_is_identity():
  image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), np.uint8)
  out = preprocess.resize_and_contrast(image, SIZE, 1.0).numpy()
  assert out.dtype == np.uint8
  assert np.abs(out.astype(int) - image).max() <= 1


def test_contrast_matches_pil():
  rng = np.random.default_rng(1)
  image = rng.integers(60, 200, (SIZE, SIZE, 3), np.uint8)
  out = preprocess.resize_and_contrast(image, SIZE, 1.5).numpy()
  pil = np.asarray(ImageEnhance.Contrast(Image.fromarray(image)).enhance(1.5))
  assert out.std() > 1.3 * image.std()
  assert np.abs(out.astype(int) - pil).max() <= 2


def test_a_batch_is_resized_as_each_of_its_images_alone():
  rng = np.random.default_rng(2)
  # Different brightness: each image keeps its own mean grey level.
  frames = np.stack(
      [rng.integers(low, low + 100, (40, 60, 3), np.uint8) for low in (0, 150)]
  )

  batch = preprocess.resize_and_contrast(frames, 16, 1.5).numpy()

  assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.uint8
  for frame, resized in zip(frames, batch):
    np.testing.assert_array_equal(
        resized, preprocess.resize_and_contrast(frame, 16, 1.5).numpy()
    )


def test_resize_ignores_aspect():
  image = np.zeros((40, 60, 3), np.uint8)
  assert preprocess.resize_and_contrast(image, 16, 1.5).shape == (16, 16, 3)


def test_normalize():
  out = preprocess.normalize(
      np.array([[[255, 0, 51]]], np.uint8), (0.5, 0.5, 0.5), (0.5, 0.25, 0.2)
  ).numpy()
  np.testing.assert_allclose(out, [[[1.0, -2.0, -1.5]]], rtol=1e-6)


def test_normalize_is_the_same_on_known_and_unknown_shapes():
  # On a known shape mean and std are constants of the image's shape (fast),
  # else broadcast (as it always did): the same float32 values either way.
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)

  def normalize(shape):
    return tf.function(
        lambda x: preprocess.normalize(x, mean, std),
        input_signature=[tf.TensorSpec(shape, tf.uint8)],
    )(image).numpy()

  known, unknown = normalize([5, 7, 3]), normalize([None, None, 3])
  assert known.dtype == unknown.dtype == np.float32
  np.testing.assert_array_equal(known, unknown)
  # Eagerly it is float32's own arithmetic; a traced graph, rewritten by
  # TensorFlow's optimiser, may round the last bit differently.
  plain = (image.astype(np.float32) / np.float32(255) - np.float32(mean)) / (
      np.float32(std)
  )
  np.testing.assert_array_equal(preprocess.normalize(image, mean, std), plain)
  np.testing.assert_allclose(known, plain, atol=1e-6)


def test_load_image_and_preprocess_bytes_agree(image_path):
  with open(image_path, "rb") as f:
    from_bytes = preprocess.preprocess_bytes(f.read(), _config())
  from_file = preprocess.load_image(image_path, _config())
  assert from_file.dtype == np.float32 and from_file.shape == (SIZE, SIZE, 3)
  np.testing.assert_array_equal(from_file, from_bytes)


def test_load_image_needs_only_the_preprocessing_fields(image_path):
  data = _config()
  minimal = {
      key: data[key] for key in ("image_size", "contrast", "mean", "std")
  }
  out = preprocess.load_image(image_path, ml_collections.ConfigDict(minimal))
  assert out.shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize("data", [b"hello, I am text", b"", UNDECODABLE])
def test_load_image_rejects_non_images(tmp_path, data):
  path = tmp_path / "photo.jpg"
  path.write_bytes(data)
  with pytest.raises(UserError, match="photo.jpg"):
    preprocess.load_image(str(path), _config())
  with pytest.raises(UserError, match="the image"):
    preprocess.preprocess_bytes(data, _config())


def test_load_image_of_missing_file(tmp_path):
  with pytest.raises(UserError, match="nothing.png"):
    preprocess.load_image(str(tmp_path / "nothing.png"), _config())


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(image_size=0), r"data.image_size=0 must be a positive integer"),
        (dict(contrast=-1.0), r"data.contrast=-1.0 must be > 0 \(1.0 = off"),
        # Every image one flat grey: refused, not trained on.
        (dict(contrast=0.0), r"data.contrast=0.0 must be > 0 \(1.0 = off"),
        (
            dict(std=(0.2, 0.2)),
            r"data.mean and --config.data.std need three values",
        ),
        (dict(std=(0.2, 0.0, 0.2)), r"std all > 0"),
    ],
)
def test_preprocessing_refuses_unusable_settings(
    image_path, overrides, message
):
  with pytest.raises(UserError, match=message):
    preprocess.Preprocessing.from_config(_config(**overrides))
  # Also from a trained model's stored settings.
  with pytest.raises(UserError, match=message):
    preprocess.load_image(image_path, _config(**overrides))


def test_preprocessing_reads_the_settings():
  p = preprocess.Preprocessing.from_config(
      _config(contrast=2.0, mean=(0, 0.5, 1))
  )
  assert p == preprocess.Preprocessing(
      image_size=SIZE,
      contrast=2.0,
      mean=(0.0, 0.5, 1.0),
      std=tuple(default.get_config().data.std),
  )
