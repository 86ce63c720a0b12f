"""Data parallelism: the same command on two devices, or in two processes,
trains the same model as on one device (CPU devices forced by XLA_FLAGS, in
fresh processes; this process has one)."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from roadflax.runs import workdirs
from roadflax.training import sharding
from roadflax.errors import UserError
from tests import helpers


def test_batches_must_split_evenly_over_devices(monkeypatch):
  monkeypatch.setattr(jax, "device_count", lambda: 4)
  sharding.check_batch_size(8, "stages.classify.batch_size")
  with pytest.raises(
      UserError,
      match=r"--config.stages.classify.batch_size=6 is not a "
      r"multiple of the 4 devices a batch is split over; set a multiple of 4",
  ):
    sharding.check_batch_size(6, "stages.classify.batch_size")


@pytest.mark.slow
def test_two_devices_train_what_one_device_trains(
    trained_workdir, data_root, tmp_path
):
  """The session's one-device workdir (`helpers.tiny_config`, whose
  classifier trains with momentum: Adam scales each update to about the
  learning rate, so a parameter with a near-zero gradient would move by the
  rate on either device count and float rounding would decide its sign),
  trained again by the command on two devices."""
  flags = helpers.tiny_flags(data_root) + [
      "--config.log_every_steps=2",
      "--config.stages.pretrain.steps=4",
      "--config.stages.classify.steps=4",
      "--config.stages.classify.optimizer=momentum",
  ]
  two_devices = str(tmp_path / "two_devices")
  result = helpers.command(
      *flags,
      f"--workdir={two_devices}",
      check=True,
      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
  )
  assert "devices: [CpuDevice(id=0), CpuDevice(id=1)]" in result.stderr
  assert read_json(two_devices, "config.json") == read_json(
      trained_workdir, "config.json"
  )

  step_1, params_1 = helpers.final_params(
      os.path.join(trained_workdir, "classify")
  )
  step_2, params_2 = helpers.final_params(os.path.join(two_devices, "classify"))
  assert step_1 == step_2 == 4
  # The same global batches and dropout masks; only the order of float sums
  # differs (the gradient is reduced across devices).
  for a, b in zip(
      jax.tree_util.tree_leaves(params_1), jax.tree_util.tree_leaves(params_2)
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  for workdir in (trained_workdir, two_devices):
    assert read_json(workdir, "classify", "report.json")["num_examples"] == 12


def read_json(*path: str) -> dict:
  with open(os.path.join(*path)) as f:
    return json.load(f)


@pytest.mark.parametrize(
    "flag",
    ["--config.stages.classify.batch_size=3", "--config.eval_batch_size=5"],
)
def test_an_odd_batch_on_two_devices_ends_in_one_line_before_training(
    flag, data_root, tmp_path, monkeypatch
):
  monkeypatch.setattr(jax, "device_count", lambda: 2)
  result = helpers.run_main(
      *helpers.tiny_flags(data_root), flag, f"--workdir={tmp_path}"
  )
  assert f"{flag} is not a multiple of the 2 devices" in helpers.error_line(
      result
  )
  assert result.stderr.splitlines() == [helpers.error_line(result)]
  assert not os.path.exists(
      tmp_path / "pretrain"
  )  # Refused before the first stage.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_what_one_device_trains(
    data_root, tmp_path, monkeypatch
):
  """`--coordinator` runs: each process feeds its part of every batch and
  only process 0 writes. Without dropout (whose masks follow an example's
  place in the global batch, which differs) and under momentum (see above)
  the parameters match those of one device (this process's). The classifier
  alone: two stages on two devices are the test above."""
  flags = helpers.tiny_flags(data_root) + [
      "--config.stage_order=('classify',)",
      "--config.stages.classify.init_from=",
      "--config.model.dropout_rate=0",
      "--config.stages.classify.optimizer=momentum",
  ]
  one_process = str(tmp_path / "one_process")
  helpers.run_main(*flags, f"--workdir={one_process}", check=True)

  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  two_processes = str(tmp_path / "two_processes")
  coordinator = f"127.0.0.1:{_free_port()}"
  processes = [
      subprocess.Popen(
          [
              sys.executable,
              "main.py",
              *flags,
              f"--workdir={two_processes}",
              f"--coordinator={coordinator}",
              "--num_processes=2",
              f"--process_id={i}",
          ],
          cwd=helpers.ROOT,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  for process in processes:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
  assert "JAX 0.10.2 on 2 process(es)" in stderr

  step_1, params_1 = helpers.final_params(os.path.join(one_process, "classify"))
  step_2, params_2 = helpers.final_params(
      os.path.join(two_processes, "classify")
  )
  assert step_1 == step_2 == 2
  for a, b in zip(
      jax.tree_util.tree_leaves(params_1), jax.tree_util.tree_leaves(params_2)
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with open(os.path.join(two_processes, "classify", "report.json")) as f:
    report = json.load(f)
  assert report["num_examples"] == 12
  # The calibration gathers both processes' logits, each example once.
  fitted = [
      workdirs.read_calibration(os.path.join(workdir, "classify"))
      for workdir in (one_process, two_processes)
  ]
  assert fitted[1]["images"] == report["calibration"]["fitted_on"]["images"]
  assert fitted[1]["images"] == 12
  for key in ("temperature", "fitted_temperature"):
    assert fitted[1][key] == pytest.approx(fitted[0][key], rel=1e-3)


def test_a_coordinator_without_process_numbers_ends_in_one_line(tmp_path):
  result = helpers.run_main(
      "--config=configs/default.py",
      "--coordinator=127.0.0.1:1",
      f"--workdir={tmp_path}",
  )
  assert "needs --num_processes=N and --process_id=I" in helpers.error_line(
      result
  )
  assert result.stderr.splitlines() == [helpers.error_line(result)]
