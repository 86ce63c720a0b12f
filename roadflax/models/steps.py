"""The train state and the pure, jit-compiled train and eval steps.

(No `from __future__ import annotations` here: clu's `metrics.Collection`
reads its fields' annotations at class creation.)
"""

import functools
from typing import Any, Callable, Iterable

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics
from flax.training import train_state

from roadflax.models import test_time
from roadflax.models.roadnet import RoadNet
from roadflax.models.objectives import Objective, objective_outputs


class TrainState(train_state.TrainState):
  """Flax's train state plus the first step whose loss was not finite (-1:
  none) and, when `ema_decay` > 0, an exponential moving average of the
  trained trees' parameters.

  Tracking the non-finite step on the device lets the host look only every
  few steps and still name the exact step where training diverged.
  """

  nonfinite_step: jax.Array = flax.struct.field(
      default_factory=lambda: jnp.array(-1, jnp.int32)
  )
  ema_params: Any = None  # {tree: params} of the trained trees, or None
  ema_decay: float = flax.struct.field(pytree_node=False, default=0.0)

  @property
  def eval_params(self) -> Any:
    """The parameters to validate, keep as best and use: the trained ones,
    with the averaged trees in their place when the average is kept."""
    if self.ema_params is None:
      return self.params
    return {**self.params, **self.ema_params}


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


@flax.struct.dataclass
class ContrastiveMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  pair_accuracy: metrics.Average.from_output("pair_accuracy")


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
ContrastiveTrainMetrics = _with_health_values(ContrastiveMetrics)


def metrics_class(
    objective: Objective, *, train: bool = False
) -> type[metrics.Collection]:
  if train:
    return {
        "reconstruction": ReconstructionTrainMetrics,
        "classification": ClassificationTrainMetrics,
        "joint": JointTrainMetrics,
        "contrastive": ContrastiveTrainMetrics,
    }[objective.name]
  return {
      "reconstruction": ReconstructionMetrics,
      "classification": ClassificationMetrics,
      "joint": JointMetrics,
      "contrastive": ContrastiveMetrics,
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
      pair_accuracy=outputs.get("pair_accuracy"),
      labels=batch["label"],
      mask=mask,
      latent_rms=outputs["latent_rms"],
      top_class_share=None if logits is None else _top_class_share(logits),
  )


def _ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The average's decay for the update after `step` updates: min(decay,
  (1 + step) / (10 + step)), the warm-up of TensorFlow's
  ExponentialMovingAverage, so that the starting parameters (random, or
  another stage's) are forgotten within a stage of a few hundred steps."""
  step = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def _gradients(
    loss_fn: Callable[..., Any],
    params: Any,
    batch: dict[str, jax.Array],
    dropout_rng: jax.Array,
    accumulate_steps: int,
) -> tuple[Any, dict[str, jax.Array]]:
  """The mean loss's gradients over `batch` and the outputs, per example in
  the batch's order; with `accumulate_steps` k > 1 computed on k
  micro-batches in turn (`lax.scan`), so that only one micro-batch's
  activations are in memory, and the gradients averaged."""
  grad_fn = jax.grad(loss_fn, has_aux=True)
  if accumulate_steps == 1:
    return grad_fn(params, batch, dropout_rng)
  k = accumulate_steps
  # Micro-batch i holds examples i, i + k, i + 2k, ...: each device's part of
  # the global batch holds its part of every micro-batch, so none moves.
  micro_batches = jax.tree_util.tree_map(
      lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1),
      batch,
  )

  def accumulate(grad_sum, inputs):
    index, micro_batch = inputs
    grads, outputs = grad_fn(
        params, micro_batch, jax.random.fold_in(dropout_rng, index)
    )
    return jax.tree_util.tree_map(jnp.add, grad_sum, grads), outputs

  grad_sum, outputs = jax.lax.scan(
      accumulate,
      jax.tree_util.tree_map(jnp.zeros_like, params),
      (jnp.arange(k), micro_batches),
  )
  grads = jax.tree_util.tree_map(lambda g: g / k, grad_sum)
  merged = {
      name: value.swapaxes(0, 1).reshape(-1, *value.shape[2:])
      for name, value in outputs.items()
      if name != "latent_rms"
  }
  # Micro-batches are equal in size: the batch's mean square is their mean.
  merged["latent_rms"] = jnp.sqrt(jnp.mean(jnp.square(outputs["latent_rms"])))
  return grads, merged


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model: RoadNet,
    objective: Objective,
    dropout_key: jax.Array,
    freeze_encoder: bool,
    accumulate_steps: int = 1,
) -> tuple[TrainState, metrics.Collection]:
  """One optimiser update on one global batch (in `accumulate_steps`
  micro-batches), and the moving average's when it is kept."""

  def loss_fn(params, batch, dropout_rng):
    if (
        freeze_encoder
    ):  # no gradient flows into (or is computed for) the encoder
      params = {**params, "encoder": jax.lax.stop_gradient(params["encoder"])}
    outputs = objective_outputs(
        objective, model, params, batch, train=True, dropout_rng=dropout_rng
    )
    return jnp.mean(outputs["loss"]), outputs

  grads, outputs = _gradients(
      loss_fn,
      state.params,
      batch,
      jax.random.fold_in(dropout_key, state.step),
      accumulate_steps,
  )
  loss = jnp.mean(outputs["loss"])
  new_state = state.apply_gradients(grads=grads)
  if state.ema_params is not None:
    decay = _ema_decay_at(state.ema_decay, state.step)
    new_state = new_state.replace(
        ema_params=jax.tree_util.tree_map(
            lambda average, new: decay * average + (1.0 - decay) * new,
            state.ema_params,
            {tree: new_state.params[tree] for tree in state.ema_params},
        )
    )
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
    tta: str = "none",
) -> tuple[metrics.Collection, jax.Array | None, jax.Array | None]:
  """Metrics of one padded batch (padding masked out) and, when the objective
  classifies, its confusion counts (rows = true class, columns = predicted)
  and logits (of every row, padding too), with test-time augmentation `tta`
  (`test_time`: the logits are then the log of the views' mean softmax)."""
  outputs = objective_outputs(
      objective, model, params, batch, train=False, tta=tta
  )
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
  return (
      _gather_metrics(objective, outputs, batch, mask),
      confusion,
      outputs.get("logits"),
  )


def probabilities(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Class probabilities: softmax(logits / temperature), the temperature
  the stage's calibration fitted (`training.calibrate`)."""
  return jax.nn.softmax(logits / temperature)


def predict_step(
    params: Any,
    images: jax.Array,
    *,
    model: RoadNet,
    temperature: float = 1.0,
    tta: str = "none",
) -> jax.Array:
  """Class probabilities with test-time augmentation `tta`, scaled by
  `temperature`: softmax(log(mean over views of softmax) / T), as the
  temperature was fitted on `eval_step`'s logits."""
  classify = functools.partial(
      model.apply, {"params": params}, method=RoadNet.classify
  )
  return probabilities(test_time.logits(classify, images, tta), temperature)


def reconstruct_step(
    params: Any, images: jax.Array, *, model: RoadNet
) -> jax.Array:
  """The autoencoder's reconstruction (normalised, like its input)."""
  return model.apply({"params": params}, images, method=RoadNet.reconstruct)


def jit_train_step(
    model: RoadNet,
    objective: Objective,
    seed: int,
    freeze_encoder: bool,
    accumulate_steps: int = 1,
) -> Callable[..., Any]:
  """`train_step` compiled once per stage; the old state's buffers are donated."""
  step = functools.partial(
      train_step,
      model=model,
      objective=objective,
      dropout_key=jax.random.key(seed),
      freeze_encoder=freeze_encoder,
      accumulate_steps=accumulate_steps,
  )
  return jax.jit(step, donate_argnums=0)


def jit_eval_step(
    model: RoadNet, objective: Objective, tta: str = "none"
) -> Callable[..., Any]:
  return jax.jit(
      functools.partial(eval_step, model=model, objective=objective, tta=tta)
  )


def jit_predict_step(
    model: RoadNet, temperature: float = 1.0, tta: str = "none"
) -> Callable[..., Any]:
  return jax.jit(
      functools.partial(
          predict_step, model=model, temperature=temperature, tta=tta
      )
  )


def jit_reconstruct_step(model: RoadNet) -> Callable[..., Any]:
  return jax.jit(functools.partial(reconstruct_step, model=model))


def create_train_state(
    model: RoadNet,
    params: Any,
    tx: optax.GradientTransformation,
    *,
    ema_decay: float = 0.0,
    ema_trees: Iterable[str] = (),
) -> TrainState:
  """A fresh state; with `ema_decay` > 0 the average of `ema_trees` starts
  at their parameters (copies: the state's buffers are donated one by one)."""
  ema_params = None
  if ema_decay:
    ema_params = {
        tree: jax.tree_util.tree_map(jnp.copy, params[tree])
        for tree in sorted(ema_trees)
    }
  return TrainState.create(
      apply_fn=model.apply,
      params=params,
      tx=tx,
      ema_params=ema_params,
      ema_decay=ema_decay,
  )
