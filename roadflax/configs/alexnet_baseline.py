"""The published baseline: the same classifier trained from scratch, no pre-training.

On the demo data: --config=configs/alexnet_baseline.py:synthetic."""

import ml_collections

from roadflax import configs


def get_config(base=None):
  config = configs.base_config(base)
  classify = config.stages.classify
  classify.init_from = ""
  config.stage_order = ("classify",)
  config.stages = ml_collections.ConfigDict({"classify": classify})
  return config
