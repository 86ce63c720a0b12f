"""Published optimiser grid: the classifier stage with Adam, learning rate 1e-3 (published: 73%).

On the demo data: --config=FILE:synthetic (the base config after the colon)."""

from roadflax import configs


def get_config(base=None):
  config = configs.base_config(base)
  config.stages.classify.update(optimizer="adam", learning_rate=1e-3)
  return config
