"""Semi-supervised fine-tuning by pseudo-labels: a classification stage with
`pseudo_label_threshold` > 0 and data of its own (`stages.NAME.data`, the
unlabelled pool) trains on the run's labelled train split plus every pool
image that the classifier it starts from (`init_from`, the teacher) gives a
class with at least that probability, labelled with that class.

One round of self-training (Lee 2013; Noisy Student's loop once): the
teacher answers without augmentation, the student trains with it. The
teacher's answers are computed once, on the stage's first start, and kept in
STAGE/pseudo_labels.json (image, class, probability), so a resumed stage
trains on exactly the same labels and a user can read what was added.
Every process computes all of them (the same on each), so every process
sees the same training split.
"""

import functools
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from roadflax.data import image_folder
from roadflax.data.contract import AnySplit
from roadflax.errors import UserError
from roadflax.files import atomic_write_json, read_json
from roadflax.models import roadnet, steps
from roadflax.runs import workdirs
from roadflax.training import evaluate

FILE = "pseudo_labels.json"


def teacher_probabilities(
    config: ml_collections.ConfigDict,
    teacher_dir: str,
    model: roadnet.RoadNet,
    run_info: dict[str, Any],
    pool: AnySplit,
) -> np.ndarray:
  """The teacher's class probabilities [N, classes] of every pool image, in
  order, from its best checkpoint and with the run's test-time augmentation."""
  like = jax.eval_shape(
      functools.partial(
          roadnet.init_params, model, image_size=config.data.image_size
      ),
      jax.random.key(0),
  )
  params, metadata, _ = workdirs.restore_best(teacher_dir, run_info, like)
  if "head" not in metadata["trained_trees"]:
    raise UserError(
        f"{teacher_dir} trained no classifier ({metadata['objective']}):"
        " pseudo-labels need init_from to name a classification stage"
    )
  predict = steps.jit_predict_step(model, tta=config.model.tta)
  probabilities, _ = evaluate.split_outputs(
      functools.partial(predict, params),
      pool,
      config.data,
      config.eval_batch_size,
  )
  return probabilities


def confident(
    paths: list[str], probabilities: np.ndarray, threshold: float
) -> list[dict[str, Any]]:
  confidence = probabilities.max(axis=-1)
  labels = probabilities.argmax(axis=-1)
  return [
      {"path": path, "label": int(label), "probability": float(p)}
      for path, label, p in zip(paths, labels, confidence)
      if p >= threshold
  ]


def training_split(
    config: ml_collections.ConfigDict,
    workdir: str,
    stage_name: str,
    dataset: Any,
    pool: AnySplit,
    run_info: dict[str, Any],
) -> tuple[AnySplit, dict[str, Any]]:
  """(the labelled train split plus the confident pool images, what the
  stage trained on for its summary.json)."""
  stage_config = config.stages[stage_name]
  threshold = stage_config.pseudo_label_threshold
  record_path = os.path.join(workdir, stage_name, FILE)
  pool_paths = list(getattr(pool, "paths", ()))
  labelled = dataset.splits["train"]
  if not pool_paths or not hasattr(labelled, "paths"):
    raise UserError(
        f"stages.{stage_name}.pseudo_label_threshold needs image folders:"
        " labelled data with data.source=folder and a folder of images or"
        f" videos as stages.{stage_name}.data"
    )
  if os.path.exists(record_path):
    chosen = read_json(record_path)["images"]
  else:
    teacher_dir = workdirs.resolve_stage_dir(stage_config.init_from, workdir)
    model = roadnet.create_model(config.model, len(dataset.class_names))
    probabilities = teacher_probabilities(
        config, teacher_dir, model, run_info, pool
    )
    chosen = confident(pool_paths, probabilities, threshold)
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(record_path), exist_ok=True)
      atomic_write_json(
          record_path,
          {
              "teacher": os.path.abspath(teacher_dir),
              "threshold": threshold,
              "pool_images": len(pool_paths),
              "images": chosen,
          },
      )
  split = image_folder.checked_split(
      config.data.root or stage_name,
      [*labelled.paths, *(c["path"] for c in chosen)],
      [*labelled.labels.tolist(), *(c["label"] for c in chosen)],
      num_classes=len(dataset.class_names),
  )
  per_class = np.bincount(
      [c["label"] for c in chosen], minlength=len(dataset.class_names)
  )
  return split, {
      "split": "train",
      "images": len(split),
      "labelled": len(labelled),
      "pseudo_labelled": {
          name: int(n) for name, n in zip(dataset.class_names, per_class)
      },
      "pool_images": len(pool_paths),
      "threshold": threshold,
  }
