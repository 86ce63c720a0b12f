"""How many labels pre-training saves: the classifier trained on 5, 10, 25
or 100 labelled frames per class, from scratch and from encoders pre-trained
on a pool of unlabelled images or videos, tested on photographs it never saw.

  python -m roadflax.benchmark.label_efficiency --root=/tmp/roads \\
      --pool=/data/dashcam --labels=5,10,25,100 --seeds=0,1,2 \\
      --image_size=67 --output=docs/results/label_efficiency.json
  python -m roadflax.benchmark --suite=labels ...   # the same, as a suite

`--root=roadtex` generates the built-in set instead; without `--pool` the
pool is every frame of the root's train split, its labels ignored.

For each seed, each pre-training (`PRETRAININGS`: the published
reconstruction, denoising, masked reconstruction, and a contrastive
objective, SimCLR's) trains once on the pool (`stages.pretrain.data`,
labels ignored). For each label count, the
labelled frames are drawn from `--root`'s train split by group (the groups
of that class taken in turn, one frame each, so a few labels still span
several photographs; never a validation or test group), written as a tree
of links beside the full validation and test splits, and the classifier
stage trains on it from scratch and from each pre-trained encoder, with the
same steps. Each start's frozen encoder is also scored by a linear probe
(`training.linear_probe`) on the same labels (scratch: the random encoder
the classifier starts from). The output JSON holds every run's test and
probe accuracy and time and each cell's mean and spread over seeds, with the
command, machine, commit and date (`records`); a markdown table and a plot
are written beside it.
"""

import argparse
import collections
import os
import sys
from typing import Any

import numpy as np

from roadflax.benchmark import recipe_study
from roadflax.configs import default
from roadflax.files import atomic_write_text, read_json
from roadflax.results import records

# Pre-training objectives compared with training from scratch.
PRETRAININGS = {
    "reconstruction": {  # the published plain reconstruction
        "stages.pretrain.corruption": "none",
        "stages.pretrain.corruption_amount": 0.0,
    },
    "denoising": {  # configs/default.py's
        "stages.pretrain.corruption": "noise",
        "stages.pretrain.corruption_amount": 0.5,
    },
    "masked": {
        "stages.pretrain.corruption": "mask",
        "stages.pretrain.corruption_amount": 0.5,
    },
    "contrastive": {
        "stages.pretrain.objective": "contrastive",
        "stages.pretrain.corruption": "none",
    },
}
ROADTEX = "roadtex"
ROADTEX_PER_SPLIT = {  # frames per class of the generated set
    "train_per_class": 300,
    "val_per_class": 30,
    "test_per_class": 100,
}
SCRATCH = "scratch"
# Semi-supervised: the from-scratch classifier labels the pool, and a
# classifier trained from it on the labels plus its confident answers.
PSEUDO_LABELS = "scratch+pseudo_labels"


def labelled_subset(
    paths: list[str],
    labels: np.ndarray,
    groups: list[str],
    class_names: list[str],
    per_class: int,
    seed: int,
) -> dict[str, list[str]]:
  """`per_class` frames of each class, drawn from its groups in turn (a
  shuffled order of groups, a random frame of each; round after round)."""
  rng = np.random.default_rng(seed)
  chosen = {}
  for label, name in enumerate(class_names):
    by_group = collections.defaultdict(list)
    for path, path_label, group in zip(paths, labels, groups):
      if path_label == label:
        by_group[group].append(path)
    pools = [list(rng.permutation(by_group[g])) for g in sorted(by_group)]
    pools = [pools[i] for i in rng.permutation(len(pools))]
    picked = []
    while len(picked) < per_class and any(pools):
      for pool in pools:
        if pool and len(picked) < per_class:
          picked.append(str(pool.pop()))
    if len(picked) < per_class:
      raise ValueError(
          f"class {name} has {len(picked)} training frames, fewer than"
          f" {per_class}"
      )
    chosen[name] = picked
  return chosen


def write_subset_tree(
    folder: str,
    chosen: dict[str, list[str]],
    dataset: Any,
    val_per_class: int = 0,
) -> str:
  """folder/{train,val,test}/CLASS/ of links: the chosen training frames,
  the whole test split and the validation split (or its first
  `val_per_class` frames of each class: below `select_min_val_images` it
  picks no checkpoint, and a few labels are one batch, so it is evaluated
  after every step)."""
  splits = {"train": chosen}
  for split in ("val", "test"):
    images = dataset.splits[split]
    splits[split] = {
        name: [
            path
            for path, path_label in zip(images.paths, images.labels)
            if path_label == label
        ]
        for label, name in enumerate(dataset.class_names)
    }
  if val_per_class:
    splits["val"] = {
        name: files[:val_per_class] for name, files in splits["val"].items()
    }
  for split, by_class in splits.items():
    for name, files in by_class.items():
      target = os.path.join(folder, split, name)
      os.makedirs(target, exist_ok=True)
      for index, path in enumerate(files):
        link = os.path.join(target, f"{index:05d}_{os.path.basename(path)}")
        if not os.path.lexists(link):
          os.symlink(os.path.abspath(path), link)
  return folder


def _config(args: argparse.Namespace, seed: int) -> Any:
  config = default.get_config()
  config.seed = seed
  config.data.image_size = args.image_size
  config.data.cache_dir = os.path.join(args.workdir, "cache")
  config.model.head_units = args.head_units
  config.stages.pretrain.update(
      steps=args.pretrain_steps,
      batch_size=args.pretrain_batch_size or args.batch_size,
  )
  config.stages.classify.update(
      steps=args.classify_steps, batch_size=args.batch_size
  )
  return config


def pretrain(args: argparse.Namespace, name: str, seed: int) -> str:
  """The stage directory of pre-training `name` on the pool (trained once)."""
  from roadflax.training import train  # JAX and TF load only when training

  config = _config(args, seed)
  config.data.root = args.root  # its validation split scores the objective
  config.stage_order = ("pretrain",)
  config.stages.pretrain.data.update(source="folder", root=args.pool)
  recipe_study.apply(config, PRETRAININGS[name])
  workdir = os.path.join(args.workdir, f"seed{seed}", f"pretrain_{name}")
  train.train_and_evaluate(config, workdir)
  return os.path.join(workdir, "pretrain")


def probe(
    args: argparse.Namespace, root: str, encoder: str, seed: int
) -> float:
  """The linear probe's test accuracy on `root` of `encoder` (a stage
  directory), or of the random encoder a classifier of `seed` starts from."""
  import jax

  from roadflax.datasets import sources
  from roadflax.models import roadnet
  from roadflax.runs import workdirs
  from roadflax.training import linear_probe

  config = _config(args, seed)
  config.data.root = root
  dataset = sources.load_dataset(config.data)
  if encoder:
    params, model, _ = workdirs.load_best_params(
        encoder, workdirs.load_run(os.path.dirname(encoder))
    )
  else:
    model = roadnet.create_model(config.model, len(dataset.class_names))
    params = roadnet.init_params(model, jax.random.key(seed), args.image_size)
  return linear_probe.probe_accuracy(model, params, dataset, config.data)


def classify(
    args: argparse.Namespace,
    root: str,
    encoder: str,
    seed: int,
    workdir: str,
    teacher: str = "",
) -> dict[str, Any]:
  """Test accuracy and seconds (the stage's, as its summary.json says, so a
  run already in `workdir` is read, not trained again) of the classifier on
  `root`, from `encoder`
  (a pre-training stage directory, or "" for from scratch), and the linear
  probe's accuracy of that encoder; or with `teacher` (a classification
  stage directory), of the classifier fine-tuned from it on the labels and
  its pseudo-labels of the pool."""
  from roadflax.training import train

  config = _config(args, seed)
  config.data.root = root
  config.stage_order = ("classify",)
  config.stages.classify.init_from = teacher or encoder
  if teacher:
    config.stages.classify.pseudo_label_threshold = args.pseudo_label_threshold
    config.stages.classify.data.update(source="folder", root=args.pool)
  train.train_and_evaluate(config, workdir)  # skipped when it is complete
  report = read_json(os.path.join(workdir, "classify", "report.json"))
  summary = read_json(os.path.join(workdir, "classify", "summary.json"))
  run = {"accuracy": report["accuracy"], "seconds": summary["seconds"]}
  if teacher:
    run["pseudo_labelled"] = sum(
        summary["trained_on"]["pseudo_labelled"].values()
    )
  else:
    run["probe_accuracy"] = probe(args, root, encoder, seed)
  return run


def _cell(results: dict[str, Any], count: str, start: str, key: str) -> str:
  figure = results["cells"][count][start]["summary"][key]
  return f"{100 * figure['mean']:.1f}% ± {100 * figure['std']:.1f}"


def markdown(results: dict[str, Any]) -> str:
  """Fine-tuned test accuracy per label count and start, then the linear
  probe's (mean ± std over seeds)."""
  starts = [SCRATCH, *results["pretrainings"]]
  lines = [
      "| labels per class | " + " | ".join(starts) + " |",
      "|---:|" + "---:|" * len(starts),
  ]
  for count in results["cells"]:
    row = [_cell(results, count, start, "accuracy") for start in starts]
    lines.append(f"| {count} | " + " | ".join(row) + " |")
  probed = [s for s in starts if s != PSEUDO_LABELS]
  if all(
      "probe_accuracy" in cells[start]["summary"]
      for cells in results["cells"].values()
      for start in probed
  ):
    lines += [
        "",
        "Linear probe of each frozen encoder:",
        "",
        "| labels per class | " + " | ".join(probed) + " |",
        "|---:|" + "---:|" * len(probed),
    ]
    for count in results["cells"]:
      row = [_cell(results, count, start, "probe_accuracy") for start in probed]
      lines.append(f"| {count} | " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: str) -> None:
  """Test accuracy against labels per class, a line per start (mean, and
  the spread over seeds as a band); the linear probes dashed."""
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  counts = [int(c) for c in results["cells"]]
  figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
  for index, start in enumerate([SCRATCH, *results["pretrainings"]]):
    colour = f"C{index}"
    for key, style, label in (
        ("accuracy", "-", start),
        ("probe_accuracy", "--", f"{start}, linear probe"),
    ):
      cells = [
          results["cells"][str(c)][start]["summary"].get(key) for c in counts
      ]
      if any(cell is None for cell in cells):
        continue
      mean = np.array([100 * cell["mean"] for cell in cells])
      std = np.array([100 * cell["std"] for cell in cells])
      axes.plot(counts, mean, style, color=colour, marker="o", label=label)
      if style == "-":
        axes.fill_between(
            counts, mean - std, mean + std, color=colour, alpha=0.15
        )
  classes = results.get("classes")
  if classes:
    axes.axhline(100 / classes, color="grey", linestyle=":", label="chance")
  axes.set_xscale("log")
  axes.minorticks_off()
  axes.set_xticks(counts, [str(c) for c in counts])
  axes.set_xlabel("labelled frames per class")
  axes.set_ylabel("test accuracy (%)")
  name = os.path.basename(results["settings"]["root"].rstrip("/"))
  axes.set_title(ROADTEX if name.startswith(ROADTEX) else name)
  axes.legend(fontsize=7)
  axes.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
      "--root",
      required=True,
      help=f"labelled image folder, or {ROADTEX} (generated)",
  )
  parser.add_argument(
      "--pool",
      default="",
      help="unlabelled images/videos (default: the root's train split)",
  )
  parser.add_argument("--labels", default="5,10,25,100")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument(
      "--pretrainings",
      default=",".join(PRETRAININGS),
      help="names in PRETRAININGS",
  )
  parser.add_argument("--image_size", type=int, default=67)
  parser.add_argument("--head_units", type=int, default=4096)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument(
      "--pretrain_batch_size",
      type=int,
      default=0,
      help="0 = --batch_size (a contrastive objective wants more negatives)",
  )
  parser.add_argument(
      "--val_per_class", type=int, default=0, help="0 = the whole split"
  )
  parser.add_argument(
      "--pseudo_label_threshold",
      type=float,
      default=0.0,
      help=f"> 0: also {PSEUDO_LABELS} (semi-supervised) at this threshold",
  )
  parser.add_argument("--pretrain_steps", type=int, default=300)
  parser.add_argument("--classify_steps", type=int, default=300)
  parser.add_argument("--workdir", default="/tmp/label_efficiency")
  parser.add_argument("--output", required=True, help="results JSON")
  return parser.parse_args(argv)


def _resolve_data(args: argparse.Namespace) -> None:
  """`--root=roadtex` generated into the workdir; the default pool."""
  if args.root == ROADTEX:
    from roadflax.datasets import roadtex

    args.root = roadtex.ensure_generated(
        **ROADTEX_PER_SPLIT, cache_dir=os.path.join(args.workdir, "cache")
    )
  if not args.pool:
    args.pool = os.path.join(args.root, "train")


def main(argv: list[str] | None = None) -> None:
  from roadflax.datasets import sources

  args = _arguments(argv)
  _resolve_data(args)
  pretrainings = [name for name in args.pretrainings.split(",") if name]
  unknown = set(pretrainings) - set(PRETRAININGS)
  if unknown:
    raise SystemExit(
        f"unknown pretrainings {sorted(unknown)}: choose from"
        f" {list(PRETRAININGS)}"
    )
  labelled = default.get_config().data
  labelled.root = args.root
  dataset = sources.load_dataset(labelled)
  train_split = dataset.splits["train"]
  command = " ".join([
      "python -m roadflax.benchmark.label_efficiency",
      *(sys.argv[1:] if argv is None else argv),
  ])
  results = {
      "settings": {k: v for k, v in vars(args).items() if k != "output"},
      "pretrainings": (
          pretrainings
          + ([PSEUDO_LABELS] if args.pseudo_label_threshold else [])
      ),
      "classes": len(dataset.class_names),
      "cells": {},
  }
  runs = collections.defaultdict(list)
  for seed in (int(s) for s in args.seeds.split(",")):
    encoders = {SCRATCH: ""}
    encoders.update({name: pretrain(args, name, seed) for name in pretrainings})
    for count in (int(n) for n in args.labels.split(",")):
      chosen = labelled_subset(
          list(train_split.paths),
          train_split.labels,
          list(train_split.groups),
          list(dataset.class_names),
          count,
          seed,
      )
      base = os.path.join(args.workdir, f"seed{seed}", f"labels{count}")
      root = write_subset_tree(
          os.path.join(base, "data"), chosen, dataset, args.val_per_class
      )
      for start, encoder in encoders.items():
        run = classify(
            args, root, encoder, seed, os.path.join(base, f"from_{start}")
        )
        runs[(count, start)].append({"seed": seed, **run})
        print(f"{count} labels, {start}, seed {seed}: {run}", flush=True)
      if args.pseudo_label_threshold:
        teacher = os.path.join(base, f"from_{SCRATCH}", "classify")
        run = classify(
            args,
            root,
            "",
            seed,
            os.path.join(base, "from_pseudo_labels"),
            teacher=teacher,
        )
        runs[(count, PSEUDO_LABELS)].append({"seed": seed, **run})
        print(
            f"{count} labels, {PSEUDO_LABELS}, seed {seed}: {run}", flush=True
        )
  for (count, start), cell in runs.items():
    results["cells"].setdefault(str(count), {})[start] = {
        "runs": cell,
        "summary": recipe_study.summary(cell),
    }
  records.write(args.output, results, command)
  stem = os.path.splitext(args.output)[0]
  atomic_write_text(stem + ".md", markdown(results))
  plot(results, stem + ".png")
  print(markdown(results))


if __name__ == "__main__":
  main()
