"""Small trees of images and tiny configs for tests, and main.py run as a
command or, skipping a new process's seconds of imports, in this process."""

import contextlib
import fcntl
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from unittest import mock

import ml_collections
import numpy as np
from PIL import Image

from roadflax import cli
from roadflax.configs import default
from roadflax.data import image_folder
from roadflax.models import roadnet
from roadflax.runs import checkpoints, workdirs

CLASSES = ("asphalt", "concrete", "gravel")
# The head's width in tests that train: what they check does not depend on
# it, and the published 4096 (43M parameters) makes every step and
# checkpoint about ten times the work.
HEAD_UNITS = 256
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(
    *args: str, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
  """`python main.py ARGS` in a new process, as a user runs it, with the
  environment variables `env` set for it."""
  result = subprocess.run(
      [sys.executable, "main.py", *args],
      cwd=ROOT,
      env={**os.environ, **(env or {})},
      capture_output=True,
      text=True,
      timeout=600,
  )
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


def run_main(*args: str, check: bool = False) -> subprocess.CompletedProcess:
  """`python main.py ARGS` in this process: the command's own flag parsing
  and `cli.execute`, its exit status, stdout and stderr (log lines go to `caplog`).

  absl's flags are global: each run starts from their defaults, without the
  `--config.KEY` flags config_flags defined for an earlier run's overrides
  (it reads them from `sys.argv`). The log filter the command adds is taken off
  again, so it does not outlive the run.
  """
  argv = ["main.py", *args]
  for name in [name for name in cli.FLAGS if name.startswith("config.")]:
    delattr(cli.FLAGS, name)
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  cli.FLAGS.unparse_flags()
  absl_logger.setLevel(level)  # --verbosity's default just set it to WARNING
  handlers = logging.getLogger().handlers + absl_logger.handlers
  filters = [list(handler.filters) for handler in handlers]
  stdout, stderr, returncode = io.StringIO(), io.StringIO(), 0
  try:
    with (
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        mock.patch.object(sys, "argv", argv),
    ):
      cli.execute(cli.parse_flags(argv))
  except SystemExit as exited:
    returncode = exited.code
  finally:
    for handler, kept in zip(handlers, filters):
      handler.filters[:] = kept
  result = subprocess.CompletedProcess(
      argv, returncode, stdout.getvalue(), stderr.getvalue()
  )
  if check:
    assert returncode == 0, result.stderr[-3000:]
  return result


def built_once(tmp_path_factory, name: str, build) -> str:
  """The folder `name` that `build(path)` writes once for the whole test run.

  The parallel workers (pytest-xdist) share it: the first to ask builds it
  under a file lock while the others wait, and all of them read the result,
  instead of each building its own copy of the same data or trained model.
  Tests treat it as read-only. Its lock and its "built" mark lie beside it.
  """
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the run's folder, above each worker's own
  path = os.path.join(root, name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(f"{path}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(f"{path}.built"):
      shutil.rmtree(path, ignore_errors=True)
      build(path)
      open(f"{path}.built", "w").close()
  return path


def error_line(result: subprocess.CompletedProcess) -> str:
  """The message of a run that stopped on a user's mistake: exit status 2 and
  `error: ...` as the last line on stderr (log lines may come before it)."""
  assert result.returncode == 2, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith("error: "), result.stderr[-3000:]
  return line


def tiny_flags(root: str) -> list[str]:
  """main.py flags for a tiny run: both stages, 2 steps each, at the
  smallest input size, with a narrow head."""
  flags = [
      "--config=configs/default.py",
      f"--config.data.root={root}",
      "--config.data.image_size=67",
      f"--config.model.head_units={HEAD_UNITS}",
      "--config.eval_batch_size=8",
      "--config.log_every_steps=1",
  ]
  for stage in ("pretrain", "classify"):
    flags += [
        f"--config.stages.{stage}.steps=2",
        f"--config.stages.{stage}.batch_size=4",
    ]
  return flags + ["--config.stages.classify.learning_rate=0.01"]


def write_image_tree(
    root: str, per_split=None, size=(48, 72), classes=CLASSES, seed=0
) -> str:
  """ROOT/{train,val,test}/CLASS/*.jpg with a learnable pattern per class."""
  per_split = per_split or {"train": 8, "val": 4, "test": 4}
  rng = np.random.default_rng(seed)
  for split, count in per_split.items():
    for label, name in enumerate(classes):
      folder = os.path.join(root, split, name)
      os.makedirs(folder, exist_ok=True)
      for i in range(count):
        image = rng.integers(0, 60, (*size, 3)) + 60 * label
        Image.fromarray(image.astype(np.uint8)).save(
            os.path.join(folder, f"{i:03d}.jpg")
        )
  return root


# Images per class of each split of `write_colour_tree`.
COLOUR_SPLITS = {"train": 20, "val": 4, "test": 40}


def write_colour_tree(root: str) -> str:
  """ROOT/{train,val,test}/CLASS/*.jpg: class k's images are noise with
  channel k raised, a pattern the network learns in a few dozen steps."""
  rng = np.random.default_rng(0)
  for split, count in COLOUR_SPLITS.items():
    for label, name in enumerate(CLASSES):
      folder = os.path.join(root, split, name)
      os.makedirs(folder)
      for i in range(count):
        image = rng.integers(0, 100, (48, 72, 3))
        image[..., label] += 120
        Image.fromarray(image.astype(np.uint8)).save(f"{folder}/{i:03d}.jpg")
  return root


def tiny_config(root: str, **stage_steps) -> ml_collections.ConfigDict:
  """Both stages, a few steps each, at the smallest input size, with a
  narrow head."""
  config = default.get_config()
  config.data.root = root
  config.data.image_size = 67
  config.model.head_units = HEAD_UNITS
  config.eval_batch_size = 8
  config.log_every_steps = 2
  for name in config.stage_order:
    config.stages[name].update(steps=stage_steps.get(name, 4), batch_size=4)
  config.stages.classify.update(optimizer="momentum", learning_rate=0.01)
  return config


def final_params(stage_dir: str):
  """(latest step, its parameters) of a stage."""
  ckpts = checkpoints.StageCheckpoints(
      os.path.join(stage_dir, "checkpoints"), read_only=True
  )
  like, _, _ = workdirs.load_best_params(
      stage_dir, workdirs.load_run(os.path.dirname(stage_dir))
  )
  step = ckpts.latest_step()
  return step, ckpts.restore(step, params=like)["params"]


def image_features(root, split, feature):
  """(features of each image of a split, labels) for a linear baseline."""
  folder = image_folder.scan_image_folder(root)
  images = [
      np.asarray(Image.open(p), np.float32) / 255
      for p in folder.splits[split].paths
  ]
  return (
      np.array([feature(image) for image in images]),
      folder.splits[split].labels,
  )


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


def classifier_logits(classifier, pixels: np.ndarray) -> np.ndarray:
  """A `TrainedClassifier`'s logits of uint8 pixels, computed here from its
  network and preprocessing, apart from the functions it builds."""
  p = classifier.preprocessing
  images = (pixels / 255.0 - np.array(p.mean)) / np.array(p.std)
  return np.asarray(
      classifier.model.apply(
          {"params": classifier.params},
          images.astype(np.float32),
          method=roadnet.RoadNet.classify,
      )
  )


def linked_workdir(workdir: str, folder, stage: str = "classify") -> str:
  """A new workdir in `folder` holding `workdir`'s model and none of its
  stage's other files: run.json, config.json and STAGE/checkpoints are
  links to `workdir`'s (which stays unwritten: checkpoints are read only)."""
  folder = str(folder)
  os.makedirs(os.path.join(folder, stage))
  for name in (workdirs.RUN_FILE, workdirs.CONFIG_FILE):
    os.symlink(os.path.join(workdir, name), os.path.join(folder, name))
  os.symlink(
      os.path.join(workdir, stage, "checkpoints"),
      os.path.join(folder, stage, "checkpoints"),
  )
  return folder


def learning_test_run(
    write_folder, tmp_path, *, classify_min_steps: int, seed: int = 0
) -> tuple[str, str]:
  """(folder, workdir): configs/default.py trained on the real-photo folder
  that `write_folder(root, train_per_class=60, val_per_class=15,
  test_per_class=30)` writes, at the smallest input size (67 px) and a step
  floor small enough for CI: the run the real-photo learning tests (and the
  audit's) assert on."""
  from roadflax.training import train

  root = write_folder(
      str(tmp_path / "photos"),
      train_per_class=60,
      val_per_class=15,
      test_per_class=30,
  )
  config = default.get_config()
  config.seed = seed
  config.data.root = root
  config.data.image_size = 67
  config.stages.pretrain.update(epochs=2, min_steps=40)
  config.stages.classify.update(epochs=10, min_steps=classify_min_steps)
  train.train_and_evaluate(config, str(tmp_path / "run"))
  return root, str(tmp_path / "run")


def learning_test_accuracy(
    write_folder, tmp_path, *, classify_min_steps: int, seed: int = 0
) -> float:
  """The test accuracy of `learning_test_run`'s workdir."""
  _, workdir = learning_test_run(
      write_folder, tmp_path, classify_min_steps=classify_min_steps, seed=seed
  )
  with open(os.path.join(workdir, "classify", "report.json")) as f:
    return json.load(f)["accuracy"]
