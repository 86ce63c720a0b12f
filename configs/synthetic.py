"""The demo: both stages on the built-in synthetic road textures (roadtex).

Sized to finish in minutes on a 2-core CPU: 96x96 inputs and a few thousand
images. `default.py` stays at the published 224x224.

  python main.py --config=configs/synthetic.py --workdir=runs/demo
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.source = "synthetic"
  config.data.image_size = 96
  config.data.cache = "memory"  # the whole set fits in memory at 96 px
  config.data.synthetic.train_per_class = 600
  config.data.synthetic.val_per_class = 100
  config.data.synthetic.test_per_class = 300
  # A gentle pre-training: at 1e-3 Adam drives the encoder's activations up
  # ~25x (no normalisation layers), and the classifier then fails to train.
  config.stages.pretrain.update(epochs=1, learning_rate=1e-4)
  # Adam is insensitive to that scale; SGD-momentum at 0.01 diverged here.
  config.stages.classify.update(
      optimizer="adam", learning_rate=2e-4, schedule="cosine", warmup_epochs=1.0,
      epochs=7)
  config.log_every_steps = 20
  return config
