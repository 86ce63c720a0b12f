"""Model speed: the classifier's training and inference steps in JAX, against
a Keras build of the same network measured in the same run, and how much of
the device's peak the JAX steps reach.

Part of `python -m roadflax.benchmark` (`--suite=model` runs it alone). Each
system runs in a process of its own (`benchmark.py` starts them), on one fixed
batch of random images already in memory, so the figures are the model's
alone; the input pipeline has its own suite. Each trains the classifier
(encoder + head, 47,349,379 parameters at 224x224 and 3 classes) with plain
SGD on softmax cross-entropy:

  jax float32, jax bfloat16
         roadflax's own jitted train step (`steps.jit_train_step`, donated
         state, the decoder held fixed as in a classification stage) and
         predict step, computing in that dtype (`model.dtype`; parameters
         float32), on JAX's default device; one host sync after the timed
         steps. Also per image: the network's FLOPs in each step (XLA's
         cost analysis of the compiled step, in float32), the FLOP/s reached,
         and the model FLOP utilisation (MFU) against the peak of a matrix
         product in that dtype measured in the same process and, on a known
         accelerator, against the vendor's peak (`peaks`).
  keras float32, keras mixed_bfloat16
         `keras.Sequential` with the same layers and parameter count (checked),
         TensorFlow backend on the CPU, `train_on_batch` / `predict_on_batch`,
         under that Keras dtype policy (mixed_bfloat16: float32 weights,
         bfloat16 compute, what a Keras user picks on a CPU with bfloat16
         units). XLA is off (`jit_compile=False`): TensorFlow's oneDNN
         kernels are its fast path on CPUs.
  runtime NAME
         inference only: each installed runtime that can stand behind
         roadflax's predictions (`export.choice.RUNTIMES`), its file made
         from the same network with fresh weights (int8 files calibrated on
         the random batch: their speed, not their accuracy, is measured
         here; `--mode=runtimes` measures both on a trained workdir), fed
         uint8 pixels as `roadflax.load` feeds it.

Each is timed over `steps` steps after two warm-up steps (which compile),
three times; the median of the three is reported. Ratios are given to both
Keras systems.
"""

import dataclasses
import statistics
import tempfile
import time
from typing import Any, Callable

import numpy as np

from roadflax.benchmark import peaks

REPEATS = 3
WARMUP_STEPS = 2
NUM_CLASSES = 3
JAX_DTYPES = ("float32", "bfloat16")
# "FRAMEWORK DTYPE" (or "runtime NAME"); the Keras systems are the
# references of the ratios.
REFERENCE = "keras float32"
BFLOAT16_REFERENCE = "keras mixed_bfloat16"
REFERENCES = (REFERENCE, BFLOAT16_REFERENCE)
RUNTIME_PREFIX = "runtime "
PHASES = ("train", "infer")


def systems() -> tuple[str, ...]:
  """The systems this environment can run: JAX's, Keras's, and each
  installed runtime (inference only)."""
  from roadflax.export import choice

  return (
      tuple(f"jax {dtype}" for dtype in JAX_DTYPES)
      + REFERENCES
      + tuple(
          RUNTIME_PREFIX + name
          for name in choice.RUNTIMES
          if name != "jax" and choice.installed(name)
      )
  )


def measure(
    system: str, *, image_size: int, batch_size: int, steps: int
) -> dict[str, Any]:
  """Training and inference images/s of one system, in this process, and
  for JAX its FLOPs per image, FLOP/s and utilisation."""
  framework, dtype = system.split()
  rng = np.random.default_rng(0)
  images = rng.standard_normal(
      (batch_size, image_size, image_size, 3), np.float32
  )
  labels = rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)
  if framework == "runtime":
    pixels = rng.integers(0, 256, images.shape).astype(np.uint8)
    with tempfile.TemporaryDirectory() as directory:
      infer, figures = _runtime_steps(pixels, dtype, directory)
      figures["train_images_per_second"] = None
      figures["infer_images_per_second"] = batch_size / _seconds_per_step(
          infer, steps
      )
    return figures
  if framework == "keras":
    train, infer, figures = _keras_steps(images, labels, dtype)
  else:
    train, infer, figures = _jax_steps(images, labels, dtype)
  for phase, run_steps in zip(PHASES, (train, infer)):
    figures[f"{phase}_images_per_second"] = batch_size / _seconds_per_step(
        run_steps, steps
    )
  if framework == "jax":
    _add_utilisation(figures, dtype)
  return figures


def _seconds_per_step(run_steps: Callable[[int], None], steps: int) -> float:
  run_steps(WARMUP_STEPS)
  timings = []
  for _ in range(REPEATS):
    start = time.perf_counter()
    run_steps(steps)
    timings.append((time.perf_counter() - start) / steps)
  return statistics.median(timings)


def _jax_steps(images: np.ndarray, labels: np.ndarray, dtype: str):
  """roadflax's classification train step and predict step, and their FLOPs
  per image (XLA's cost analysis of the compiled steps)."""
  import jax
  import jax.numpy as jnp
  import optax

  from roadflax.configs import default
  from roadflax.models import objectives, optimizers, roadnet, steps

  config = default.get_config()
  config.model.dtype = dtype
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
  batch = jax.device_put({"image": images, "label": labels})
  train_step = steps.jit_train_step(
      model, objective, seed=0, freeze_encoder=False
  )
  predict_step = steps.jit_predict_step(model)

  def train(count: int) -> None:
    nonlocal state
    for _ in range(count):
      state, _ = train_step(state, batch)
    jax.block_until_ready(state)

  def infer(count: int) -> None:
    jax.block_until_ready(
        [predict_step(state.params, batch["image"]) for _ in range(count)]
    )

  # The network's FLOPs, the same for every dtype: counted in float32 (XLA
  # counts each cast as FLOPs too) with conv1 as a plain convolution (it
  # counts the body of PatchConv's loop over the images, on CPUs, once).
  counted = model.clone(conv1_patches=False, dtype=jnp.float32)
  lowered = {
      "train": (
          steps.jit_train_step(
              counted, objective, seed=0, freeze_encoder=False
          ).lower(state, batch)
      ),
      "infer": steps.jit_predict_step(counted).lower(params, batch["image"]),
  }
  figures = {
      "parameters": (
          roadnet.count_params(params["encoder"])
          + roadnet.count_params(params["head"])
      ),
      "backend": jax.default_backend(),
      "device_kind": jax.devices()[0].device_kind,
  }
  for phase, step in lowered.items():
    cost = step.compile().cost_analysis()
    figures[f"{phase}_flops_per_image"] = cost["flops"] / len(images)
  return train, infer, figures


def _add_utilisation(figures: dict[str, Any], dtype: str) -> None:
  """FLOP/s of each step and its share of the measured and vendor peaks."""
  measured = peaks.measured_peak(dtype)
  vendor = peaks.vendor_peak(figures["device_kind"], dtype)
  figures["measured_peak_flops"] = measured
  figures["vendor_peak_flops"] = vendor
  for phase in PHASES:
    achieved = (
        figures[f"{phase}_flops_per_image"]
        * figures[f"{phase}_images_per_second"]
    )
    figures[f"{phase}_flops_per_second"] = achieved
    figures[f"{phase}_mfu"] = achieved / measured
    figures[f"{phase}_vendor_mfu"] = achieved / vendor if vendor else None


def _keras_steps(images: np.ndarray, labels: np.ndarray, policy: str):
  """The same classifier in Keras under dtype `policy`, compiled as a Keras
  user would."""
  from roadflax.benchmark import keras_side_by_side

  # Dropout as in roadflax's head; Keras's own initial weights.
  model = keras_side_by_side.keras_model(
      images.shape[1], NUM_CLASSES, dropout_rate=0.5, dtype_policy=policy
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

  return train, infer, {"parameters": model.count_params()}


def _runtime_steps(pixels: np.ndarray, runtime: str, directory: str):
  """Inference of the classifier through `runtime`, its file written to
  `directory` from fresh weights."""
  import jax

  from roadflax.configs import default
  from roadflax.data.preprocess import Preprocessing
  from roadflax.export import choice, converters, runtimes
  from roadflax.export.trained import TrainedClassifier
  from roadflax.models import roadnet

  config = default.get_config()
  config.data.image_size = pixels.shape[1]
  model = roadnet.create_model(config.model, NUM_CLASSES)
  params = roadnet.init_params(model, jax.random.key(0), pixels.shape[1])
  classifier = TrainedClassifier(
      params=params,
      model=model,
      class_names=tuple(str(c) for c in range(NUM_CLASSES)),
      preprocessing=Preprocessing.from_config(config.data),
      workdir=directory,
      stage="classify",
      step=0,
  )
  format_name, engine = choice.RUNTIMES[runtime]
  batch = converters.convert(format_name, classifier, directory, pixels)
  export = runtimes.open_export(
      directory,
      {
          "format": format_name,
          "file": runtimes.MODEL_FILES[format_name],
          "class_names": list(classifier.class_names),
          "preprocessing": dataclasses.asdict(classifier.preprocessing),
          "input": {"shape": [batch, *pixels.shape[1:]]},
      },
      engine,
  )

  def infer(count: int) -> None:
    for _ in range(count):
      export.probabilities(pixels)

  parameters = roadnet.count_params(params["encoder"]) + roadnet.count_params(
      params["head"]
  )
  return infer, {"parameters": parameters}


def speed_ratios(
    figures: dict[str, dict[str, Any]], reference: str = REFERENCE
) -> dict[str, dict[str, float | None]]:
  """Each system's train and inference images/s over `reference`'s (None
  for a phase the system does not run)."""
  base = figures[reference]
  return {
      system: {
          phase: (
              None
              if f[f"{phase}_images_per_second"] is None
              else f[f"{phase}_images_per_second"]
              / base[f"{phase}_images_per_second"]
          )
          for phase in PHASES
      }
      for system, f in figures.items()
  }


def table(
    figures: dict[str, dict[str, Any]], *, image_size: int, batch_size: int
) -> str:
  """Markdown: each system's images/s and its ratios to both Keras
  systems; then for JAX per step its GFLOP per image, TFLOP/s and MFU."""
  ratios = {
      reference: speed_ratios(figures, reference)
      for reference in REFERENCES
      if reference in figures
  }
  lines = [
      "| system | train images/s | "
      + " | ".join(f"vs {reference}" for reference in ratios)
      + " | inference images/s | "
      + " | ".join(f"vs {reference}" for reference in ratios)
      + " |",
      "|---|" + "---:|" * (2 + 2 * len(ratios)),
  ]
  for system, f in figures.items():
    cells = []
    for phase in PHASES:
      speed = f[f"{phase}_images_per_second"]
      cells.append("—" if speed is None else f"{speed:.1f}")
      cells += [
          "—" if speed is None else f"{by[system][phase]:.2f}x"
          for by in ratios.values()
      ]
    lines.append(f"| {system} | " + " | ".join(cells) + " |")
  lines += [
      "",
      (
          "| system | step | GFLOP/image | TFLOP/s | matmul peak | MFU |"
          " vendor peak | MFU (vendor) |"
      ),
      "|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  for system, f in figures.items():
    if "measured_peak_flops" not in f:
      continue
    vendor = f["vendor_peak_flops"]
    for phase in PHASES:
      vendor_mfu = f[f"{phase}_vendor_mfu"]
      lines.append(
          f"| {system} | {phase} | {f[f'{phase}_flops_per_image'] / 1e9:.3f} |"
          f" {f[f'{phase}_flops_per_second'] / 1e12:.3g} |"
          f" {f['measured_peak_flops'] / 1e12:.3g} | {f[f'{phase}_mfu']:.1%} |"
          f" {'—' if vendor is None else f'{vendor / 1e12:.3g}'} |"
          f" {'—' if vendor_mfu is None else f'{vendor_mfu:.1%}'} |"
      )
  jax_figures = next(f for f in figures.values() if "backend" in f)
  lines += [
      "",
      (
          f"classifier of {jax_figures['parameters']:,} parameters at"
          f" {image_size}x{image_size}, batch {batch_size}; JAX on"
          f" {jax_figures['device_kind']} ({jax_figures['backend']}), Keras and"
          " the runtimes on the CPU. FLOPs: XLA's cost analysis of the"
          " compiled step in float32; peaks in TFLOP/s: an n x n matrix"
          " product timed here in the step's dtype, and the vendor's dense"
          " peak of a known accelerator; MFU = TFLOP/s / peak."
      ),
  ]
  return "\n".join(lines) + "\n"


def check_same_model(figures: dict[str, dict[str, Any]]) -> None:
  """Raises if the systems did not build networks of the same size."""
  counts = {system: f["parameters"] for system, f in figures.items()}
  if len(set(counts.values())) != 1:
    raise RuntimeError(f"the benchmarked models differ in size: {counts}")
