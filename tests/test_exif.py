"""EXIF orientation: read from JPEG and PNG files, and applied by the decoder
exactly as PIL's `ImageOps.exif_transpose` (and so a browser) shows them."""

import io
import struct

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from roadflax.data import exif, preprocess

# What PIL does to show each orientation upright.
PIL_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def picture(height=30, width=50):
  """Distinct pixels everywhere, so any wrong turn or flip shows."""
  rng = np.random.default_rng(0)
  return Image.fromarray(
      rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  )


def tagged(image, file_format, orientation):
  """`image` saved with an EXIF orientation tag (PIL writes it big-endian)."""
  tags = image.getexif()
  tags[exif.ORIENTATION_TAG] = orientation
  buffer = io.BytesIO()
  image.save(buffer, file_format, exif=tags.tobytes())
  return buffer.getvalue()


def tiff_block(order, entries):
  """A TIFF header and one directory of (tag, type, value) SHORT entries."""
  block = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, 8)
  block += struct.pack(order + "H", len(entries))
  for tag, kind, value in entries:
    block += struct.pack(order + "HHIHH", tag, kind, 1, value, 0)
  return block + struct.pack(order + "I", 0)


def jpeg_with_app1(segment):
  """A JPEG with `segment` as an APP1 segment right after its start marker."""
  buffer = io.BytesIO()
  picture().save(buffer, "JPEG")
  data = buffer.getvalue()
  return (
      data[:2]
      + b"\xff\xe1"
      + struct.pack(">H", len(segment) + 2)
      + segment
      + data[2:]
  )


@pytest.mark.parametrize("orientation", range(1, 9))
def test_pngs_decode_as_pil_shows_them(orientation):
  data = tagged(picture(), "PNG", orientation)
  shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
  assert exif.orientation(data) == orientation
  np.testing.assert_array_equal(
      preprocess.decode_image(tf.constant(data)).numpy(), shown
  )


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpegs_are_turned_as_pil_turns_them(orientation):
  data = tagged(picture(), "JPEG", orientation)
  stored = tf.io.decode_jpeg(data).numpy()  # The pixels as stored, not turned.
  turn = PIL_TURNS.get(orientation)
  expected = np.asarray(
      stored if turn is None else Image.fromarray(stored).transpose(turn)
  )
  assert exif.orientation(data) == orientation
  np.testing.assert_array_equal(
      preprocess.decode_image(tf.constant(data)).numpy(), expected
  )


def test_the_pipeline_applies_it_inside_tf_data():
  data = tagged(picture(), "PNG", 6)
  dataset = tf.data.Dataset.from_tensors(data).map(preprocess.decode_image)
  assert next(iter(dataset)).shape == (50, 30, 3)


def test_a_tagged_photo_is_the_model_input_of_the_same_photo_stored_upright(
    tmp_path,
):
  upright = picture(40, 90).transpose(Image.Transpose.ROTATE_270)
  # A phone's portrait photo: stored lying down, tagged "turn right".
  lying = tmp_path / "phone.png"
  lying.write_bytes(
      tagged(upright.transpose(Image.Transpose.ROTATE_90), "PNG", 6)
  )
  plain = tmp_path / "upright.png"
  upright.save(plain)
  data_config = ml_collections.ConfigDict({
      "image_size": 67,
      "contrast": 1.5,
      "mean": (0.5,) * 3,
      "std": (0.25,) * 3,
  })
  np.testing.assert_array_equal(
      preprocess.load_image(str(lying), data_config),
      preprocess.load_image(str(plain), data_config),
  )


@pytest.mark.parametrize("order", ["<", ">"])
def test_both_byte_orders_are_read(order):
  block = tiff_block(order, [(0x010F, 2, 0), (exif.ORIENTATION_TAG, 3, 8)])
  assert exif.orientation(jpeg_with_app1(b"Exif\x00\x00" + block)) == 8


@pytest.mark.parametrize(
    "contents",
    [
        b"Exif\x00\x00"
        + tiff_block("<", [(exif.ORIENTATION_TAG, 3, 9)]),  # no such value
        b"Exif\x00\x00" + tiff_block("<", [(exif.ORIENTATION_TAG, 3, 0)]),
        b"Exif\x00\x00"
        + tiff_block("<", [(exif.ORIENTATION_TAG, 4, 6)]),  # not a SHORT
        b"Exif\x00\x00"
        + tiff_block("<", [(0x010F, 2, 6)]),  # no orientation entry
        b"Exif\x00\x00"
        + tiff_block("<", [(exif.ORIENTATION_TAG, 3, 6)])[:12],  # cut short
        b"Exif\x00\x00XX" + bytes(20),  # no byte order
        b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>",  # APP1, but XMP
    ],
)
def test_missing_or_damaged_tags_read_as_upright(contents):
  assert exif.orientation(jpeg_with_app1(contents)) == exif.UPRIGHT


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a" + bytes(30),
        b"\xff\xd8\xff",
        b"\xff\xd8\x00\x00\x00\x00",
        b"\x89PNG\r\n\x1a\n",
    ],
)
def test_files_without_metadata_read_as_upright(data):
  assert exif.orientation(data) == exif.UPRIGHT


@pytest.mark.parametrize("file_format", ["JPEG", "PNG"])
def test_the_day_a_photo_was_taken_comes_from_date_time_original(file_format):
  tags = picture().getexif()
  tags[exif.ORIENTATION_TAG] = 6
  tags.get_ifd(0x8769)[exif.DATE_TAKEN_TAG] = "2021:05:03 10:11:12"
  buffer = io.BytesIO()
  picture().save(buffer, file_format, exif=tags.tobytes())
  data = buffer.getvalue()
  assert exif.capture_date(data) == "2021-05-03"
  assert exif.capture_date(data[:40]) == ""  # cut short: no day, no error


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a" + bytes(30),
        jpeg_with_app1(
            b"Exif\x00\x00" + tiff_block("<", [(exif.ORIENTATION_TAG, 3, 6)])
        ),  # no Exif directory
        tagged(picture(), "JPEG", 6),
    ],
)
def test_photos_without_a_date_taken_have_no_day(data):
  assert exif.capture_date(data) == ""
