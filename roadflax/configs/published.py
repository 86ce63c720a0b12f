"""The published recipe as it was: constant learning rates, no warm-up, no
clipping, no step floor; pre-training with Adam 1e-3, the classifier with
plain SGD at 0.1 (published: 86% on RSCD's three dry classes).

On small data sets it fails (docs/study/published_recipe.md);
`default.py` is the same method made to learn them.
On the demo data: --config=configs/published.py:synthetic."""

from roadflax import configs

_AS_PUBLISHED = dict(
    schedule="constant",
    warmup_epochs=0.0,
    grad_clip_norm=0.0,
    min_steps=0,
    early_stopping_patience=0,
)


def get_config(base=None):
  config = configs.base_config(base)
  config.stages.pretrain.update(
      optimizer="adam",
      learning_rate=1e-3,
      corruption="none",  # the published autoencoder: plain reconstruction
      corruption_amount=0.0,
      **_AS_PUBLISHED,
  )
  config.stages.classify.update(
      optimizer="sgd", learning_rate=0.1, **_AS_PUBLISHED
  )
  return config
