"""Objectives, optimisers and the jitted steps on a tiny model input (67 px)
with a narrow head (`helpers.HEAD_UNITS`)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from roadflax.configs import default, synthetic
from roadflax.models import objectives, optimizers, roadnet, steps
from tests.helpers import HEAD_UNITS

SIZE = 67


def _batch(n=4, num_classes=3, seed=0):
  rng = np.random.default_rng(seed)
  return {
      "image": jnp.asarray(rng.normal(size=(n, SIZE, SIZE, 3)), jnp.float32),
      "label": jnp.asarray(rng.integers(0, num_classes, n), jnp.int32),
      "mask": jnp.asarray([True] * (n - 1) + [False]),
  }


def _state(stage_config, objective, head_input="latent", freeze=False):
  model = roadnet.RoadNet(
      num_classes=3, head_units=HEAD_UNITS, head_input=head_input
  )
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
        ("contrastive", {"encoder": True, "decoder": False, "head": True}),
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
  metrics, confusion, logits = steps.jit_eval_step(model, objective)(
      state.params, batch
  )
  assert int(confusion.sum()) == 5  # the masked example is not counted
  assert logits.shape == (6, 3)  # every row's, for the caller to mask
  assert float(metrics.compute()["accuracy"]) * 5 == pytest.approx(
      float(np.trace(confusion))
  )


def test_class_weights_scale_the_loss():
  model = roadnet.RoadNet(num_classes=3, head_units=HEAD_UNITS)
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
  model = roadnet.RoadNet(num_classes=3, head_units=HEAD_UNITS)
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


def _copy(tree):
  return jax.tree_util.tree_map(jnp.copy, tree)


def _max_difference(a, b):
  return max(
      float(jnp.max(jnp.abs(x - y)))
      for x, y in zip(
          jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
      )
  )


def test_bfloat16_training_follows_float32_with_float32_state():
  # The demo's first stage, without warm-up (which would leave these steps
  # at a rate near 0) and dropout, jointly so both losses are compared; the
  # published head, for which the bound was measured.
  stage = synthetic.get_config().stages.pretrain
  stage.update(objective="joint", schedule="constant", warmup_epochs=0.0)
  objective = objectives.objective_from_config(stage)
  schedule = optimizers.learning_rate_schedule(stage, 10, 100)
  tx = optimizers.create_optimizer(stage, schedule, objective.trees("latent"))
  init = roadnet.init_params(
      roadnet.RoadNet(num_classes=3, dropout_rate=0.0),
      jax.random.key(0),
      SIZE,
  )
  batch = _batch(n=8)
  losses = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    model = roadnet.RoadNet(num_classes=3, dropout_rate=0.0, dtype=dtype)
    state = steps.create_train_state(model, _copy(init), tx)
    step = steps.jit_train_step(model, objective, 0, freeze_encoder=False)
    losses[dtype] = []
    for _ in range(5):
      state, metrics = step(state, batch)
      losses[dtype].append(float(metrics.compute()["loss"]))
    leaves = jax.tree_util.tree_leaves((state.params, state.opt_state))
    assert {x.dtype for x in leaves if x.ndim} == {jnp.dtype(jnp.float32)}
  # Measured: 8e-6 apart at the first step, at most 1.8% (the fifth).
  np.testing.assert_allclose(
      losses[jnp.bfloat16], losses[jnp.float32], rtol=0.03
  )
  assert losses[jnp.bfloat16] != losses[jnp.float32]  # bfloat16 did compute


def _sgd_state(optimizer, ema_decay=0.0):
  stage = default.stage(
      objective="classification", optimizer=optimizer, learning_rate=0.05
  )
  objective = objectives.objective_from_config(stage)
  model = roadnet.RoadNet(
      num_classes=3, head_units=HEAD_UNITS, dropout_rate=0.0
  )
  params = roadnet.init_params(model, jax.random.key(0), SIZE)
  trainable = objective.trees("latent")
  tx = optimizers.create_optimizer(
      stage, optax.constant_schedule(0.05), trainable
  )
  state = steps.create_train_state(
      model, params, tx, ema_decay=ema_decay, ema_trees=trainable
  )
  return model, objective, state


def test_accumulated_micro_batches_update_as_one_batch():
  model, objective, start = _sgd_state("momentum")
  batches = [_batch(n=32, seed=seed) for seed in (1, 2)]
  results = {}
  for k in (1, 4):
    step = steps.jit_train_step(model, objective, 0, False, accumulate_steps=k)
    state = _copy(start)
    for batch in batches:  # two, so that momentum carries the first
      state, metrics = step(state, batch)
    results[k] = state.params, metrics.compute()
  # One micro-batch alone: what an update on a wrong share would resemble.
  step = steps.jit_train_step(model, objective, 0, False)
  state = _copy(start)
  for batch in batches:
    state, _ = step(state, {name: x[::4] for name, x in batch.items()})
  one_micro_batch = state.params

  def update(params):
    return jax.tree_util.tree_map(jnp.subtract, params, start.params)

  whole, accumulated = update(results[1][0]), update(results[4][0])
  scale = max(
      float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(whole)
  )
  # Float32 rounding of sums taken in another order: measured 3.5e-6 x scale
  # (one micro-batch alone: 1.8 x scale).
  assert _max_difference(accumulated, whole) < 1e-4 * scale
  assert _max_difference(update(one_micro_batch), whole) > 0.1 * scale
  for name in ("loss", "accuracy", "latent_rms", "top_class_share"):
    np.testing.assert_allclose(
        results[4][1][name], results[1][1][name], rtol=1e-5, err_msg=name
    )


def test_accumulation_holds_one_micro_batch_of_activations():
  # Compiled, not run: the step's temporary buffers at the published size,
  # where activations outweigh the gradient sum accumulation adds.
  stage = default.stage(objective="classification")
  objective = objectives.objective_from_config(stage)
  model = roadnet.RoadNet(num_classes=3, head_units=HEAD_UNITS)
  tx = optimizers.create_optimizer(
      stage, optax.constant_schedule(0.1), objective.trees("latent")
  )
  state = jax.eval_shape(
      lambda key: steps.create_train_state(
          model, roadnet.init_params(model, key, 224), tx
      ),
      jax.random.key(0),
  )
  batch = {
      "image": jax.ShapeDtypeStruct((64, 224, 224, 3), jnp.float32),
      "label": jax.ShapeDtypeStruct((64,), jnp.int32),
  }
  temporary = {
      k: (
          steps.jit_train_step(model, objective, 0, False, k)
          .lower(state, batch)
          .compile()
          .memory_analysis()
          .temp_size_in_bytes
      )
      for k in (1, 4)
  }
  assert temporary[4] < 0.5 * temporary[1]  # measured: 570 MB, 1294 MB


def test_the_weight_average_follows_its_formula():
  decay = 0.9
  model, objective, state = _sgd_state("sgd", ema_decay=decay)
  assert set(state.ema_params) == {"encoder", "head"}
  step = steps.jit_train_step(model, objective, 0, freeze_encoder=False)
  expected = jax.tree_util.tree_map(
      lambda x: np.asarray(x, np.float64), state.ema_params
  )
  for t in range(3):
    state, _ = step(state, _batch(seed=t))
    d = min(decay, (1 + t) / (10 + t))  # 0.1, 0.18, 0.25: the warm-up
    expected = jax.tree_util.tree_map(
        lambda e, p, d=d: d * e + (1 - d) * np.asarray(p, np.float64),
        expected,
        {tree: state.params[tree] for tree in expected},
    )
  for want, got in zip(
      jax.tree_util.tree_leaves(expected),
      jax.tree_util.tree_leaves(state.ema_params),
  ):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  # The average lags the trained weights; the untrained decoder is as it was.
  assert (
      _max_difference(
          state.ema_params,
          {tree: state.params[tree] for tree in state.ema_params},
      )
      > 1e-4
  )
  evaluated = state.eval_params
  assert evaluated["head"] is state.ema_params["head"]
  assert evaluated["decoder"] is state.params["decoder"]


def test_contrastive_loss_is_low_when_views_pair_up_and_high_when_not():
  rng = np.random.default_rng(0)
  base = rng.normal(size=(8, 16))
  paired = jnp.asarray(
      np.concatenate([base, base + 0.01 * rng.normal(size=base.shape)])
  )
  shuffled = jnp.asarray(np.concatenate([base, rng.normal(size=base.shape)]))
  low, found = objectives.contrastive_loss(paired, temperature=0.1)
  high, missed = objectives.contrastive_loss(shuffled, temperature=0.1)
  assert bool(jnp.all(found))
  assert float(jnp.mean(low)) < 0.1 < float(jnp.mean(high))
  assert float(jnp.mean(missed)) < 0.5
  # Chance: every other row equally near.
  same = jnp.ones((8, 4))
  chance, _ = objectives.contrastive_loss(same, temperature=0.1)
  np.testing.assert_allclose(chance, np.log(7), rtol=1e-5)


def test_contrastive_training_pulls_the_views_of_an_image_together():
  stage = default.stage(
      objective="contrastive", optimizer="adam", learning_rate=1e-4
  )
  objective = objectives.objective_from_config(stage)
  model, state = _state(stage, objective)
  batch = _batch(n=8)
  evaluate = steps.jit_eval_step(model, objective)
  before = evaluate(state.params, batch)[0].compute()
  step = steps.jit_train_step(model, objective, seed=0, freeze_encoder=False)
  for _ in range(15):
    state, _ = step(state, batch)
  after = evaluate(state.params, batch)[0].compute()
  assert float(after["loss"]) < float(before["loss"])
  assert 0.0 <= float(after["pair_accuracy"]) <= 1.0
  # Evaluation's views are fixed: the same parameters score the same.
  again = evaluate(state.params, batch)[0].compute()
  assert float(again["loss"]) == float(after["loss"])
