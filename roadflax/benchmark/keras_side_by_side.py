"""The classifier trained in roadflax and in Keras side by side, step for step.

Both systems start from the same weights (roadflax's initial parameters are
copied into a Keras build of the same network) and see the same batches, in
the same order, from roadflax's input pipeline; each step's training loss of
both is recorded. With dropout off and the same optimiser, the two curves
must agree to float rounding: then any difference between a roadflax run and
a Keras run of the published recipe lies in the recipe (input scaling, the
learning rate, the schedule), not in the frameworks. Writes `curves.csv` and
`curves.png` to `--output`.

It runs the config's classification stage from fresh weights (no
pre-training), at a constant rate:

  python -m roadflax.benchmark.keras_side_by_side --config=configs/published.py \
      --config.data.root=/data/roads --steps=100 --output=/tmp/side_by_side
"""

import csv
import os
import sys
from typing import Any

from absl import app, flags
from ml_collections import config_flags
import numpy as np

from roadflax.errors import UserError

FLAGS = flags.FLAGS


def keras_model(
    image_size: int,
    num_classes: int,
    dropout_rate: float,
    params: dict[str, Any] | None = None,
    head_units: int = 4096,
    dtype_policy: str = "float32",
) -> Any:
  """A Keras build of roadflax's classifier (TensorFlow backend, GPUs hidden
  from TensorFlow), holding the weights in `params` when given, its layers
  under Keras's `dtype_policy` (e.g. "mixed_bfloat16")."""
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  import keras
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")
  layers = keras.layers

  def conv(name: str, features: int, size: int, **kwargs) -> Any:
    return layers.Conv2D(
        features,
        size,
        activation="relu",
        name=name,
        dtype=dtype_policy,
        **kwargs,
    )

  def dense(name: str, units: int, **kwargs) -> Any:
    return layers.Dense(units, name=name, dtype=dtype_policy, **kwargs)

  model = keras.Sequential([
      keras.Input((image_size, image_size, 3)),
      conv("conv1", 96, 11, strides=4),
      layers.MaxPooling2D(3, 2),
      conv("conv2", 256, 5, padding="same"),
      layers.MaxPooling2D(3, 2),
      conv("conv3", 384, 3, padding="same"),
      conv("conv4", 384, 3, padding="same"),
      conv("conv5", 256, 3, padding="same"),
      conv("conv6", 256, 3, padding="same"),
      layers.MaxPooling2D(3, 2),
      layers.Flatten(),
      dense("fc1", head_units, activation="relu"),
      layers.Dropout(dropout_rate),
      dense("fc2", head_units, activation="relu"),
      layers.Dropout(dropout_rate),
      dense("logits", num_classes),
  ])
  if params is None:
    return model
  trees = {**params["encoder"], **params["head"]}
  for layer in model.layers:
    if (
        layer.name in trees
    ):  # Conv2D (HWIO) and Dense (in, out) match Flax's layouts.
      layer.set_weights([
          np.asarray(trees[layer.name]["kernel"]),
          np.asarray(trees[layer.name]["bias"]),
      ])
  return model


def keras_optimizer(stage: Any) -> Any:
  """Keras's optimiser for a stage with a constant learning rate."""
  import keras

  if (
      stage.schedule != "constant"
      or stage.warmup_epochs
      or stage.weight_decay
      or stage.grad_clip_norm
      or stage.optimizer not in ("sgd", "momentum", "adam")
  ):
    raise UserError(
        "the side-by-side runs sgd, momentum or adam at a constant rate without"
        " warm-up, decay or clipping: use --config=configs/published.py or set"
        " those keys"
    )
  return {
      "sgd": lambda: keras.optimizers.SGD(stage.learning_rate),
      "momentum": lambda: keras.optimizers.SGD(
          stage.learning_rate, momentum=stage.momentum
      ),
      # optax's epsilon; Keras's default is 1e-7.
      "adam": lambda: keras.optimizers.Adam(stage.learning_rate, epsilon=1e-8),
  }[stage.optimizer]()


def classification_stage(config: Any) -> Any:
  """The first classification stage of `config`: the one the side-by-side trains."""
  return next(
      config.stages[name]
      for name in config.stage_order
      if config.stages[name].objective == "classification"
  )


def run(config: Any, steps: int) -> dict[str, list[float]]:
  """Per-step training losses of roadflax and Keras on the same batches."""
  import jax
  import keras
  import tensorflow as tf
  import optax

  from roadflax.data import batching, pipelines
  from roadflax.datasets import sources
  from roadflax.models import objectives, optimizers, roadnet
  from roadflax.models import steps as steps_lib

  stage = classification_stage(config)
  keras_tx = keras_optimizer(stage)
  dataset = sources.load_dataset(config.data)
  num_classes = len(dataset.class_names)
  model = roadnet.create_model(config.model, num_classes)
  params = roadnet.init_params(
      model, jax.random.key(config.seed), config.data.image_size
  )
  objective = objectives.objective_from_config(stage)
  tx = optimizers.create_optimizer(
      stage,
      optax.constant_schedule(stage.learning_rate),
      frozenset(objective.trees(config.model.head_input)),
  )
  state = steps_lib.create_train_state(model, params, tx)
  train_step = steps_lib.jit_train_step(
      model, objective, config.seed, freeze_encoder=False
  )

  keras_net = keras_model(
      config.data.image_size,
      num_classes,
      config.model.dropout_rate,
      jax.device_get(params),
      config.model.head_units,
  )
  keras_net.compile(
      optimizer=keras_tx,
      jit_compile=False,
      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
  )

  pipeline = pipelines.pipeline_for(dataset.splits["train"], config.data)
  per_epoch = batching.steps_per_epoch(
      len(dataset.splits["train"]), stage.batch_size
  )
  losses: dict[str, list[float]] = {"roadflax": [], "keras": []}
  for epoch in range(-(-steps // per_epoch)):
    batches = pipeline.train_batches(
        batch_size=stage.batch_size, seed=config.seed, epoch=epoch
    )
    for _, batch in zip(
        range(min(per_epoch, steps - epoch * per_epoch)), batches
    ):
      state, metrics = train_step(state, batch)
      losses["roadflax"].append(float(metrics.compute()["loss"]))
      loss = keras_net.train_on_batch(
          tf.constant(batch["image"]), tf.constant(batch["label"])
      )
      losses["keras"].append(float(np.asarray(loss).reshape(-1)[0]))
  return losses


def write_curves(
    losses: dict[str, list[float]], output: str, title: str
) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(output, exist_ok=True)
  with open(os.path.join(output, "curves.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["step", *losses])
    for step, row in enumerate(zip(*losses.values()), start=1):
      writer.writerow([step, *(f"{v:.6g}" for v in row)])
  figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
  for name, values in losses.items():
    axes.plot(range(1, len(values) + 1), values, label=name, linewidth=1.2)
  axes.set(
      xlabel="step", ylabel="training loss (batch)", title=title, yscale="log"
  )
  axes.legend()
  figure.tight_layout()
  figure.savefig(os.path.join(output, "curves.png"))
  plt.close(figure)


def main(argv: list[str]) -> None:
  del argv
  from roadflax.training import configuration

  config, output = FLAGS.config, FLAGS.output
  try:
    configuration.check_config(config)
    losses = run(config, FLAGS.steps)
  except UserError as error:
    sys.exit(f"error: {error}")
  stage = classification_stage(config)
  write_curves(
      losses,
      output,
      f"{stage.optimizer} {stage.learning_rate:g}, inputs mean"
      f" {tuple(config.data.mean)}",
  )
  first, last = (
      np.array(v) for v in zip(*[(x[0], x[-1]) for x in losses.values()])
  )
  print(
      f"wrote {output}: first loss roadflax {first[0]:.4f} keras"
      f" {first[1]:.4f}; last roadflax {last[0]:.4f} keras {last[1]:.4f}"
  )


if __name__ == "__main__":
  # Defined when run, not on import: main.py has a --config and an --output of
  # its own, and one process (the tests) imports both.
  config_flags.DEFINE_config_file(
      "config", None, "config whose first classification stage is run"
  )
  flags.DEFINE_integer("steps", 100, "training steps of each system")
  flags.DEFINE_string(
      "output", None, "folder for curves.csv and curves.png", required=True
  )
  app.run(main)
