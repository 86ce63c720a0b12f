"""The recipe study: variants of configs/default.py and their summaries."""

import pytest

from roadflax.benchmark import recipe_study
from roadflax.configs import default


def test_every_variant_names_keys_of_the_default_config():
  for overrides in recipe_study.VARIANTS.values():
    config = default.get_config()
    recipe_study.apply(config, overrides)
  with pytest.raises(KeyError, match="data.augment.sharpen"):
    recipe_study.apply(default.get_config(), {"data.augment.sharpen": 1.0})


def test_published_augment_turns_off_every_texture_change():
  config = default.get_config()
  recipe_study.apply(config, recipe_study.SURFACE_AUGMENT)
  recipe_study.apply(config, recipe_study.PUBLISHED_AUGMENT)
  assert (
      config.data.augment.to_dict()
      == default.get_config().data.augment.to_dict()
  )


def test_summary_and_table():
  runs = [
      {"accuracy": 0.6, "ece_before": 0.1, "ece_after": 0.05, "seconds": 10},
      {"accuracy": 0.8, "ece_before": 0.2, "ece_after": 0.1, "seconds": 30},
  ]
  summary = recipe_study.summary(runs)
  assert summary["accuracy"]["mean"] == pytest.approx(0.7)
  assert summary["accuracy"]["std"] == pytest.approx(0.1414, abs=1e-4)
  assert (summary["accuracy"]["min"], summary["accuracy"]["max"]) == (0.6, 0.8)
  table = recipe_study.markdown({"variants": {"x": {"summary": summary}}})
  assert "| x | 70.0% ± 14.1 | 60.0-80.0% | 15.0% -> 7.5% | 20 |" in table
