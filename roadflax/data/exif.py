"""EXIF orientation: which way up a photo is meant to be seen.

Phones and cameras store pixels as the sensor read them and record in EXIF
tag 0x0112 how to turn them upright; browsers and image viewers apply it,
image decoders (TensorFlow's, and PIL's `Image.open`) do not. A portrait
phone photo therefore decodes lying on its side. The input pipeline turns
every image upright with this tag before anything else, in training and
prediction alike, so a model sees roads the way their photographers did.

Only the tag is read, by walking the file's segments (JPEG) or chunks (PNG)
up to the image data: microseconds, nothing decoded.
"""

import struct

from roadflax.data import image_folder

ORIENTATION_TAG = 0x0112
UPRIGHT = 1  # EXIF orientation 1: the pixels are stored upright.

_EXIF_HEADER = b"Exif\x00\x00"  # Opens a JPEG's APP1 EXIF segment.
_APP1 = 0xE1
_SHORT = 3  # TIFF field type of the orientation value.


def orientation(data: bytes) -> int:
  """The EXIF orientation of a JPEG or PNG file's contents, 1 to 8.

  Returns 1 (upright as stored) when the file has no orientation tag, is not a
  JPEG or PNG, or its metadata is damaged: a bad tag must not stop a run.
  """
  if data.startswith(image_folder.JPEG_MAGIC):
    tiff = _jpeg_exif(data)
  elif data.startswith(image_folder.PNG_MAGIC):
    tiff = _png_exif(data)
  else:
    tiff = None
  if tiff is None:
    return UPRIGHT
  try:
    value = _tiff_orientation(tiff)
  except struct.error:  # The block ends early.
    return UPRIGHT
  return value if 1 <= value <= 8 else UPRIGHT


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
  (entries,) = struct.unpack_from(order + "H", tiff, directory)
  for entry in range(directory + 2, directory + 2 + 12 * entries, 12):
    tag, kind = struct.unpack_from(order + "HH", tiff, entry)
    if tag == ORIENTATION_TAG:
      return (
          struct.unpack_from(order + "H", tiff, entry + 8)[0]
          if kind == _SHORT
          else UPRIGHT
      )
  return UPRIGHT
