"""roadflax and Keras from the same weights on the same batches."""

import csv

import numpy as np
import pytest
from PIL import Image

from roadflax.benchmark import keras_side_by_side
from roadflax.errors import UserError
from tests import helpers


def _config(data_root, **stage):
  config = helpers.tiny_config(data_root)
  config.stage_order = ("classify",)
  config.model.dropout_rate = 0.0  # Keras and JAX draw different dropout masks
  config.stages.classify.update({
      "init_from": "",
      "schedule": "constant",
      "warmup_epochs": 0.0,
      "grad_clip_norm": 0.0,
      **stage,
  })
  return config


# Keras adds Adam's epsilon before the bias correction, optax after it: the
# same rule up to an epsilon 1/sqrt(1 - 0.999^t) times larger in Keras, which
# moves the loss by a few parts in a thousand over the first steps.
@pytest.mark.parametrize(
    "optimizer,rate,tolerance", [("sgd", 0.01, 2e-4), ("adam", 1e-4, 1e-2)]
)
def test_both_frameworks_take_the_same_steps(
    data_root, optimizer, rate, tolerance
):
  losses = keras_side_by_side.run(
      _config(data_root, optimizer=optimizer, learning_rate=rate), steps=8
  )
  assert len(losses["roadflax"]) == len(losses["keras"]) == 8
  # From the first step on (the same weights) to the last (the same updates).
  assert losses["roadflax"][0] == pytest.approx(losses["keras"][0], rel=1e-5)
  assert losses["roadflax"] == pytest.approx(losses["keras"], rel=tolerance)
  assert losses["roadflax"][0] != pytest.approx(
      losses["roadflax"][-1], rel=1e-3
  )


def test_curves_are_written(tmp_path):
  keras_side_by_side.write_curves(
      {"roadflax": [1.1, 1.0], "keras": [1.1, 0.99]}, str(tmp_path), "test"
  )
  with open(tmp_path / "curves.csv") as f:
    rows = list(csv.reader(f))
  assert rows == [
      ["step", "roadflax", "keras"],
      ["1", "1.1", "1.1"],
      ["2", "1", "0.99"],
  ]
  with Image.open(tmp_path / "curves.png") as image:
    assert image.size == (600, 350)  # 6 x 3.5 inches at 100 dpi
    pixels = np.asarray(image.convert("L"), np.float32)
  assert pixels.std() > 10  # not blank


def test_schedules_it_cannot_mirror_are_refused(data_root):
  with pytest.raises(UserError, match="constant rate"):
    keras_side_by_side.run(_config(data_root, schedule="cosine"), steps=1)
