"""A video's frames, sampled in time, decoded with PyAV.

    with VideoFrames("drive.mp4", every=0.25) as video:
      for sample in video:          # Sample(time_s, frame, pixels)
        ...
      video.warning                 # None, or why it stopped early

PyAV carries FFmpeg and its codecs, so any container and codec FFmpeg reads
works. Every frame is decoded (a codec cannot skip to arbitrary frames), but
only the sampled ones are converted to RGB: the first frame at or after each
multiple of `every` seconds. Times count from the video stream's start.
Frames are turned upright as the video's display matrix says (phones store
portrait videos lying down, as they do photographs).

A file that cannot be opened as a video is a one-line `UserError`. A stream
that breaks off (a corrupt packet, a file cut short) keeps the frames read
before that point, and `warning` names the time it stopped at.
"""

import dataclasses
import math
import os
from typing import Iterator

import av
import numpy as np

from roadflax.errors import UserError

# What PyAV is asked to read when a folder is given (any file named
# explicitly with one of these is taken as a video too).
VIDEO_EXTENSIONS = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".m2ts",
    ".wmv",
    ".flv",
    ".3gp",
)
# A stream that ends more than this many seconds (plus a frame) before the
# duration its header declares was cut short; the slack covers an audio track
# that runs on a little after the picture.
SHORT_BY_S = 1.0
# Frame times are rationals turned into floats: a frame this close before a
# sampling time counts as at it.
_TIME_SLACK_S = 1e-6


def check_every(every: float) -> None:
  """Raises UserError unless `every` is a sampling interval."""
  if not every > 0:
    raise UserError(f"--every={every}: give a sampling interval above 0 s")


def is_video(path: str) -> bool:
  return path.lower().endswith(VIDEO_EXTENSIONS)


@dataclasses.dataclass(frozen=True)
class Sample:
  """One sampled frame."""

  time_s: float  # seconds from the video's start
  frame: int  # index of the decoded frame, from 0
  pixels: np.ndarray  # uint8 RGB [H, W, 3], upright


class VideoFrames:
  """The sampled frames of one video; a context manager that closes it."""

  def __init__(self, path: str, every: float):
    """Opens `path` and reads its header.

    Raises:
      UserError: `every` is not positive, or `path` is not a video PyAV can
        open (or holds no video stream).
    """
    check_every(every)
    self.path, self.every = path, every
    try:
      self._container = av.open(path)
    except av.FFmpegError as error:
      raise UserError(
          f"{path} cannot be read as a video ({_reason(error)}): it is not"
          " one, or was cut short before its index"
      ) from None
    if not self._container.streams.video:
      self._container.close()
      raise UserError(f"{path} holds no video stream")
    self._stream = self._container.streams.video[0]
    self._stream.codec_context.thread_type = "AUTO"
    rate = self._stream.average_rate or self._stream.guessed_rate
    self.fps = float(rate) if rate else 0.0
    self.declared_s = _declared_duration(self._container, self._stream)
    self.read_s = 0.0  # the end of the last frame decoded
    self.frames_read = 0
    self.warning: str | None = None

  def __enter__(self) -> "VideoFrames":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def close(self) -> None:
    self._container.close()

  def __iter__(self) -> Iterator[Sample]:
    """Decodes the stream, yielding the sampled frames; sets `warning`."""
    next_s, origin = 0.0, _origin_s(self._stream)
    frame_s = 1 / self.fps if self.fps else 0.0
    try:
      for index, frame in enumerate(self._container.decode(self._stream)):
        if frame.time is None:
          time_s = index * frame_s
        else:
          origin = frame.time if origin is None else origin
          time_s = frame.time - origin
        self.frames_read, self.read_s = index + 1, time_s + frame_s
        if time_s + _TIME_SLACK_S >= next_s:
          next_s = (math.floor(time_s / self.every + _TIME_SLACK_S) + 1) * (
              self.every
          )
          yield Sample(time_s, index, _upright(frame))
    except av.FFmpegError as error:
      self.warning = (
          f"{os.path.basename(self.path)}: the video breaks off at"
          f" {self.read_s:.2f} s ({_reason(error)}); kept the"
          f" {self.frames_read} frames before it"
      )
      return
    if self.declared_s and self.read_s < self.declared_s - SHORT_BY_S - frame_s:
      self.warning = (
          f"{os.path.basename(self.path)}: the video ends at"
          f" {self.read_s:.2f} s of the {self.declared_s:.2f} s its header"
          f" declares (cut short?); kept the {self.frames_read} frames"
          " before it"
      )


def _reason(error: av.FFmpegError) -> str:
  """FFmpeg's words for an error, without its number and file name."""
  reason = getattr(error, "strerror", None) or str(error)
  return reason[:1].lower() + reason[1:]


def _origin_s(stream: av.video.stream.VideoStream) -> float | None:
  """The stream's start time, or None to take its first frame's."""
  if stream.start_time is None or stream.time_base is None:
    return None
  return float(stream.start_time * stream.time_base)


def _declared_duration(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
) -> float | None:
  """The longest duration the header declares, in seconds (None if none).

  Formats declare it differently (AVI as a frame count, Matroska only for the
  whole file), and a cut-short file still carries its full header.
  """
  declared = []
  if stream.duration and stream.time_base:
    declared.append(float(stream.duration * stream.time_base))
  if stream.frames and stream.average_rate:
    declared.append(stream.frames / float(stream.average_rate))
  if container.duration:
    declared.append(container.duration / av.time_base)
  return max(declared, default=None)


def _upright(frame: av.VideoFrame) -> np.ndarray:
  """The frame as uint8 RGB [H, W, 3], turned as its display matrix says
  (`rotation` is counterclockwise, as `np.rot90` turns)."""
  pixels = frame.to_ndarray(format="rgb24")
  turns = round(frame.rotation / 90) % 4
  return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels
