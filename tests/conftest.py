"""Shared test setup: quiet TensorFlow, and one small image tree and one
trained workdir for the whole session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # after the environment is set

from tests import helpers


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory):
  """A cache directory of the session's own, for this process and the
  commands it starts: tests never read or fill the user's cache."""
  os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache_home"))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
  return helpers.write_image_tree(str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="session")
def trained_workdir(data_root, tmp_path_factory):
  """Both stages of `helpers.tiny_config`, trained once; tests only read it."""
  from roadflax.training import train

  workdir = str(tmp_path_factory.mktemp("run"))
  train.train_and_evaluate(helpers.tiny_config(data_root), workdir)
  return workdir
