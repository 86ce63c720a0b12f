"""Objectives, optimisers and the jitted steps on a tiny model input (67 px)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from roadflax.configs import default
from roadflax.models import objectives, optimizers, roadnet, steps

SIZE = 67


def _batch(n=4, num_classes=3, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "image": jnp.asarray(rng.normal(size=(n, SIZE, SIZE, 3)), jnp.float32),
      "label": jnp.asarray(rng.integers(0, num_classes, n), jnp.int32),
      "mask": jnp.asarray([True] * (n - 1) + [False]),
  }


def _state(stage_config, objective, head_input="latent", freeze=False):
  model = roadnet.RoadNet(num_classes=3, head_input=head_input)
  params = roadnet.init_params(model, jax.random.key(0), SIZE)
  trainable = objective.trees(head_input) - ({"encoder"} if freeze else set())
  schedule = optimizers.learning_rate_schedule(stage_config, 10, 100)
  tx = optimizers.create_optimizer(stage_config, schedule, frozenset(trainable))
  return model, steps.create_train_state(model, params, tx)


def _changed(before, after):
  return {
      tree: not all(
          jnp.array_equal(a, b)
          for a, b in zip(
              jax.tree_util.tree_leaves(before[tree]),
              jax.tree_util.tree_leaves(after[tree]),
          )
      )
      for tree in before
  }


@pytest.mark.parametrize(
    "name,expected",
    [
        ("reconstruction", {"encoder": True, "decoder": True, "head": False}),
        ("classification", {"encoder": True, "decoder": False, "head": True}),
        ("joint", {"encoder": True, "decoder": True, "head": True}),
    ],
)
def test_each_objective_trains_exactly_its_trees(name, expected):
  stage = default.stage(objective=name, optimizer="adam", learning_rate=1e-3)
  objective = objectives.objective_from_config(stage)
  model, state = _state(stage, objective)
  before = jax.tree_util.tree_map(jnp.copy, state.params)
  step = steps.jit_train_step(model, objective, seed=0, freeze_encoder=False)
  state, metrics = step(state, _batch())
  assert _changed(before, state.params) == expected
  assert int(state.step) == 1
  assert np.isfinite(float(metrics.compute()["loss"]))


def test_frozen_encoder_stays_fixed_and_has_no_optimiser_state():
  stage = default.stage(
      objective="classification",
      optimizer="momentum",
      learning_rate=0.01,
      freeze_encoder=True,
  )
  objective = objectives.objective_from_config(stage)
  model, state = _state(stage, objective, freeze=True)
  before = jax.tree_util.tree_map(jnp.copy, state.params)
  state, _ = steps.jit_train_step(model, objective, 0, freeze_encoder=True)(
      state, _batch()
  )
  assert _changed(before, state.params) == {
      "encoder": False,
      "decoder": False,
      "head": True,
  }
  momentum_leaves = jax.tree_util.tree_leaves(state.opt_state)
  assert (
      sum(x.size for x in momentum_leaves)
      < roadnet.count_params(state.params["head"]) + 10
  )


def test_eval_step_masks_padding_and_counts_confusion():
  stage = default.stage(objective="classification")
  objective = objectives.objective_from_config(stage)
  model, state = _state(stage, objective)
  batch = _batch(n=6)
  metrics, confusion = steps.jit_eval_step(model, objective)(
      state.params, batch
  )
  assert int(confusion.sum()) == 5  # the masked example is not counted
  assert float(metrics.compute()["accuracy"]) * 5 == pytest.approx(
      float(np.trace(confusion))
  )


def test_class_weights_scale_the_loss():
  model = roadnet.RoadNet(num_classes=3)
  params = roadnet.init_params(model, jax.random.key(0), SIZE)
  batch = _batch()
  plain = objectives.objective_outputs(
      objectives.Objective("classification"), model, params, batch, train=False
  )["loss"]
  weighted = objectives.objective_outputs(
      objectives.Objective("classification", class_weights=(2.0, 2.0, 2.0)),
      model,
      params,
      batch,
      train=False,
  )["loss"]
  np.testing.assert_allclose(weighted, 2 * plain, rtol=1e-6)


def test_non_finite_loss_records_the_first_bad_step():
  stage = default.stage(
      objective="classification", optimizer="sgd", learning_rate=0.01
  )
  objective = objectives.objective_from_config(stage)
  model, state = _state(stage, objective)
  step = steps.jit_train_step(model, objective, 0, freeze_encoder=False)
  state, _ = step(state, _batch())
  bad = _batch()
  bad["image"] = bad["image"].at[0, 0, 0, 0].set(jnp.nan)
  state, _ = step(state, bad)
  state, _ = step(state, bad)
  assert int(state.nonfinite_step) == 1  # the second update (0-based step 1)


@pytest.mark.parametrize(
    "schedule,at,expected",
    [
        ("constant", [0, 50, 99], [1.0, 1.0, 1.0]),
        ("cosine", [0, 100], [1.0, 0.0]),
        ("step", [0, 29, 30, 60], [1.0, 1.0, 0.1, 0.01]),
    ],
)
def test_schedules(schedule, at, expected):
  stage = default.stage(
      learning_rate=1.0, schedule=schedule, decay_epochs=(3, 6)
  )
  fn = optimizers.learning_rate_schedule(
      stage, steps_per_epoch=10, total_steps=100
  )
  np.testing.assert_allclose([float(fn(s)) for s in at], expected, atol=1e-6)


def test_warmup_rises_linearly_to_the_base_rate():
  stage = default.stage(learning_rate=0.5, schedule="cosine", warmup_epochs=1.0)
  fn = optimizers.learning_rate_schedule(
      stage, steps_per_epoch=10, total_steps=100
  )
  np.testing.assert_allclose(
      [float(fn(s)) for s in (0, 5, 10)], [0.0, 0.25, 0.5], atol=1e-6
  )


def test_noise_corruption_changes_the_input_not_the_target():
  images = jnp.zeros((2, SIZE, SIZE, 3))
  noisy = objectives.corrupt(images, "noise", 0.5, jax.random.key(0))
  assert 0.45 < float(jnp.std(noisy)) < 0.55
  objective = objectives.Objective(
      "reconstruction", corruption="noise", corruption_amount=20.0
  )
  model = roadnet.RoadNet(num_classes=3)
  params = roadnet.init_params(model, jax.random.key(0), SIZE)
  batch = _batch()
  clean = objectives.objective_outputs(
      objectives.Objective("reconstruction"),
      model,
      params,
      batch,
      train=True,
      dropout_rng=jax.random.key(1),
  )
  corrupted = objectives.objective_outputs(
      objective, model, params, batch, train=True, dropout_rng=jax.random.key(1)
  )
  evaluated = objectives.objective_outputs(
      objective, model, params, batch, train=False
  )
  # The encoder saw the noisy input (its activations scale with it) ...
  assert float(corrupted["latent_rms"]) > 5 * float(clean["latent_rms"])
  # ... and evaluation sees the clean one, against the same target.
  np.testing.assert_allclose(
      evaluated["latent_rms"], clean["latent_rms"], rtol=1e-6
  )
  np.testing.assert_allclose(
      evaluated["squared_error"], clean["squared_error"], rtol=1e-6
  )


def test_mask_corruption_hides_whole_patches_in_the_given_share():
  images = jnp.ones((8, 96, 96, 3))
  masked = np.asarray(
      objectives.corrupt(images, "mask", 0.75, jax.random.key(0))
  )
  patches = masked.reshape(8, 6, 16, 6, 16, 3)
  per_patch = patches.mean(axis=(2, 4, 5))
  assert set(np.unique(per_patch)) <= {
      0.0,
      1.0,
  }  # whole patches, nothing in between
  assert 0.65 < 1 - per_patch.mean() < 0.85
