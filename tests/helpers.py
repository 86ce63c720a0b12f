"""Small trees of images and tiny configs for tests."""

import os

import ml_collections
import numpy as np
from PIL import Image

from configs import default
from roadflax import checkpoints, workdirs

CLASSES = ("asphalt", "concrete", "gravel")


def write_image_tree(root: str, per_split=None, size=(48, 72), classes=CLASSES, seed=0) -> str:
  """ROOT/{train,val,test}/CLASS/*.jpg with a learnable pattern per class."""
  per_split = per_split or {"train": 8, "val": 4, "test": 4}
  rng = np.random.default_rng(seed)
  for split, count in per_split.items():
    for label, name in enumerate(classes):
      folder = os.path.join(root, split, name)
      os.makedirs(folder, exist_ok=True)
      for i in range(count):
        image = rng.integers(0, 60, (*size, 3)) + 60 * label
        Image.fromarray(image.astype(np.uint8)).save(os.path.join(folder, f"{i:03d}.jpg"))
  return root


def tiny_config(root: str, **stage_steps) -> ml_collections.ConfigDict:
  """Both stages, a few steps each, at the smallest input size."""
  config = default.get_config()
  config.data.root = root
  config.data.image_size = 67
  config.eval_batch_size = 8
  config.log_every_steps = 2
  for name in config.stage_order:
    config.stages[name].update(steps=stage_steps.get(name, 4), batch_size=4)
  config.stages.classify.update(optimizer="momentum", learning_rate=0.01)
  return config


def final_params(stage_dir: str):
  """(latest step, its parameters) of a stage."""
  ckpts = checkpoints.StageCheckpoints(os.path.join(stage_dir, "checkpoints"), read_only=True)
  like, _, _ = workdirs.load_best_params(stage_dir, workdirs.load_run(os.path.dirname(stage_dir)))
  step = ckpts.latest_step()
  return step, ckpts.restore(step, params=like)["params"]
