"""The per-layer table of a RoadNet that `--mode=summary` prints: each layer's
output shape, parameter shapes and count, in data-flow order, and the totals
of each tree, all from shapes (nothing is computed)."""

from typing import Any

import jax
import jax.numpy as jnp

from roadflax.models import roadnet


def layer_table(model: roadnet.RoadNet, image_size: int) -> str:
  """A per-layer table: output shape, parameter shapes and counts, and totals."""
  roadnet.check_image_size(image_size, image_size)
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  params = variables["params"]
  _, state = jax.eval_shape(
      lambda v, x: model.apply(
          v, x, capture_intermediates=True, mutable=["intermediates"]
      ),
      variables,
      images,
  )
  outputs = _call_outputs(state["intermediates"])
  rows = [("layer", "output", "parameters", "count")]
  for module, layer in sorted(
      _layers(params).items(), key=lambda kv: _LAYER_ORDER.index(kv[0])
  ):
    shapes = ", ".join(
        f"{name} {tuple(leaf.shape)}" for name, leaf in layer.items()
    )
    rows.append((
        module,
        outputs.get(module, ""),
        shapes,
        f"{roadnet.count_params(layer):,}",
    ))
  widths = [max(len(row[i]) for row in rows) for i in range(4)]
  lines = [
      "  ".join(
          cell.ljust(w) if i < 3 else cell.rjust(w)
          for i, (cell, w) in enumerate(zip(row, widths))
      )
      for row in rows
  ]
  lines.insert(1, "-" * len(lines[0]))
  totals = {
      name: roadnet.count_params(params[name])
      for name in ("encoder", "decoder", "head")
  }
  totals["classifier (encoder + head)"] = totals["encoder"] + totals["head"]
  totals["total"] = roadnet.count_params(params)
  lines.append("-" * len(lines[0]))
  lines += [f"{name}: {count:,}" for name, count in totals.items()]
  return (
      f"RoadNet at {image_size}x{image_size}x3, {model.num_classes} classes, "
      f"head_input={model.head_input}\n"
      + "\n".join(lines)
  )


def _flatten(
    tree: dict, prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


def _call_outputs(intermediates: dict) -> dict[str, str]:
  """{'encoder/conv1': '(1, 54, 54, 96)', ...} from captured `__call__` outputs."""
  outputs = {}
  for path, value in _flatten(intermediates).items():
    if path[-1] == "__call__" and not isinstance(value[0], tuple):
      outputs["/".join(path[:-1])] = str(tuple(value[0].shape))
  return outputs


def _layers(params: dict) -> dict[str, dict[str, Any]]:
  """{'encoder/conv1': {'kernel': ..., 'bias': ...}, ...}."""
  layers: dict[str, dict[str, Any]] = {}
  for path, leaf in _flatten(params).items():
    layers.setdefault("/".join(path[:-1]), {})[path[-1]] = leaf
  return layers


# Data-flow order of the layers, for reading a summary top to bottom.
_LAYER_ORDER = tuple(
    [f"encoder/conv{i}" for i in range(1, 7)]
    + [f"decoder/deconv{i}" for i in range(6, 0, -1)]
    + ["head/fc1", "head/fc2", "head/logits"]
)
