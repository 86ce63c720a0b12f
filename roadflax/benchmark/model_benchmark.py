"""Model speed: the classifier's training and inference steps in JAX, against
a Keras build of the same network measured in the same run.

Part of `python -m roadflax.benchmark` (`--suite=model` runs it alone). Each
system runs in a process of its own (`benchmark.py` starts them), on one fixed
batch of random images already in memory, so the figures are the model's
alone; the input pipeline has its own suite. Both train the classifier
(encoder + head, 47,349,379 parameters at 224x224 and 3 classes) with plain
SGD on softmax cross-entropy, in float32:

  jax    roadflax's own jitted train step (`steps.jit_train_step`, donated
         state, the decoder held fixed as in a classification stage) and
         predict step; one host sync after the timed steps.
  keras  `keras.Sequential` with the same layers and parameter count (checked),
         TensorFlow backend, `train_on_batch` / `predict_on_batch`. XLA is off
         (`jit_compile=False`): TensorFlow's oneDNN kernels are its fast path
         on CPUs.

Each is timed over `steps` steps after two warm-up steps (which compile),
three times; the median of the three is reported.
"""

import statistics
import time
from typing import Any, Callable

import numpy as np

REPEATS = 3
WARMUP_STEPS = 2
NUM_CLASSES = 3
SYSTEMS = ("jax", "keras")


def measure(
    system: str, *, image_size: int, batch_size: int, steps: int
) -> dict[str, Any]:
  """Training and inference images/s of one system, in this process."""
  rng = np.random.default_rng(0)
  images = rng.standard_normal(
      (batch_size, image_size, image_size, 3), np.float32
  )
  labels = rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)
  build = {"jax": _jax_steps, "keras": _keras_steps}[system]
  train, infer, parameters = build(images, labels)
  return {
      "parameters": parameters,
      "train_images_per_second": batch_size / _seconds_per_step(train, steps),
      "infer_images_per_second": batch_size / _seconds_per_step(infer, steps),
  }


def _seconds_per_step(run_steps: Callable[[int], None], steps: int) -> float:
  run_steps(WARMUP_STEPS)
  timings = []
  for _ in range(REPEATS):
    start = time.perf_counter()
    run_steps(steps)
    timings.append((time.perf_counter() - start) / steps)
  return statistics.median(timings)


def _jax_steps(images: np.ndarray, labels: np.ndarray):
  """roadflax's classification train step and predict step."""
  import jax
  import optax

  from roadflax.configs import default
  from roadflax.models import objectives, optimizers, roadnet, steps

  config = default.get_config()
  stage = default.stage(
      optimizer="sgd", learning_rate=0.1
  )  # as the Keras build
  model = roadnet.create_model(config.model, NUM_CLASSES)
  params = roadnet.init_params(model, jax.random.key(0), images.shape[1])
  objective = objectives.objective_from_config(stage)
  tx = optimizers.create_optimizer(
      stage,
      optax.constant_schedule(stage.learning_rate),
      frozenset(objective.trees(config.model.head_input)),
  )
  state = steps.create_train_state(model, params, tx)
  train_step = steps.jit_train_step(
      model, objective, seed=0, freeze_encoder=False
  )
  predict_step = steps.jit_predict_step(model)
  batch = jax.device_put({"image": images, "label": labels})

  def train(count: int) -> None:
    nonlocal state
    for _ in range(count):
      state, _ = train_step(state, batch)
    jax.block_until_ready(state)

  def infer(count: int) -> None:
    jax.block_until_ready(
        [predict_step(state.params, batch["image"]) for _ in range(count)]
    )

  parameters = roadnet.count_params(params["encoder"]) + roadnet.count_params(
      params["head"]
  )
  return train, infer, parameters


def _keras_steps(images: np.ndarray, labels: np.ndarray):
  """The same classifier in Keras, compiled as a Keras user would."""
  from roadflax.benchmark import keras_side_by_side
  # Dropout as in roadflax's head; Keras's own initial weights.
  model = keras_side_by_side.keras_model(
      images.shape[1], NUM_CLASSES, dropout_rate=0.5
  )
  import keras  # after keras_model has chosen the TensorFlow backend

  model.compile(
      optimizer=keras.optimizers.SGD(0.1),
      jit_compile=False,
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
  )

  def train(count: int) -> None:
    for _ in range(count):
      model.train_on_batch(images, labels)

  def infer(count: int) -> None:
    for _ in range(count):
      model.predict_on_batch(images)

  return train, infer, model.count_params()


def table(
    figures: dict[str, dict[str, Any]], *, image_size: int, batch_size: int
) -> str:
  """Markdown: each system's images/s and its ratio to Keras."""
  reference = figures["keras"]
  lines = [
      "| system | train images/s | vs Keras | inference images/s | vs Keras |",
      "|---|---:|---:|---:|---:|",
  ]
  for system, f in figures.items():
    train, infer = f["train_images_per_second"], f["infer_images_per_second"]
    lines.append(
        f"| {system} | {train:.1f} | "
        f"{train / reference['train_images_per_second']:.2f}x | {infer:.1f} | "
        f"{infer / reference['infer_images_per_second']:.2f}x |"
    )
  lines.append("")
  lines.append(
      f"classifier of {figures['jax']['parameters']:,} parameters at "
      f"{image_size}x{image_size}, batch {batch_size}, float32"
  )
  return "\n".join(lines) + "\n"


def check_same_model(figures: dict[str, dict[str, Any]]) -> None:
  """Raises if the systems did not build networks of the same size."""
  counts = {system: f["parameters"] for system, f in figures.items()}
  if len(set(counts.values())) != 1:
    raise RuntimeError(f"the benchmarked models differ in size: {counts}")
