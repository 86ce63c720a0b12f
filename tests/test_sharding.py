"""Data parallelism: the same command on two devices trains the same model as
on one (CPU devices forced by XLA_FLAGS, in a fresh process each)."""

import json
import os

import jax
import numpy as np
import pytest

from roadflax import sharding
from roadflax.errors import UserError
from tests import helpers
from tests.test_cli import main, tiny_flags


def test_batches_must_split_evenly_over_devices(monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 4)
  sharding.check_batch_size(8, "stages.classify.batch_size")
  with pytest.raises(UserError, match=r"--config.stages.classify.batch_size=6 is not a "
                     r"multiple of the 4 devices a batch is split over; set a multiple of 4"):
    sharding.check_batch_size(6, "stages.classify.batch_size")


@pytest.mark.slow
def test_two_devices_train_what_one_device_trains(data_root, tmp_path, monkeypatch):
  runs = {}
  for devices in (1, 2):
    monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count={devices}")
    workdir = str(tmp_path / f"devices{devices}")
    result = main(*tiny_flags(data_root), f"--workdir={workdir}", check=True)
    assert f"devices: [{', '.join(f'CpuDevice(id={i})' for i in range(devices))}]" in (
        result.stderr)
    runs[devices] = workdir

  step_1, params_1 = helpers.final_params(os.path.join(runs[1], "classify"))
  step_2, params_2 = helpers.final_params(os.path.join(runs[2], "classify"))
  assert step_1 == step_2 == 2
  # The same global batches and dropout masks; only the order of float sums
  # differs (the gradient is reduced across devices).
  for a, b in zip(jax.tree_util.tree_leaves(params_1), jax.tree_util.tree_leaves(params_2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  reports = [json.load(open(os.path.join(runs[d], "classify", "report.json")))
             for d in (1, 2)]
  assert reports[0]["num_examples"] == reports[1]["num_examples"] == 12


@pytest.mark.parametrize("flag", ["--config.stages.classify.batch_size=3",
                                  "--config.eval_batch_size=5"])
def test_an_odd_batch_on_two_devices_ends_in_one_line_before_training(
    flag, data_root, tmp_path, monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  result = main(*tiny_flags(data_root), flag, f"--workdir={tmp_path}")
  assert result.returncode != 0
  assert f"{flag} is not a multiple of the 2 devices" in result.stderr.strip().splitlines()[-1]
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "pretrain")  # Refused before the first stage.
