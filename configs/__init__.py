"""Experiment configs, one file per experiment.

Variant configs (the baseline, the optimiser ablations) change a base config;
the base is `default` unless named after the file, e.g.
`--config=configs/alexnet_baseline.py:synthetic` for the demo data.
"""

import importlib

import ml_collections


def base_config(name: str | None) -> ml_collections.ConfigDict:
  return importlib.import_module(f"configs.{name or 'default'}").get_config()
