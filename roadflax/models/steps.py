"""The train state and the pure, jit-compiled train and eval steps.

(No `from __future__ import annotations` here: clu's `metrics.Collection`
reads its fields' annotations at class creation.)
"""

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics
from flax.training import train_state

from roadflax.models.roadnet import RoadNet
from roadflax.models.objectives import Objective, objective_outputs


class TrainState(train_state.TrainState):
  """Flax's train state plus the first step whose loss was not finite (-1: none).

  Tracking it on the device lets the host look only every few steps and still
  name the exact step where training diverged.
  """

  nonfinite_step: jax.Array = flax.struct.field(
      default_factory=lambda: jnp.array(-1, jnp.int32)
  )


@flax.struct.dataclass
class ReconstructionMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  mse: metrics.Average.from_output("squared_error")


@flax.struct.dataclass
class ClassificationMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy


@flax.struct.dataclass
class JointMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy
  mse: metrics.Average.from_output("squared_error")


def _with_health_values(
    collection: type[metrics.Collection],
) -> type[metrics.Collection]:
  """`collection` plus what the health check reads (`health.py`) in training:
  the encoder output's RMS and, when it classifies, the share of a batch
  given to its most predicted class. (A new class with all the fields: clu
  reads only a class's own annotations.)"""
  fields = dict(
      collection.__annotations__,
      latent_rms=metrics.Average.from_output("latent_rms"),
  )
  if "accuracy" in fields:
    fields["top_class_share"] = metrics.Average.from_output("top_class_share")
  name = collection.__name__.replace("Metrics", "TrainMetrics")
  return flax.struct.dataclass(
      type(
          name,
          (metrics.Collection,),
          {"__annotations__": fields, "__module__": __name__},
      )
  )


ReconstructionTrainMetrics = _with_health_values(ReconstructionMetrics)
ClassificationTrainMetrics = _with_health_values(ClassificationMetrics)
JointTrainMetrics = _with_health_values(JointMetrics)


def metrics_class(
    objective: Objective, *, train: bool = False
) -> type[metrics.Collection]:
  if train:
    return {
        "reconstruction": ReconstructionTrainMetrics,
        "classification": ClassificationTrainMetrics,
        "joint": JointTrainMetrics,
    }[objective.name]
  return {
      "reconstruction": ReconstructionMetrics,
      "classification": ClassificationMetrics,
      "joint": JointMetrics,
  }[objective.name]


def _top_class_share(logits: jax.Array) -> jax.Array:
  predicted = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1])
  return jnp.max(jnp.mean(predicted, axis=0))


def _gather_metrics(
    objective: Objective,
    outputs: dict[str, jax.Array],
    batch: dict[str, jax.Array],
    mask: jax.Array | None,
    *,
    train: bool = False,
) -> metrics.Collection:
  logits = outputs.get("logits")
  return metrics_class(objective, train=train).single_from_model_output(
      loss=outputs["loss"],
      logits=logits,
      squared_error=outputs.get("squared_error"),
      labels=batch["label"],
      mask=mask,
      latent_rms=outputs["latent_rms"],
      top_class_share=None if logits is None else _top_class_share(logits),
  )


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model: RoadNet,
    objective: Objective,
    dropout_key: jax.Array,
    freeze_encoder: bool,
) -> tuple[TrainState, metrics.Collection]:
  """One optimiser update on one global batch."""
  dropout_rng = jax.random.fold_in(dropout_key, state.step)

  def loss_fn(params):
    if (
        freeze_encoder
    ):  # no gradient flows into (or is computed for) the encoder
      params = {**params, "encoder": jax.lax.stop_gradient(params["encoder"])}
    outputs = objective_outputs(
        objective, model, params, batch, train=True, dropout_rng=dropout_rng
    )
    return jnp.mean(outputs["loss"]), outputs

  (loss, outputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params
  )
  new_state = state.apply_gradients(grads=grads)
  diverged = (state.nonfinite_step < 0) & ~jnp.isfinite(loss)
  new_state = new_state.replace(
      nonfinite_step=jnp.where(diverged, state.step, state.nonfinite_step)
  )
  return new_state, _gather_metrics(
      objective, outputs, batch, mask=None, train=True
  )


def eval_step(
    params: Any,
    batch: dict[str, jax.Array],
    *,
    model: RoadNet,
    objective: Objective,
) -> tuple[metrics.Collection, jax.Array | None]:
  """Metrics of one padded batch (padding masked out) and, when the objective
  classifies, its confusion counts (rows = true class, columns = predicted)."""
  outputs = objective_outputs(objective, model, params, batch, train=False)
  mask = batch["mask"]
  confusion = None
  if objective.classifies:
    num_classes = outputs["logits"].shape[-1]
    predictions = jnp.argmax(outputs["logits"], axis=-1)
    confusion = (
        jnp.zeros((num_classes, num_classes), jnp.int32)
        .at[batch["label"], predictions]
        .add(mask.astype(jnp.int32))
    )
  return _gather_metrics(objective, outputs, batch, mask), confusion


def predict_step(
    params: Any, images: jax.Array, *, model: RoadNet
) -> jax.Array:
  """Class probabilities."""
  return jax.nn.softmax(
      model.apply({"params": params}, images, method=RoadNet.classify)
  )


def reconstruct_step(
    params: Any, images: jax.Array, *, model: RoadNet
) -> jax.Array:
  """The autoencoder's reconstruction (normalised, like its input)."""
  return model.apply({"params": params}, images, method=RoadNet.reconstruct)


def jit_train_step(
    model: RoadNet, objective: Objective, seed: int, freeze_encoder: bool
) -> Callable[..., Any]:
  """`train_step` compiled once per stage; the old state's buffers are donated."""
  step = functools.partial(
      train_step,
      model=model,
      objective=objective,
      dropout_key=jax.random.key(seed),
      freeze_encoder=freeze_encoder,
  )
  return jax.jit(step, donate_argnums=0)


def jit_eval_step(model: RoadNet, objective: Objective) -> Callable[..., Any]:
  return jax.jit(functools.partial(eval_step, model=model, objective=objective))


def jit_predict_step(model: RoadNet) -> Callable[..., Any]:
  return jax.jit(functools.partial(predict_step, model=model))


def jit_reconstruct_step(model: RoadNet) -> Callable[..., Any]:
  return jax.jit(functools.partial(reconstruct_step, model=model))


def create_train_state(
    model: RoadNet, params: Any, tx: optax.GradientTransformation
) -> TrainState:
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx)
