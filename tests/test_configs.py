"""Every shipped config loads and passes the checks; variants change only what they say."""

import glob
import importlib.util
import os

import pytest

from configs import default
from roadflax.training import configuration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.basename(p)
    for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if not p.endswith("__init__.py")
)


def _load(name):
  """As --config=configs/NAME does: the file run as a module, then get_config()."""
  spec = importlib.util.spec_from_file_location(
      name[:-3], os.path.join(ROOT, "configs", name)
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_config_passes_the_checks(name):
  config = _load(name)
  config.data.root = config.data.root or "/data/roads"
  config.data.manual_dir = config.data.manual_dir or "/data/rscd"
  configuration.check_config(config)


def test_published_config_is_the_published_recipe():
  config = _load("published.py")
  pretrain, classify = config.stages.pretrain, config.stages.classify
  assert (pretrain.optimizer, pretrain.learning_rate) == ("adam", 1e-3)
  assert (classify.optimizer, classify.learning_rate) == ("sgd", 0.1)
  for stage in (pretrain, classify):
    assert (
        stage.schedule,
        stage.warmup_epochs,
        stage.grad_clip_norm,
        stage.min_steps,
        stage.early_stopping_patience,
    ) == ("constant", 0.0, 0.0, 0, 0)


def test_default_keeps_the_published_network():
  config = default.get_config()
  assert (
      config.data.image_size,
      config.model.norm,
      config.model.dropout_rate,
  ) == (224, "none", 0.5)
  assert config.stage_order == ("pretrain", "classify")
