"""Experiment configs, one file per experiment, shipped inside the package.

Variant configs (the baseline, the optimiser ablations) change a base config;
the base is `default` unless named after the file, e.g.
`--config=configs/alexnet_baseline.py:synthetic` for the demo data.

From a checkout, `configs/` is this folder; from anywhere (an installed
package), `--config=roadflax:NAME[:ARG]` names `NAME.py` here.
"""

import importlib
import os

import ml_collections

# How the command line names a shipped config: roadflax:NAME[:ARG].
SHIPPED_PREFIX = "roadflax:"
FOLDER = os.path.dirname(os.path.abspath(__file__))


def base_config(name: str | None) -> ml_collections.ConfigDict:
  module = importlib.import_module(f"roadflax.configs.{name or 'default'}")
  return module.get_config()


def shipped() -> list[str]:
  """The names of the shipped configs."""
  return sorted(
      name[: -len(".py")]
      for name in os.listdir(FOLDER)
      if name.endswith(".py") and not name.startswith("_")
  )


def resolve(spec: str) -> str:
  """`roadflax:NAME[:ARG]` as the config file path `FOLDER/NAME.py[:ARG]`;
  any other `--config` value as it is.

  Raises:
    ValueError: NAME is not a shipped config.
  """
  if not spec.startswith(SHIPPED_PREFIX):
    return spec
  name, colon, argument = spec[len(SHIPPED_PREFIX) :].partition(":")
  if name not in shipped():
    raise ValueError(
        f"--config={spec}: roadflax ships no config {name!r} (it ships:"
        f" {', '.join(shipped())})"
    )
  return os.path.join(FOLDER, f"{name}.py") + colon + argument
