"""Shared test setup: quiet TensorFlow, one JAX compilation cache for the
run, and small image trees and trained workdirs for the whole run (shared by
the parallel workers)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Many tests train the same tiny config, in this process, in the parallel
# workers (which inherit this environment from the process that starts
# them) and in the commands they run: with one persistent cache for the
# whole run, each identical program is compiled once. The compiled programs
# are the same as without it; the cache is new for every run and removed at
# its end.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _compilation_cache = tempfile.mkdtemp(prefix="roadflax-tests-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _compilation_cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  atexit.register(shutil.rmtree, _compilation_cache, ignore_errors=True)

import pytest  # after the environment is set

from tests import helpers


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory):
  """A cache directory of the session's own, for this process and the
  commands it starts: tests never read or fill the user's cache."""
  os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache_home"))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
  return helpers.built_once(tmp_path_factory, "data", helpers.write_image_tree)


@pytest.fixture(scope="session")
def trained_workdir(data_root, tmp_path_factory):
  """Both stages of `helpers.tiny_config`, trained once; tests only read it."""
  from roadflax.training import train

  return helpers.built_once(
      tmp_path_factory,
      "run",
      lambda workdir: train.train_and_evaluate(
          helpers.tiny_config(data_root), workdir
      ),
  )


@pytest.fixture(scope="session")
def confident_workdir(tmp_path_factory):
  """A classifier trained until it is right, and sure, on 120 test images
  (`helpers.write_colour_tree`); tests only read it.

  The int8 bound of exports (98% top-1 agreement, accuracy within a point)
  means something only when predictions are not near-uniform: a barely
  trained model's classes lie within int8's rounding of each other, and one
  that always answers the same class agrees with anything. So this model
  learns its classes (50 steps of the classifier alone, about 15 s), and its
  test split is large enough that 98% allows two disagreements.
  """
  from roadflax.training import train

  root = helpers.built_once(
      tmp_path_factory, "colours", helpers.write_colour_tree
  )
  config = helpers.tiny_config(root, classify=50)
  config.stage_order = ("classify",)
  config.stages.classify.update(init_from="", learning_rate=0.02)
  return helpers.built_once(
      tmp_path_factory,
      "confident",
      lambda workdir: train.train_and_evaluate(config, workdir),
  )
