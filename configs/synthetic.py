"""The demo: both stages on the built-in synthetic road textures (roadtex).

Sized to finish in minutes on a 2-core CPU: 112x112 inputs and a few thousand
images. `default.py` stays at the published 224x224.

  python main.py --config=configs/synthetic.py --workdir=runs/demo
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.source = "synthetic"
  config.data.image_size = 112
  config.data.cache = True  # the whole set fits in memory at 112 px
  config.data.synthetic.train_per_class = 600
  config.data.synthetic.val_per_class = 100
  config.data.synthetic.test_per_class = 300
  config.stages.pretrain.update(epochs=2, batch_size=32)
  config.stages.classify.update(
      optimizer="momentum", learning_rate=0.01, schedule="cosine", warmup_epochs=1.0,
      epochs=6, batch_size=32)
  config.log_every_steps = 20
  return config
