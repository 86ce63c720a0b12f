"""A JAX profiler trace of a few train steps of each stage (`profile_steps`).

The trace goes where the stage's TensorBoard events are, as TensorBoard's
Profile tab reads it: `WORKDIR/STAGE/plugins/profile/RUN/HOST.xplane.pb`.
"""

from typing import Any, Callable

import jax
from absl import logging

# Steps of each stage's run before the trace starts: the first compiles.
WARMUP_STEPS = 2


class StepTrace:
  """Traces `num_steps` train steps, after WARMUP_STEPS, into `directory`.

  With `num_steps` 0, or on processes other than 0, it only runs the steps.
  Starting and stopping each wait once for the device to finish the steps
  dispatched before, so that the trace holds exactly the traced steps; no
  other step waits. Each traced step is annotated with its number, which the
  Profile tab's step-time views read. Used as a context manager, it stops a
  trace still running when the stage ends or fails.
  """

  def __init__(self, directory: str, num_steps: int):
    self._directory = directory
    traces = num_steps > 0 and jax.process_index() == 0
    self._stop = WARMUP_STEPS + num_steps if traces else 0
    self._count = 0  # steps run so far
    self._first_step = None  # the first traced step, while tracing

  def __enter__(self) -> "StepTrace":
    return self

  def __exit__(self, *exc_info: Any) -> None:
    if self._first_step is not None:
      self._stop_trace()

  def run(
      self,
      train_step: Callable[[Any, Any], tuple[Any, Any]],
      step: int,
      state: Any,
      batch: Any,
  ) -> tuple[Any, Any]:
    """`train_step(state, batch)`, traced if it is one of the traced steps;
    `step` is the number of steps the stage had trained before it."""
    if self._count == WARMUP_STEPS and self._count < self._stop:
      jax.block_until_ready(state)
      jax.profiler.start_trace(self._directory)
      self._first_step = step
    self._count += 1
    if self._first_step is None:
      return train_step(state, batch)
    with jax.profiler.StepTraceAnnotation("train", step_num=step):
      result = train_step(state, batch)
    if self._count == self._stop:
      jax.block_until_ready(result)
      self._stop_trace()
    return result

  def _stop_trace(self) -> None:
    jax.profiler.stop_trace()
    logging.info(
        "profile of train steps %d-%d written to %s/plugins/profile",
        self._first_step + 1,
        self._first_step + self._count - WARMUP_STEPS,
        self._directory,
    )
    self._first_step = None
