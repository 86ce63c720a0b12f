"""The linear probe of a frozen encoder."""

import numpy as np

from roadflax.datasets import sources
from roadflax.configs import default
from roadflax.models import roadnet
from roadflax.training import linear_probe
import jax


def test_the_probe_fits_separable_features_and_generalises():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 20)) * 3
  labels = rng.integers(0, 3, 90)
  features = centres[labels] + rng.normal(size=(90, 20))
  weights, bias, mean, std = linear_probe.fit_logistic_regression(
      features[:60], labels[:60], 3
  )
  predicted = np.argmax(((features[60:] - mean) / std) @ weights + bias, -1)
  assert np.mean(predicted == labels[60:]) > 0.95
  # Labels that features do not predict: no better than chance on new ones.
  noise = rng.integers(0, 3, 90)
  weights, bias, mean, std = linear_probe.fit_logistic_regression(
      features[:60], noise[:60], 3
  )
  predicted = np.argmax(((features[60:] - mean) / std) @ weights + bias, -1)
  assert np.mean(predicted == noise[60:]) < 0.6


def test_probe_of_an_encoder_on_a_folder(data_root):
  config = default.get_config()
  config.data.root = data_root
  config.data.image_size = 67
  dataset = sources.load_dataset(config.data)
  model = roadnet.RoadNet(num_classes=3, head_units=16)
  params = roadnet.init_params(model, jax.random.key(0), 67)
  features, labels = linear_probe.split_features(
      model, params, dataset, "test", config.data, batch_size=5
  )
  assert features.shape == (len(dataset.splits["test"]), 512)
  np.testing.assert_array_equal(labels, dataset.splits["test"].labels)
  accuracy = linear_probe.probe_accuracy(model, params, dataset, config.data)
  assert 0.0 <= accuracy <= 1.0
