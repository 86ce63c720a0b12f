"""EXIF orientation: which way up a photo is meant to be seen; and the day it
was taken.

Phones and cameras store pixels as the sensor read them and record in EXIF
tag 0x0112 how to turn them upright; browsers and image viewers apply it,
image decoders (TensorFlow's, and PIL's `Image.open`) do not. A portrait
phone photo therefore decodes lying on its side. The input pipeline turns
every image upright with this tag before anything else, in training and
prediction alike, so a model sees roads the way their photographers did.

Only the tag is read, by walking the file's segments (JPEG) or chunks (PNG)
up to the image data: microseconds, nothing decoded. The same walk finds
DateTimeOriginal, the moment the shutter fired, which groups a folder's
photos by capture day (`groups`).
"""

import datetime
import struct

from roadflax.data import image_folder

ORIENTATION_TAG = 0x0112
UPRIGHT = 1  # EXIF orientation 1: the pixels are stored upright.
DATE_TAKEN_TAG = 0x9003  # DateTimeOriginal, "YYYY:MM:DD hh:mm:ss".
_EXIF_DIRECTORY_TAG = 0x8769  # IFD0's pointer to the Exif directory.

_EXIF_HEADER = b"Exif\x00\x00"  # Opens a JPEG's APP1 EXIF segment.
_APP1 = 0xE1
_SHORT = 3  # TIFF field type of the orientation value.


def orientation(data: bytes) -> int:
  """The EXIF orientation of a JPEG or PNG file's contents, 1 to 8.

  Returns 1 (upright as stored) when the file has no orientation tag, is not a
  JPEG or PNG, or its metadata is damaged: a bad tag must not stop a run.
  """
  tiff = _exif_block(data)
  if tiff is None:
    return UPRIGHT
  try:
    value = _tiff_orientation(tiff)
  except struct.error:  # The block ends early.
    return UPRIGHT
  return value if 1 <= value <= 8 else UPRIGHT


def capture_date(data: bytes) -> str:
  """The day a JPEG or PNG photo was taken, "YYYY-MM-DD", from its EXIF
  DateTimeOriginal; "" when it has none or the value is not a date.

  `data` may be just the file's first bytes: the EXIF block precedes the
  image data.
  """
  tiff = _exif_block(data)
  order = {b"II": "<", b"MM": ">"}.get(tiff[:2]) if tiff else None
  if order is None:
    return ""
  try:
    (directory,) = struct.unpack_from(order + "I", tiff, 4)
    pointer = _entry(tiff, order, directory, _EXIF_DIRECTORY_TAG)
    if pointer is None:
      return ""
    (exif_directory,) = struct.unpack_from(order + "I", tiff, pointer + 8)
    entry = _entry(tiff, order, exif_directory, DATE_TAKEN_TAG)
    if entry is None:
      return ""
    (count,) = struct.unpack_from(order + "I", tiff, entry + 4)
    (offset,) = struct.unpack_from(order + "I", tiff, entry + 8)
    text = tiff[offset : offset + 10] if count > 4 else b""
    return (
        datetime.datetime.strptime(text.decode(), "%Y:%m:%d").date().isoformat()
    )
  except (struct.error, UnicodeDecodeError, ValueError):
    return ""


def _exif_block(data: bytes) -> bytes | None:
  """The TIFF block of a JPEG's or PNG's EXIF data, or None."""
  if data.startswith(image_folder.JPEG_MAGIC):
    return _jpeg_exif(data)
  if data.startswith(image_folder.PNG_MAGIC):
    return _png_exif(data)
  return None


def _jpeg_exif(data: bytes) -> bytes | None:
  """The TIFF block of the APP1 EXIF segment, which precedes the scan."""
  for marker, start, end in image_folder.jpeg_segments(data):
    if marker == _APP1 and data.startswith(_EXIF_HEADER, start):
      return data[start + len(_EXIF_HEADER) : end]
  return None


def _png_exif(data: bytes) -> bytes | None:
  """The contents of the eXIf chunk, which precedes the image data."""
  for kind, start, end in image_folder.png_chunks(data):
    if kind == b"eXIf":
      block = data[start:end]
      # Some writers keep the JPEG segment's header; the chunk is TIFF alone.
      return (
          block[len(_EXIF_HEADER) :]
          if block.startswith(_EXIF_HEADER)
          else block
      )
    if kind == b"IDAT":
      return None
  return None


def _tiff_orientation(tiff: bytes) -> int:
  """The orientation entry of a TIFF block's first directory (IFD0)."""
  order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
  if order is None:
    return UPRIGHT
  (directory,) = struct.unpack_from(order + "I", tiff, 4)
  entry = _entry(tiff, order, directory, ORIENTATION_TAG)
  if (
      entry is None
      or struct.unpack_from(order + "H", tiff, entry + 2)[0] != _SHORT
  ):
    return UPRIGHT
  return struct.unpack_from(order + "H", tiff, entry + 8)[0]


def _entry(tiff: bytes, order: str, directory: int, tag: int) -> int | None:
  """Where the 12-byte entry of `tag` starts in the directory at offset
  `directory`, or None if the directory has none."""
  (entries,) = struct.unpack_from(order + "H", tiff, directory)
  for entry in range(directory + 2, directory + 2 + 12 * entries, 12):
    if struct.unpack_from(order + "H", tiff, entry)[0] == tag:
      return entry
  return None
