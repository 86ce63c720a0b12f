"""Training-health checks: a stage that is not learning says so, in one line.

A network without normalisation layers can fail quietly: the classifier's
loss sits at ln(num_classes) (chance), or every prediction is one class, or
the encoder's activations grow until nothing trains, or die away. The train step already
averages, on the device, what these checks read (loss, the share of the most
predicted class, the encoder output's root mean square); the host looks at
them only when it logs, so the checks cost no extra synchronisation. Each
problem is reported once per stage, with its likely cause and what to try.
"""

import dataclasses
import math
from typing import Any

# The loss counts as "at chance" within this fraction of ln(num_classes), and
# as diverging above this multiple of it.
_CHANCE_TOLERANCE = 0.03
_DIVERGING_MULTIPLE = 3.0


@dataclasses.dataclass
class HealthCheck:
  """Watches one stage's logged training values over `window_steps` steps."""

  stage_name: str
  num_classes: int
  classifies: bool
  window_steps: int  # 0 = off
  collapse_fraction: (
      float  # a class predicted for more than this share of a batch
  )
  # The encoder output's RMS this many times above its lowest value, or below
  # its highest (its ReLUs dying).
  activation_growth: float
  learning_rate: float
  _lowest_rms: float = math.inf
  _highest_rms: float = 0.0
  _since: dict[str, int] = dataclasses.field(default_factory=dict)
  _reported: set[str] = dataclasses.field(default_factory=set)

  def update(self, step: int, values: dict[str, Any]) -> list[str]:
    """New warnings for the values logged at `step` (averages since the last log)."""
    if not self.window_steps:
      return []
    problems = {}
    if self.classifies:
      chance = math.log(self.num_classes)
      loss = float(values["loss"])
      if loss > _DIVERGING_MULTIPLE * chance:
        problems["diverging"] = (
            f"the training loss ({loss:.3g}) has stayed above"
            f" {_DIVERGING_MULTIPLE:g} x ln({self.num_classes}), worse than"
            " chance"
        )
      if abs(loss - chance) <= _CHANCE_TOLERANCE * chance:
        problems["chance"] = (
            f"the training loss has stayed at ln({self.num_classes}) ="
            f" {chance:.3f}, chance level"
        )
      if float(values["top_class_share"]) > self.collapse_fraction:
        problems["collapse"] = (
            "the predictions have collapsed to one class "
            f"({float(values['top_class_share']):.0%} of each batch)"
        )
    rms = float(values["latent_rms"])
    self._lowest_rms = min(self._lowest_rms, rms)
    self._highest_rms = max(self._highest_rms, rms)
    if rms > self.activation_growth * self._lowest_rms:
      problems["growth"] = (
          "the encoder's activations have grown"
          f" {rms / self._lowest_rms:.0f}-fold (RMS {self._lowest_rms:.3g} ->"
          f" {rms:.3g})"
      )
    if rms * self.activation_growth < self._highest_rms:
      problems["shrinking"] = (
          "the encoder's activations have shrunk"
          f" {self._highest_rms / max(rms, 1e-30):.0f}-fold (RMS"
          f" {self._highest_rms:.3g} -> {rms:.3g}): its ReLUs are dying"
      )
    for name in list(self._since):
      if name not in problems:
        del self._since[name]
    warnings = []
    for name, what in problems.items():
      since = self._since.setdefault(name, step)
      if step - since >= self.window_steps and name not in self._reported:
        self._reported.add(name)
        warnings.append(
            f"warning: stage {self.stage_name!r}, for {step - since} steps: "
            f"{what}; {self._hint(name)}"
        )
    return warnings

  def _hint(self, problem: str) -> str:
    rate = f"the learning rate ({self.learning_rate:g})"
    if problem in ("growth", "shrinking", "diverging"):
      return (
          f"{rate} is likely too high for this network without normalisation"
          " layers: lower it, add warm-up or grad_clip_norm, or set"
          " model.norm=group"
      )
    return (
        f"{rate} is likely too high (or too low to move at all), or the encoder"
        " it starts from is saturated: try a lower rate with warm-up, or"
        " pre-train with a lower learning rate"
    )


def from_config(
    config: Any, stage_name: str, num_classes: int, classifies: bool
) -> HealthCheck:
  health = config.health
  return HealthCheck(
      stage_name=stage_name,
      num_classes=num_classes,
      classifies=classifies,
      window_steps=health.window_steps,
      collapse_fraction=health.collapse_fraction,
      activation_growth=health.activation_growth,
      learning_rate=config.stages[stage_name].learning_rate,
  )
