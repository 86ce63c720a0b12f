"""`--mode=audit`: which labels of an image folder look wrong, which images
are near-duplicates across its splits, and which look like no other.

  roadflax --mode=audit --workdir=runs/roads [--config=configs/default.py \
      --config.data.root=labelled]

Label errors by confident learning (Northcutt, Jiang and Chuang, JAIR 2021):
every image gets class probabilities from a model that never saw it, and a
label is suspect when the model is confidently for another class. The
models are k linear probes (`training.linear_probe`: a logistic regression
on the workdir's frozen encoder, conv6 averaged and max-pooled), each
trained on all the images but one fold of groups (drives, videos,
subfolders: `data.group_by`) and predicting that fold, so frames of one
drive never vouch for each other. Class j's threshold is the mean
probability of j over the images labelled j; an image labelled i is an
issue when some other class reaches its threshold. The probes are then
fitted again without the issues (prune and refit: wrong labels no longer
teach them), and the second pass gives the issues and the ranking: every
image by its label's probability (self-confidence), lowest first: both
find more deliberately flipped labels than ranking the first pass's issues
first did (docs/guides/labelling.md).

Near-duplicates across splits are the ones training counts
(`split_record.near_duplicates_between`); outliers are the images farthest
from their nearest neighbours in the probe's feature space. The results go
to WORKDIR/audit/audit.csv (every image, ranked) and audit.md (the top of
each list), which the app shows beside the images.
"""

import dataclasses
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from roadflax.datasets import sources
from roadflax.errors import UserError
from roadflax.labelling import audit_files
from roadflax.runs import workdirs
from roadflax.training import linear_probe, split_record

_NEIGHBOURS = 5  # outlier score: mean distance to this many nearest images


@dataclasses.dataclass(frozen=True)
class Images:
  """Every image of a folder data set, whatever its split."""

  paths: list[str]
  labels: np.ndarray  # int [N]
  groups: list[str]
  splits: list[str]


def fold_of_groups(groups: list[str], folds: int, seed: int = 0) -> np.ndarray:
  """Each image's fold (int [N]): whole groups dealt in a seeded order to the
  fold with the fewest images so far, so folds are alike in size."""
  names = sorted(set(groups))
  np.random.default_rng(seed).shuffle(names)
  sizes = {name: 0 for name in names}
  for g in groups:
    sizes[g] += 1
  fold_sizes, assigned = np.zeros(folds, int), {}
  for name in sorted(names, key=lambda n: -sizes[n]):  # largest first
    fold = int(np.argmin(fold_sizes))
    assigned[name] = fold
    fold_sizes[fold] += sizes[name]
  return np.array([assigned[g] for g in groups])


def out_of_fold_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    num_classes: int,
    trusted: np.ndarray | None = None,
) -> np.ndarray:
  """float [N, classes]: each image's probabilities from the probe fitted on
  every other fold (on its `trusted` images only, bool [N], when given)."""
  probabilities = np.zeros((len(labels), num_classes))
  if trusted is None:
    trusted = np.ones(len(labels), bool)
  for fold in np.unique(folds):
    held = folds == fold
    fit = ~held & trusted
    weights, bias, mean, std = linear_probe.fit_logistic_regression(
        features[fit], labels[fit], num_classes
    )
    logits = ((features[held] - mean) / std) @ weights + bias
    logits -= logits.max(axis=1, keepdims=True)
    odds = np.exp(logits)
    probabilities[held] = odds / odds.sum(axis=1, keepdims=True)
  return probabilities


def label_issues(
    probabilities: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(issue bool [N], suggested class int [N], order int [N]) by confident
  learning: an issue where another class reaches its threshold (its mean
  probability over the images labelled with it); the suggestion is the
  likeliest such class; the order ranks every image by the probability of
  its label, lowest first (an unsure image whose label is unlikely but no
  other class confident is as suspect as an issue)."""
  num_classes = probabilities.shape[1]
  thresholds = np.array([
      probabilities[labels == c, c].mean() if np.any(labels == c) else np.inf
      for c in range(num_classes)
  ])
  confident = probabilities >= thresholds
  confident[np.arange(len(labels)), labels] = False
  issue = confident.any(axis=1)
  suggested = np.where(
      issue,
      np.argmax(np.where(confident, probabilities, -1), axis=1),
      np.argmax(probabilities, axis=1),
  )
  quality = probabilities[np.arange(len(labels)), labels]
  order = np.argsort(quality, kind="stable")
  return issue, suggested, order


def outlier_scores(features: np.ndarray) -> np.ndarray:
  """float [N]: each image's mean distance to its nearest other images in
  standardised feature space (larger: unlike the rest of the folder)."""
  x = (features - features.mean(0)) / (features.std(0) + 1e-6)
  squared = (x * x).sum(1)
  k = min(_NEIGHBOURS, len(x) - 1)
  scores = np.zeros(len(x))
  for start in range(0, len(x), 512):  # distances a block at a time
    block = x[start : start + 512]
    d = squared[start : start + 512, None] + squared[None] - 2 * block @ x.T
    d[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
    nearest = np.sqrt(np.maximum(np.partition(d, k - 1, axis=1)[:, :k], 0))
    scores[start : start + len(block)] = nearest.mean(1)
  return scores


def audit_workdir(
    workdir: str,
    data_config: ml_collections.ConfigDict | None,
    folds: int = 5,
) -> dict[str, Any]:
  """Audits the folder of `data_config` (default: the data the workdir was
  trained on) with the workdir's encoder; writes WORKDIR/audit/.

  Raises:
    UserError: the data is not an image folder, or has too few groups to
      fold.
  """
  run = workdirs.load_run(workdir)
  stage = workdirs.classifier_stage(workdir)
  params, model, _ = workdirs.load_best_params(
      os.path.join(workdir, stage), run
  )
  config = workdirs.run_config(workdir, data_config)
  if config.data.source != "folder":
    raise UserError(
        f"the audit reads image folders; {workdir} was trained on"
        f" {config.data.source} data: give --config.data.root=FOLDER"
    )
  # The probes learn the folder's own classes: any encoder can audit any
  # folder.
  dataset = sources.load_dataset(config.data)
  images = _images(dataset)
  count = len(set(images.groups))
  if count < 2:
    raise UserError(
        f"{dataset.root} holds one group of images: an audit needs at least"
        " two (drives, videos or subfolders) to hold one out"
    )
  features = np.concatenate([
      linear_probe.split_features(model, params, dataset, name, config.data)[0]
      for name in dataset.splits
  ])
  fold = fold_of_groups(images.groups, min(folds, count), config.seed)
  first_pass, _, _ = label_issues(
      out_of_fold_probabilities(
          features, images.labels, fold, len(dataset.class_names)
      ),
      images.labels,
  )
  probabilities = out_of_fold_probabilities(
      features, images.labels, fold, len(dataset.class_names), ~first_pass
  )
  issue, suggested, order = label_issues(probabilities, images.labels)
  outliers = outlier_scores(features)
  duplicates = (
      split_record.near_duplicates_between(
          dataset.splits,
          dataset.root,
          max_images=config.data.near_duplicate_images,
      )
      if "train" in dataset.splits and len(dataset.splits) > 1
      else None
  )
  rows = [
      {
          "rank": rank + 1,
          "file": os.path.relpath(images.paths[i], dataset.root),
          "split": images.splits[i],
          "group": images.groups[i],
          "label": dataset.class_names[images.labels[i]],
          "issue": bool(issue[i]),
          "suggested": dataset.class_names[suggested[i]],
          "label_probability": round(
              float(probabilities[i, images.labels[i]]), 4
          ),
          "suggested_probability": round(
              float(probabilities[i, suggested[i]]), 4
          ),
          "outlier_score": round(float(outliers[i]), 3),
      }
      for rank, i in enumerate(order)
  ]
  summary = {
      "root": dataset.root,
      "images": len(rows),
      "groups": count,
      "folds": int(fold.max() + 1),
      "label_issues": int(issue.sum()),
      "out_of_fold_accuracy": float(
          np.mean(np.argmax(probabilities, 1) == images.labels)
      ),
      "near_duplicates": duplicates,
  }
  audit_files.write(workdir, rows, summary)
  logging.info(
      "audit of %d images in %d groups: %d labels look wrong (out-of-fold"
      " accuracy %.1f%%): %s",
      len(rows),
      count,
      summary["label_issues"],
      100 * summary["out_of_fold_accuracy"],
      os.path.join(workdir, audit_files.AUDIT_DIR, audit_files.MARKDOWN_FILE),
  )
  return {"rows": rows, **summary}


def _images(dataset: Any) -> Images:
  paths, labels, groups, splits = [], [], [], []
  for name, split in dataset.splits.items():
    if not hasattr(split, "paths"):
      raise UserError("the audit reads image folders, not a prepared data set")
    keys = getattr(split, "groups", None) or [
        os.path.relpath(p, dataset.root) for p in split.paths
    ]
    paths += list(split.paths)
    labels += list(split.labels)
    groups += list(keys)
    splits += [name] * len(split.paths)
  return Images(paths, np.asarray(labels), groups, splits)
