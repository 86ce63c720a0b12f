"""Every shipped config loads and passes the checks; variants change only what they say."""

import glob
import importlib.util
import os

import pytest

from roadflax import configs
from roadflax.configs import default
from roadflax.errors import UserError
from roadflax.training import configuration
from tests import helpers

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
  for stage in config.stages.values():
    if stage.data.source == "folder":
      stage.data.root = stage.data.root or "/data/pool"
    if stage.init_from is None:  # a fine-tune: the run to start from
      stage.init_from = "/runs/roads/classify"
  configuration.check_config(config)


def test_fine_tune_asks_for_the_run_it_fine_tunes():
  config = _load("fine_tune.py")
  config.data.root = "/data/labelled"
  with pytest.raises(UserError, match="init_from=WORKDIR: name the trained"):
    configuration.check_config(config)
  assert config.stage_order == ("classify",)


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


def test_a_shipped_config_is_named_from_anywhere():
  path = configs.resolve("roadflax:synthetic")
  assert os.path.samefile(path, os.path.join(ROOT, "configs", "synthetic.py"))
  assert configs.resolve("roadflax:alexnet_baseline:synthetic") == (
      configs.resolve("roadflax:alexnet_baseline") + ":synthetic"
  )
  assert configs.resolve("configs/default.py") == "configs/default.py"
  assert set(configs.shipped()) == {name[:-3] for name in CONFIGS}


def test_the_command_takes_a_shipped_config_by_name():
  result = helpers.run_main("--mode=summary", "--config=roadflax:synthetic")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "conv1" in result.stdout
  line = helpers.error_line(
      helpers.run_main("--mode=summary", "--config=roadflax:synthetc")
  )
  assert "roadflax ships no config 'synthetc'" in line


@pytest.mark.parametrize(
    "key,value,message",
    [
        (
            "stages.classify.accumulate_steps",
            5,
            r"stages.classify.batch_size=32 does not split into 5 micro-batches"
            r" \(accumulate_steps\) over \d+ device\(s\): set a multiple of",
        ),
        ("stages.classify.accumulate_steps", 0, "must be at least 1"),
        ("stages.pretrain.ema_decay", 1.0, r"must be in \[0, 1\)"),
        ("model.dtype", "float64", "is not one of auto, float32"),
        ("stages.classify.select", "first", "is not one of auto, best, last"),
        ("stages.classify.select_min_val_images", -1, "must be >= 0"),
    ],
)
def test_dtype_accumulation_and_average_settings_are_checked(
    key, value, message
):
  config = default.get_config()
  config.data.root = "/data/roads"
  config.update_from_flattened_dict({key: value})
  with pytest.raises(UserError, match=message):
    configuration.check_config(config)
