"""Small trees of images and tiny configs for tests."""

import os

import ml_collections
import numpy as np
from PIL import Image

from configs import default
from roadflax.data import image_folder
from roadflax.runs import checkpoints, workdirs

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


def image_features(root, split, feature):
  """(features of each image of a split, labels) for a linear baseline."""
  folder = image_folder.scan_image_folder(root)
  images = [np.asarray(Image.open(p), np.float32) / 255 for p in folder.splits[split].paths]
  return np.array([feature(image) for image in images]), folder.splits[split].labels


def logistic_regression_accuracy(train, test, steps=3000, rate=0.5):
  """Test accuracy of a softmax regression on standardised features."""
  (x, y), (x_test, y_test) = train, test
  mean, std = x.mean(0), x.std(0) + 1e-9
  x, x_test = (x - mean) / std, (x_test - mean) / std
  weights, bias = np.zeros((x.shape[1], y.max() + 1)), np.zeros(y.max() + 1)
  for _ in range(steps):
    logits = x @ weights + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    weights -= rate * x.T @ p / len(y)
    bias -= rate * p.mean(0)
  return float(np.mean(np.argmax(x_test @ weights + bias, 1) == y_test))


def colour_statistics(image):
  """Per-channel mean and std: what a colour-only classifier sees."""
  return np.concatenate([image.mean((0, 1)), image.std((0, 1))])
