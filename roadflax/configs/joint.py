"""One stage: cross-entropy plus weighted reconstruction, trained together."""

import ml_collections

from roadflax import configs
from roadflax.configs import default


def get_config(base=None):
  config = configs.base_config(base)
  config.stage_order = ("joint",)
  config.stages = ml_collections.ConfigDict({
      "joint": default.stage(
          objective="joint",
          optimizer="sgd",
          learning_rate=0.1,
          epochs=10,
          batch_size=32,
          reconstruction_weight=1.0,
      )
  })
  return config
