"""Published optimiser grid: the classifier stage with SGD, learning rate 0.1 (published: 86%, the best run; the same as default).

On the demo data: --config=FILE:synthetic (the base config after the colon)."""

from roadflax import configs


def get_config(base=None):
  config = configs.base_config(base)
  config.stages.classify.update(optimizer="sgd", learning_rate=0.1)
  return config
