"""The training step's gap to TensorFlow, per layer and per pass.

Each convolution and dense layer of the classifier, at the shapes it has in
a training step (batch 32, 224 px by default), is timed alone in three
passes — forward, the gradient of its input, the gradient of its weights —
in XLA (jitted JAX, the arithmetic roadflax's train step compiles to) and in
TensorFlow's oneDNN kernels (`tf.function` without XLA, what Keras runs on a
CPU), in float32 and, for TensorFlow, in bfloat16 (what Keras's
`mixed_bfloat16` runs). conv1's input gradient is never needed (its input is
the image) and is not timed; conv1 is timed as a plain convolution, which
on CPUs roadflax's train step replaces by a per-image patch matrix
(`models.fast_layers.PatchConv`, faster there). Median of `--repeats` calls after a warm-up:

  python -m roadflax.benchmark.layer_profile [--batch_size=32] \\
      [--image_size=224] [--output=layer_profile.json]
"""

import statistics
import sys
import time
from typing import Any, Callable

from absl import app, flags

FLAGS = flags.FLAGS
PASSES = ("forward", "input gradient", "weight gradient")


def layers(image_size: int) -> list[dict[str, Any]]:
  """Each layer's name, kind and shapes in the classifier at `image_size`."""
  from roadflax.models import roadnet

  sizes = roadnet.feature_sizes(image_size)

  def conv(name, size, k, stride, cin, cout, padding) -> dict[str, Any]:
    return dict(
        name=name,
        kind="conv",
        input=(size, size, cin),
        kernel=(k, k, cin, cout),
        stride=stride,
        padding=padding,
    )

  def dense(name, units_in, units_out) -> dict[str, Any]:
    return dict(
        name=name, kind="dense", input=(units_in,), kernel=(units_in, units_out)
    )

  flat = sizes.pool5 * sizes.pool5 * 256
  return [
      conv("conv1", image_size, 11, 4, 3, 96, "VALID"),
      conv("conv2", sizes.pool1, 5, 1, 96, 256, "SAME"),
      conv("conv3", sizes.pool2, 3, 1, 256, 384, "SAME"),
      conv("conv4", sizes.pool2, 3, 1, 384, 384, "SAME"),
      conv("conv5", sizes.pool2, 3, 1, 384, 256, "SAME"),
      conv("conv6", sizes.pool2, 3, 1, 256, 256, "SAME"),
      dense("fc1", flat, 4096),
      dense("fc2", 4096, 4096),
  ]


def _median_ms(call: Callable[[], Any], repeats: int) -> float:
  call()
  timings = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    timings.append(time.perf_counter() - start)
  return 1000 * statistics.median(timings)


def jax_passes(layer: dict[str, Any], batch: int, repeats: int) -> dict:
  """ms of each pass of `layer` in jitted JAX, float32."""
  import jax
  import jax.numpy as jnp

  rng = jax.random.key(0)
  x = jax.random.normal(rng, (batch, *layer["input"]), jnp.float32)
  w = jax.random.normal(rng, layer["kernel"], jnp.float32) * 0.01
  if layer["kind"] == "conv":
    stride = (layer["stride"],) * 2

    def forward(x, w):
      return jax.lax.conv_general_dilated(
          x,
          w,
          stride,
          layer["padding"],
          dimension_numbers=("NHWC", "HWIO", "NHWC"),
      )

  else:

    def forward(x, w):
      return x @ w

  y = jax.jit(forward)(x, w)
  g = jnp.ones_like(y)
  fns = {
      "forward": (jax.jit(forward), (x, w)),
      "input gradient": (
          jax.jit(lambda x, w, g: jax.vjp(lambda x: forward(x, w), x)[1](g)[0]),
          (x, w, g),
      ),
      "weight gradient": (
          jax.jit(lambda x, w, g: jax.vjp(lambda w: forward(x, w), w)[1](g)[0]),
          (x, w, g),
      ),
  }
  return {
      name: _median_ms(
          lambda fn=fn, args=args: jax.block_until_ready(fn(*args)), repeats
      )
      for name, (fn, args) in fns.items()
      if not (layer["name"] == "conv1" and name == "input gradient")
  }


def tf_passes(
    layer: dict[str, Any], batch: int, repeats: int, dtype: str
) -> dict:
  """ms of each pass of `layer` in TensorFlow (oneDNN, no XLA)."""
  import tensorflow as tf

  tf.config.set_visible_devices([], "GPU")
  kind = getattr(tf, dtype)
  x = tf.cast(tf.random.normal((batch, *layer["input"])), kind)
  w = tf.cast(tf.random.normal(layer["kernel"]) * 0.01, kind)
  if layer["kind"] == "conv":
    strides = [1, layer["stride"], layer["stride"], 1]
    forward = tf.function(
        lambda x, w: tf.nn.conv2d(x, w, strides, layer["padding"]),
        jit_compile=False,
    )
    g = tf.ones_like(forward(x, w))
    input_gradient = tf.function(
        lambda w, g: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(x),
            filter=w,
            out_backprop=g,
            strides=strides,
            padding=layer["padding"],
        ),
        jit_compile=False,
    )
    weight_gradient = tf.function(
        lambda x, g: tf.raw_ops.Conv2DBackpropFilter(
            input=x,
            filter_sizes=tf.shape(w),
            out_backprop=g,
            strides=strides,
            padding=layer["padding"],
        ),
        jit_compile=False,
    )
  else:
    forward = tf.function(lambda x, w: x @ w, jit_compile=False)
    g = tf.ones_like(forward(x, w))
    input_gradient = tf.function(
        lambda w, g: tf.matmul(g, w, transpose_b=True), jit_compile=False
    )
    weight_gradient = tf.function(
        lambda x, g: tf.matmul(x, g, transpose_a=True), jit_compile=False
    )
  calls = {
      "forward": lambda: forward(x, w).numpy(),
      "input gradient": lambda: input_gradient(w, g).numpy(),
      "weight gradient": lambda: weight_gradient(x, g).numpy(),
  }
  return {
      name: _median_ms(call, repeats)
      for name, call in calls.items()
      if not (layer["name"] == "conv1" and name == "input gradient")
  }


def profile(image_size: int, batch: int, repeats: int) -> dict[str, Any]:
  """Every layer's passes in JAX float32, TF float32 and TF bfloat16."""
  rows = []
  for layer in layers(image_size):
    times = {
        "jax float32": jax_passes(layer, batch, repeats),
        "tf float32": tf_passes(layer, batch, repeats, "float32"),
        "tf bfloat16": tf_passes(layer, batch, repeats, "bfloat16"),
    }
    for name in times["jax float32"]:
      rows.append({
          "layer": layer["name"],
          "pass": name,
          **{system: t[name] for system, t in times.items()},
      })
  totals = {
      system: sum(row[system] for row in rows)
      for system in ("jax float32", "tf float32", "tf bfloat16")
  }
  return {
      "image_size": image_size,
      "batch_size": batch,
      "repeats": repeats,
      "rows": rows,
      "totals_ms": totals,
  }


def table(result: dict[str, Any]) -> str:
  """Markdown: per layer and pass, ms in each system and JAX's ratio to TF."""
  lines = [
      (
          "| layer | pass | JAX float32 ms | TF float32 ms | JAX / TF float32 |"
          " TF bfloat16 ms | JAX float32 / TF bfloat16 |"
      ),
      "|---|---|---:|---:|---:|---:|---:|",
  ]
  for row in [
      *result["rows"],
      {"layer": "all", "pass": "sum", **result["totals_ms"]},
  ]:
    jax_ms, tf_ms, bf16_ms = (
        row["jax float32"],
        row["tf float32"],
        row["tf bfloat16"],
    )
    lines.append(
        f"| {row['layer']} | {row['pass']} | {jax_ms:.1f} | {tf_ms:.1f} |"
        f" {jax_ms / tf_ms:.2f}x | {bf16_ms:.1f} | {jax_ms / bf16_ms:.2f}x |"
    )
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  del argv
  from roadflax.results import records

  result = profile(FLAGS.image_size, FLAGS.batch_size, FLAGS.repeats)
  print(table(result))
  if FLAGS.output:
    records.write(
        FLAGS.output,
        result,
        "python -m "
        + " ".join(["roadflax.benchmark.layer_profile", *sys.argv[1:]]),
    )


if __name__ == "__main__":
  flags.DEFINE_integer("image_size", 224, "The classifier's input size.")
  flags.DEFINE_integer("batch_size", 32, "Images per pass.")
  flags.DEFINE_integer("repeats", 5, "Timed calls per pass (median).")
  flags.DEFINE_string("output", "", "A results file to write (JSON).")
  app.run(main)
