"""A linear probe: how well a frozen encoder's features separate the classes.

The yardstick of pre-training beside fine-tuning (SimCLR and MAE report
both): an image's features are the encoder's last map (conv6) averaged and
max-pooled over space — orderless, so any input size gives 2 x 256 numbers —
standardised with the training images' statistics; a multinomial logistic
regression with an L2 penalty is fitted to the train split by L-BFGS and
scored on the test split. Nothing of the encoder trains, so the score says
what pre-training put into it, apart from what fine-tuning adds.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from roadflax.data.contract import DataSet
from roadflax.models.roadnet import RoadNet
from roadflax.training import evaluate

L2 = 1e-2  # of the mean cross-entropy's penalty, on standardised features
STEPS = 200  # of L-BFGS


@functools.partial(jax.jit, static_argnames="model")
def _pooled_features(
    model: RoadNet, params: Any, images: jax.Array
) -> jax.Array:
  latent = model.apply({"params": params}, images, method=RoadNet.encode)
  return jnp.concatenate(
      [jnp.mean(latent, axis=(1, 2)), jnp.max(latent, axis=(1, 2))], axis=-1
  )


def split_features(
    model: RoadNet,
    params: Any,
    dataset: DataSet,
    split: str,
    data_config: Any,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
  """(pooled features [N, 512], labels [N]) of every image of a split, as
  evaluation preprocesses them, in this one process."""
  return evaluate.split_outputs(
      functools.partial(_pooled_features, model, params),
      dataset.splits[split],
      data_config,
      batch_size,
  )


def fit_logistic_regression(
    features: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(weights, bias, feature mean, feature std) of the probe fitted to `features`."""
  mean = features.mean(axis=0)
  std = features.std(axis=0) + 1e-6
  x = jnp.asarray((features - mean) / std)
  targets = jax.nn.one_hot(jnp.asarray(labels), num_classes)

  def loss(w):
    logits = x @ w["weights"] + w["bias"]
    cross_entropy = optax.softmax_cross_entropy(logits, targets).mean()
    return cross_entropy + 0.5 * L2 * jnp.sum(jnp.square(w["weights"]))

  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  @jax.jit
  def step(w, state):
    value, grad = value_and_grad(w, state=state)
    updates, state = solver.update(
        grad, state, w, value=value, grad=grad, value_fn=loss
    )
    return optax.apply_updates(w, updates), state

  w = {
      "weights": jnp.zeros((x.shape[1], num_classes)),
      "bias": jnp.zeros(num_classes),
  }
  state = solver.init(w)
  for _ in range(STEPS):
    w, state = step(w, state)
  return np.asarray(w["weights"]), np.asarray(w["bias"]), mean, std


def probe_accuracy(
    model: RoadNet, params: Any, dataset: DataSet, data_config: Any
) -> float:
  """Test accuracy of a logistic regression on the frozen encoder's features
  of the train split."""
  train_x, train_y = split_features(
      model, params, dataset, "train", data_config
  )
  test_x, test_y = split_features(model, params, dataset, "test", data_config)
  weights, bias, mean, std = fit_logistic_regression(
      train_x, train_y, len(dataset.class_names)
  )
  predicted = np.argmax(((test_x - mean) / std) @ weights + bias, axis=-1)
  return float(np.mean(predicted == test_y))
