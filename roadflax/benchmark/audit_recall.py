"""How well the label audit finds wrong labels: a copy of an image folder
with a share of its labels flipped at random (each image moved to another
class's folder), audited with a workdir's encoder (`labelling.audit`); the
recall of the flipped images among the top-ranked ones, as many as were
flipped, for each seed of the flips and their mean.

  python -m roadflax.benchmark.audit_recall --root=/tmp/ground \\
      --workdir=runs/ground --share=0.1 --seeds=0,1,2 \\
      --output=/tmp/audit_recall.json

The workdir is whichever run a user would audit with: one trained on the
folder (its features saw the true labels), or on the flipped copy itself
(`--train_on_copy`: WORKDIR/seedN trained on seed N's copy, the run's own
training data audited, the harder case).
"""

import argparse
import os
import shutil
import sys
from typing import Any

import numpy as np

from roadflax.configs import default
from roadflax.files import atomic_write_json
from roadflax.labelling import audit
from roadflax.results import records

SPLITS = ("train", "val", "test")


def flipped_copy(
    root: str, output: str, share: float, seed: int = 0
) -> dict[str, str]:
  """Copies ROOT/{train,val,test}/CLASS/* to `output`, each image moved to
  another class (at random) with probability `share`; {path relative to
  `output`: true class} of the moved ones. Copies are named CLASS-NAME, so
  a moved image never overwrites another."""
  rng = np.random.default_rng(seed)
  flipped = {}
  for split in SPLITS:
    classes = sorted(os.listdir(os.path.join(root, split)))
    for name in classes:
      for image in sorted(os.listdir(os.path.join(root, split, name))):
        label = name
        if rng.random() < share:
          label = str(rng.choice([c for c in classes if c != name]))
          flipped[f"{split}/{label}/{name}-{image}"] = name
        os.makedirs(os.path.join(output, split, label), exist_ok=True)
        shutil.copy(
            os.path.join(root, split, name, image),
            os.path.join(output, split, label, f"{name}-{image}"),
        )
  return flipped


def recall(rows: list[dict[str, Any]], flipped: dict[str, str]) -> float:
  """The share of `flipped` among the first len(flipped) ranked rows."""
  top = {row["file"] for row in rows[: len(flipped)]}
  return len(top & flipped.keys()) / max(len(flipped), 1)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument(
      "--root", required=True, help="ROOT/{train,val,test}/CLASS"
  )
  parser.add_argument("--workdir", required=True, help="the run that audits")
  parser.add_argument("--share", type=float, default=0.1)
  parser.add_argument(
      "--seeds", default="0", help="comma-separated seeds of the flips"
  )
  parser.add_argument("--copy", default="/tmp/audit_recall_copy")
  parser.add_argument(
      "--train_on_copy",
      action="store_true",
      help="first train --workdir (configs/default.py at 67 px) on the copy",
  )
  parser.add_argument("--output", required=True, help="results JSON")
  return parser.parse_args(argv)


def _audit_one(args: argparse.Namespace, seed: int) -> dict[str, Any]:
  copy = os.path.join(args.copy, f"seed{seed}")
  shutil.rmtree(copy, ignore_errors=True)
  flipped = flipped_copy(args.root, copy, args.share, seed)
  workdir = args.workdir
  if args.train_on_copy:
    from roadflax.training import train  # JAX training only here

    workdir = os.path.join(args.workdir, f"seed{seed}")
    config = default.get_config()
    config.data.root, config.data.image_size = copy, 67
    config.stages.pretrain.update(epochs=2, min_steps=40)
    config.stages.classify.update(epochs=10, min_steps=100)
    train.train_and_evaluate(config, workdir)
  data = default.get_config().data
  data.root = copy
  found = audit.audit_workdir(workdir, data)
  return {
      "seed": seed,
      "images": found["images"],
      "flipped": len(flipped),
      "recall_at_flipped": recall(found["rows"], flipped),
      "label_issues": found["label_issues"],
      "out_of_fold_accuracy": found["out_of_fold_accuracy"],
  }


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = _arguments(argv)
  runs = [_audit_one(args, int(seed)) for seed in args.seeds.split(",")]
  recalls = [run["recall_at_flipped"] for run in runs]
  result = {
      **records.provenance(
          " ".join(["python -m roadflax.benchmark.audit_recall", *sys.argv[1:]])
      ),
      "root": args.root,
      "workdir": args.workdir,
      "share": args.share,
      "images": runs[0]["images"],
      "recall_at_flipped": float(np.mean(recalls)),
      "recall_min": min(recalls),
      "out_of_fold_accuracy": float(
          np.mean([run["out_of_fold_accuracy"] for run in runs])
      ),
      "runs": runs,
  }
  atomic_write_json(args.output, result)
  print(
      f"{result['recall_at_flipped']:.1%} of the flipped labels (mean of"
      f" {len(runs)} seeds, lowest {result['recall_min']:.1%}) among as many"
      f" top-ranked of {result['images']} images"
  )
  return result


if __name__ == "__main__":
  main()
