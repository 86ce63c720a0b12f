"""How long a stage trains, in optimisation steps, whatever the data's size.

A stage's length is given in epochs, as the published recipe does; but ten
epochs of a hundred photos per class are ninety steps, far too few for any
optimiser. `min_steps` sets a floor: a small train split is then passed over
as often as it takes, and each of the config's epochs is stretched to
`total_steps / epochs` steps, so that warm-up, decay boundaries and early
stopping's patience keep their share of the stage, and validation and
checkpoints come once per such epoch. On a large split the floor does
nothing and an epoch is one pass.
"""

import dataclasses
import math
from typing import Any

from roadflax.data import batching

SELECTIONS = ("auto", "best", "last")


@dataclasses.dataclass(frozen=True)
class StagePlan:
  steps_per_pass: int  # global batches in one pass over the train split
  total_steps: int
  epoch_steps: (
      float  # steps in one of the config's epochs (schedules, patience)
  )
  # Steps between validations (and checkpoints): an epoch, or with an exact
  # number of `steps`, steps / epochs (at least a pass).
  eval_steps: float

  @property
  def passes(self) -> int:
    """Passes over the train split (the last may be partial)."""
    return math.ceil(self.total_steps / self.steps_per_pass)

  @property
  def stretched(self) -> bool:
    return self.epoch_steps > self.steps_per_pass

  def evaluates_after(self, pass_index: int) -> bool:
    """Whether validation and a checkpoint follow pass `pass_index`: every
    `eval_steps` (the passes nearest it), and after the last pass.

    A stretched epoch of a small split is several passes; evaluating and
    checkpointing after each pass would cost more than the steps it judges.
    """
    every = max(1, round(self.eval_steps / self.steps_per_pass))
    return (pass_index + 1) % every == 0 or pass_index + 1 == self.passes


def plan_stage(stage_config: Any, num_train_examples: int) -> StagePlan:
  """The plan of a stage with global batch `stage_config.batch_size`."""
  steps_per_pass = batching.steps_per_epoch(
      num_train_examples, stage_config.batch_size
  )
  if stage_config.steps:
    return StagePlan(
        steps_per_pass,
        stage_config.steps,
        float(steps_per_pass),
        max(float(steps_per_pass), stage_config.steps / stage_config.epochs),
    )
  total_steps = max(
      stage_config.epochs * steps_per_pass, stage_config.min_steps
  )
  epoch_steps = total_steps / stage_config.epochs
  return StagePlan(steps_per_pass, total_steps, epoch_steps, epoch_steps)


def should_stop_early(
    stage_config: Any, plan: StagePlan, step: int, best_step: int | None
) -> bool:
  """Whether `early_stopping_patience` epochs have passed since the best checkpoint.

  Read from the checkpoints' best step, so a resumed stage decides as the
  uninterrupted one would.
  """
  patience = stage_config.early_stopping_patience
  if not patience or best_step is None:
    return False
  return step - best_step >= patience * plan.epoch_steps


def selects_best(stage_config: Any, num_val_examples: int) -> bool:
  """Whether the stage hands on its best checkpoint by validation (else its
  last): `select`, where `auto` trusts a validation split of at least
  `select_min_val_images` images. On fewer, validation scores of checkpoints
  differ by less than their noise and early stopping ends on a lucky epoch
  (on 90 validation frames of unseen photographs it kept step 9 of 300)."""
  if stage_config.select == "auto":
    return num_val_examples >= stage_config.select_min_val_images
  return stage_config.select == "best"
