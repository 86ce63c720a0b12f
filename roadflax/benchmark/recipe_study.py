"""Which training recipe learns road surfaces rather than photographs:
configs/default.py with one change at a time, each trained over several seeds
on a folder whose test photographs were never seen in training.

  python -m roadflax.benchmark.recipe_study --root=/tmp/roads \\
      --variants=published_augment,surface_augment --seeds=0,1,2 \\
      --image_size=96 \\
      --output=docs/results/recipe_study.json

A variant is a named set of config overrides (`VARIANTS`) on top of
`configs/default.py` (and of `--set` overrides shared by every variant, such
as a shorter schedule to fit a CPU). Each run trains both stages into
WORKDIR/VARIANT/seedN and reads its classification report: test accuracy,
the test ECE before and after temperature scaling, and the wall time. The
output JSON holds every run and each variant's mean and spread, with the
command, the machine and the commit; a markdown table is written beside it.
"""

import argparse
import ast
import json
import os
import statistics
import sys
import time
from typing import Any

from roadflax.configs import default
from roadflax.files import atomic_write_json, atomic_write_text
from roadflax.results import records

# Augmentation for texture at unknown scale, angle and light (the study's
# candidate; configs/default.py takes what the measurements support).
SURFACE_AUGMENT = {
    "data.augment.crop_scale": 0.25,
    "data.augment.vertical_flip": True,
    "data.augment.rotate_degrees": 180.0,
    "data.augment.contrast": 0.3,
    "data.augment.saturation": 0.3,
    "data.augment.hue": 0.05,
    "data.augment.white_balance": 0.1,
    "data.augment.grayscale": 0.3,
    "data.augment.gamma": 1.5,
    "data.augment.blur_probability": 0.2,
    "data.augment.blur_sigma": 1.5,
}
# The published augmentation: a horizontal flip, crops of at least 80% of the
# area and a brightness shift, every other change off.
PUBLISHED_AUGMENT = {
    "data.augment.crop_scale": 0.8,
    **{key: type(value)(0) for key, value in SURFACE_AUGMENT.items()
       if key != "data.augment.crop_scale"},
}  # fmt: skip

_NO_EARLY_STOP = {
    "stages.pretrain.early_stopping_patience": 0,
    "stages.classify.early_stopping_patience": 0,
}

VARIANTS: dict[str, dict[str, Any]] = {
    "published_augment": PUBLISHED_AUGMENT,
    "surface_augment": SURFACE_AUGMENT,
    "surface_no_rotation": {
        **SURFACE_AUGMENT,
        "data.augment.vertical_flip": False,
        "data.augment.rotate_degrees": 0.0,
    },
    "surface_no_pretrain": {
        **SURFACE_AUGMENT,
        "stage_order": ("classify",),
        "stages.classify.init_from": "",
    },
    "surface_label_smoothing": {
        **SURFACE_AUGMENT,
        "stages.classify.label_smoothing": 0.1,
    },
    "surface_weight_decay": {
        **SURFACE_AUGMENT,
        "stages.classify.optimizer": "adamw",
        "stages.classify.weight_decay": 0.05,
    },
    "surface_longer": {**SURFACE_AUGMENT, "stages.classify.min_steps": 600},
    # Early stopping on a validation split of a few photographs stops on
    # noise; these train the whole schedule and keep the best checkpoint.
    "published_no_early_stop": {**PUBLISHED_AUGMENT, **_NO_EARLY_STOP},
    "surface_no_early_stop": {**SURFACE_AUGMENT, **_NO_EARLY_STOP},
    "surface_tta_flips": {**SURFACE_AUGMENT, "model.tta": "flips"},
    "label_smoothing": {
        **PUBLISHED_AUGMENT,
        "stages.classify.label_smoothing": 0.1,
    },
    "weight_decay": {
        **PUBLISHED_AUGMENT,
        "stages.classify.optimizer": "adamw",
        "stages.classify.weight_decay": 0.05,
    },
    # Not the published network: GroupNorm after every convolution.
    "group_norm": {**PUBLISHED_AUGMENT, "model.norm": "group"},
    "classify_adam_1e-3": {
        **PUBLISHED_AUGMENT,
        "stages.classify.learning_rate": 1e-3,
    },
    "default": {},
}


def apply(config, overrides: dict[str, Any]) -> None:
  """Sets dotted `overrides` on `config` (a KeyError names an unknown key)."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for name in parents:
      node = node[name]
    if leaf not in node:
      raise KeyError(f"unknown config key {key}")
    node[leaf] = value


def _parse_set(items: list[str]) -> dict[str, Any]:
  """`--set KEY=VALUE` items as overrides: Python literals, else strings."""
  parsed = {}
  for item in items:
    key, value = item.split("=", 1)
    try:
      parsed[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed[key] = value
  return parsed


def run_one(config, workdir: str) -> dict[str, Any]:
  """Trains `config` into `workdir` (both stages and the test report); the
  figures of its classification report and its wall time."""
  from roadflax.training import train  # JAX and TF load only when training

  start = time.perf_counter()
  train.train_and_evaluate(config, workdir)
  seconds = time.perf_counter() - start
  with open(os.path.join(workdir, "classify", "report.json")) as f:
    report = json.load(f)
  calibration = report.get("calibration", {})
  return {
      "accuracy": report["accuracy"],
      "ece_before": calibration.get("ece_before"),
      "ece_after": calibration.get("ece_after"),
      "temperature": calibration.get("temperature"),
      "seconds": round(seconds, 1),
  }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
  """Mean and spread (sample std, min, max) of each figure over seeds."""
  out = {}
  keys = sorted({key for run in runs for key in run if key != "seed"})
  for key in keys:
    values = [r[key] for r in runs if r.get(key) is not None]
    if values:
      out[key] = {
          "mean": statistics.fmean(values),
          "std": statistics.stdev(values) if len(values) > 1 else 0.0,
          "min": min(values),
          "max": max(values),
      }
  return out


def markdown(results: dict[str, Any]) -> str:
  lines = [
      (
          "| variant | test accuracy (mean ± std) | min-max | ECE before ->"
          " after | s per run |"
      ),
      "|---|---|---|---|---|",
  ]
  for name, variant in results["variants"].items():
    s = variant["summary"]
    acc, ece_b, ece_a = s["accuracy"], s.get("ece_before"), s.get("ece_after")
    ece = (
        f"{100 * ece_b['mean']:.1f}% -> {100 * ece_a['mean']:.1f}%"
        if ece_b and ece_a
        else "-"
    )
    lines.append(
        f"| {name} | {100 * acc['mean']:.1f}% ± {100 * acc['std']:.1f}"
        f" | {100 * acc['min']:.1f}-{100 * acc['max']:.1f}% | {ece}"
        f" | {s['seconds']['mean']:.0f} |"
    )
  return "\n".join(lines) + "\n"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
      "--root", required=True, help="image folder, split by photograph"
  )
  parser.add_argument(
      "--variants", default="default", help="names in VARIANTS, in order"
  )
  parser.add_argument("--seeds", default="0,1,2", help="seeds per variant")
  parser.add_argument(
      "--image_size", type=int, default=0, help="0 = default.py's"
  )
  parser.add_argument(
      "--set",
      action="append",
      default=[],
      help="KEY=VALUE override for every variant (a Python literal)",
  )
  parser.add_argument("--workdir", default="/tmp/recipe_study")
  parser.add_argument(
      "--output", required=True, help="results JSON (markdown beside it)"
  )
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  args = _arguments(argv)
  shared = _parse_set(args.set)
  if args.image_size:
    shared["data.image_size"] = args.image_size
  results = {
      **records.provenance(
          " ".join(["python -m roadflax.benchmark.recipe_study", *sys.argv[1:]])
      ),
      "root": args.root,
      "shared_overrides": shared,
      "variants": {},
  }
  for name in args.variants.split(","):
    runs = []
    for seed in args.seeds.split(","):
      config = default.get_config()
      config.data.root = args.root
      config.seed = int(seed)
      apply(config, {**shared, **VARIANTS[name]})
      run = run_one(config, os.path.join(args.workdir, name, f"seed{seed}"))
      runs.append({"seed": int(seed), **run})
      print(f"{name} seed {seed}: {run}", flush=True)
    results["variants"][name] = {
        "overrides": VARIANTS[name],
        "runs": runs,
        "summary": summary(runs),
    }
    atomic_write_json(args.output, results)
    atomic_write_text(
        os.path.splitext(args.output)[0] + ".md", markdown(results)
    )
  print(markdown(results))


if __name__ == "__main__":
  main()
