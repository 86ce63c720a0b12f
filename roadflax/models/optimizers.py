"""Optax optimisers and learning-rate schedules built from a stage's config.

Only the parameter trees a stage trains get an optimiser (and optimiser
state); the others — a frozen encoder, or the head during pre-training — go
through `optax.set_to_zero`, so they cost no memory and cannot drift.
"""

from typing import Any

import jax
import optax

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")


def learning_rate_schedule(
    stage_config: Any, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
  """Linear warm-up, then constant, cosine decay to 0, or step decay."""
  base = stage_config.learning_rate
  warmup_steps = min(
      int(round(stage_config.warmup_epochs * steps_per_epoch)), total_steps
  )
  decay_steps = max(total_steps - warmup_steps, 1)
  if stage_config.schedule == "cosine":
    main = optax.cosine_decay_schedule(base, decay_steps)
  elif stage_config.schedule == "step":
    boundaries = {
        int(epoch * steps_per_epoch) - warmup_steps: stage_config.decay_factor
        for epoch in stage_config.decay_epochs
    }
    main = optax.piecewise_constant_schedule(base, boundaries)
  else:
    main = optax.constant_schedule(base)
  if warmup_steps == 0:
    return main
  warmup = optax.linear_schedule(0.0, base, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


def _decay_mask(params: Any) -> Any:
  """Weight decay on kernels only, not on biases."""
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def _base_optimizer(
    stage_config: Any, schedule: optax.Schedule
) -> optax.GradientTransformation:
  name, decay = stage_config.optimizer, stage_config.weight_decay
  if name == "adamw":
    return optax.adamw(schedule, weight_decay=decay, mask=_decay_mask)
  if name == "adam":
    optimizer = optax.adam(schedule)
  elif name == "momentum":
    optimizer = optax.sgd(schedule, momentum=stage_config.momentum)
  else:
    optimizer = optax.sgd(schedule)
  if decay:
    optimizer = optax.chain(
        optax.add_decayed_weights(decay, mask=_decay_mask), optimizer
    )
  return optimizer


def create_optimizer(
    stage_config: Any, schedule: optax.Schedule, trainable: frozenset[str]
) -> optax.GradientTransformation:
  """The stage's optimiser over the trees in `trainable`; the rest stay fixed."""
  optimizer = _base_optimizer(stage_config, schedule)
  if stage_config.grad_clip_norm:
    optimizer = optax.chain(
        optax.clip_by_global_norm(stage_config.grad_clip_norm), optimizer
    )
  return optax.multi_transform(
      {"train": optimizer, "fixed": optax.set_to_zero()},
      lambda params: {
          tree: jax.tree_util.tree_map(
              lambda _, t=tree: "train" if t in trainable else "fixed", subtree
          )
          for tree, subtree in params.items()
      },
  )
