"""All 27 RSCD classes (friction x material x unevenness, snow and ice).

  python main.py --config=configs/rscd27.py --workdir=runs/rscd27 \
      --config.data.manual_dir=/data/rscd

The classes are far from balanced, so the loss is weighted by the inverse of
the train counts (--config.data.balance=resample draws classes equally often
instead; none trains on the raw frequencies).
"""

from roadflax.configs import default


def get_config():
  config = default.get_config()
  config.data.source = "rscd"
  config.data.variant = "27class"
  config.data.balance = "class_weights"
  return config
