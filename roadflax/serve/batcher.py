"""One model call for the requests of many app sessions at once.

Streamlit runs each browser session's script in its own thread. When twenty
people upload a photo at the same moment, twenty threads would each run the
model on one image, contending for the same cores; a `Batcher` instead hands
every request to one worker thread, which waits at most `max_wait_s` after
the first for others to join it, runs the model once on all of them (in
batches of `max_batch`, `model.in_batches`) and gives each caller its rows.
A lone request waits `max_wait_s` longer; a crowd is served in a few passes
instead of twenty interleaved ones.
"""

import collections
import dataclasses
import threading
import time
from typing import Any, Callable

import numpy as np

from roadflax.serve import model

MAX_WAIT_S = 0.05


@dataclasses.dataclass
class _Request:
  images: np.ndarray
  done: threading.Event = dataclasses.field(default_factory=threading.Event)
  result: Any = None
  error: BaseException | None = None

  def __len__(self) -> int:
    return len(self.images)


class Batcher:
  """`batcher(images)` is `model.in_batches(function, images)`, computed
  together with the concurrent calls of other threads on images of the same
  shape. Safe to call from any number of threads; an exception of the
  function reaches every caller of the batch it failed on."""

  def __init__(
      self,
      function: Callable[[np.ndarray], Any],
      *,
      max_batch: int = model.PREDICT_BATCH_SIZE,
      max_wait_s: float = MAX_WAIT_S,
  ):
    self._function = function
    self._max_batch = max_batch
    self._max_wait_s = max_wait_s
    self._pending: list[_Request] = []
    self._arrived = threading.Condition()
    # Images per model pass, the latest ones (a server runs for weeks).
    self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)
    threading.Thread(target=self._serve, daemon=True).start()

  def __call__(self, images: np.ndarray) -> Any:
    request = _Request(np.asarray(images))
    with self._arrived:
      self._pending.append(request)
      self._arrived.notify()
    request.done.wait()
    if request.error is not None:
      raise request.error
    return request.result

  def _next_batch(self) -> list[_Request]:
    """The oldest request and those of its shape that join it in time, as
    many as fill the largest power of two of rows they reach (at most
    `max_batch`): `model.in_batches` pads a pass to a power of two, and a
    pass of padding is time the others wait; the rest go in the next pass."""
    with self._arrived:
      while not self._pending:
        self._arrived.wait()
      deadline = time.monotonic() + self._max_wait_s
      while (left := deadline - time.monotonic()) > 0:
        if sum(map(len, self._alike())) >= self._max_batch:
          break
        self._arrived.wait(left)
      alike = self._alike()
      rows = min(self._max_batch, sum(map(len, alike)))
      # At least 1: an empty request still gets its pass (and in_batches'
      # error) rather than stopping the worker that every caller waits on.
      target = 1 << max(rows.bit_length() - 1, 0)
      batch, taken = [], 0
      for request in alike:
        if batch and taken + len(request) > target:
          break
        batch.append(request)
        taken += len(request)
      self._pending = [
          r for r in self._pending if all(r is not b for b in batch)
      ]
      return batch

  def _alike(self) -> list[_Request]:
    """The pending requests of the oldest one's image shape, oldest first."""
    shape = self._pending[0].images.shape[1:]
    return [r for r in self._pending if r.images.shape[1:] == shape]

  def _serve(self) -> None:
    while True:
      batch = self._next_batch()
      try:
        images = np.concatenate([r.images for r in batch])
        self.batch_sizes.append(len(images))
        outputs = model.in_batches(self._function, images, self._max_batch)
        ends = np.cumsum([len(r) for r in batch])
        for request, end in zip(batch, ends):
          start = end - len(request)
          request.result = (
              tuple(part[start:end] for part in outputs)
              if isinstance(outputs, tuple)
              else outputs[start:end]
          )
      except Exception as error:  # handed to every caller of the batch
        for request in batch:
          request.error = error
      for request in batch:
        request.done.set()
