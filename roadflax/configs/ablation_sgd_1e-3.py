"""Published optimiser grid: the classifier stage with SGD, learning rate 1e-3 (published: 75%).

On the demo data: --config=FILE:synthetic (the base config after the colon)."""

from roadflax import configs


def get_config(base=None):
  config = configs.base_config(base)
  config.stages.classify.update(optimizer="sgd", learning_rate=1e-3)
  return config
