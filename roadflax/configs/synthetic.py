"""The demo: both stages on the built-in synthetic road textures (roadtex).

The default recipe, sized to finish in minutes on a 2-core CPU: 96x96 inputs
and a few thousand images. `default.py` stays at the published 224x224.

  python main.py --config=configs/synthetic.py --workdir=runs/demo
"""

from roadflax.configs import default


def get_config():
  config = default.get_config()
  config.data.source = "synthetic"
  config.data.image_size = 96
  config.data.cache = "memory"  # the whole set fits in memory at 96 px
  config.data.synthetic.train_per_class = 600
  config.data.synthetic.val_per_class = 100
  config.data.synthetic.test_per_class = 300
  config.stages.pretrain.update(epochs=1)  # raised to its 80-step floor
  config.log_every_steps = 20
  return config
