"""`python -m roadflax.benchmark` at the smallest size: the model suite's
systems build the same network, the FLOPs per image agree with a count of
the network's multiply-adds, the pipeline suite's per-core figures come from
CPU time, and the tables say what was measured."""

import json
import math
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from roadflax.benchmark import model_benchmark, peaks, pipeline_benchmark
from roadflax.export import choice
from roadflax.models import roadnet
from tests import helpers

# The classifier at 67x67 and 3 classes (tests/test_compare.py has the count).
PARAMETERS = 22_183_555
PHASES = ("train", "infer")
JAX_SYSTEMS = ("jax float32", "jax bfloat16")


def _macs_per_image(image_size: int) -> dict[str, int]:
  """Multiply-adds of each convolution and dense layer of the classifier for
  one image, those with SAME's zero padding left out (as XLA counts them)."""
  model = roadnet.RoadNet(num_classes=3)
  params = jax.eval_shape(
      lambda key: roadnet.init_params(model, key, image_size),
      jax.random.key(0),
  )

  def same(pixels: int, kernel: int) -> int:
    """Kernel taps on the image along one axis of a SAME convolution."""
    pad = (kernel - 1) // 2
    return pixels * kernel - pad * (pad + 1)

  sizes = roadnet.feature_sizes(image_size)
  taps = {"conv1": sizes.conv1 * 11, "conv2": same(sizes.pool1, 5)}
  taps.update({f"conv{i}": same(sizes.pool2, 3) for i in range(3, 7)})
  macs = {}
  for tree in ("encoder", "head"):
    for name, layer in params[tree].items():
      shape = layer["kernel"].shape
      if name in taps:  # [height, width, in, out]
        macs[name] = taps[name] ** 2 * shape[2] * shape[3]
      else:
        macs[name] = shape[0] * shape[1]
  return macs


def _expected_flops(image_size: int, batch_size: int) -> dict[str, float]:
  """FLOPs per image of inference (a multiply-add is two) and of an SGD step:
  forward; the gradients of every kernel and of every layer's input but the
  first's; the update, two per parameter, shared by the batch."""
  macs = _macs_per_image(image_size)
  forward = 2 * sum(macs.values())
  return {
      "infer": forward,
      "train": 3 * forward - 2 * macs["conv1"] + 2 * PARAMETERS / batch_size,
  }


def test_the_macs_count_is_the_networks_at_224():
  # By hand, layer by layer: conv1 54x54 outputs of 11x11 taps; conv2 26x26
  # outputs, 124 of the 5 x 26 taps on the image along each axis; conv3 to
  # conv6 12x12, 34 of 3 x 12; fc1 from 5x5x256.
  macs = _macs_per_image(224)
  assert macs["conv1"] == (54 * 11) ** 2 * 3 * 96
  assert macs["conv2"] == 124**2 * 96 * 256
  assert macs["conv6"] == 34**2 * 256 * 256
  assert macs["fc1"] == 5 * 5 * 256 * 4096
  assert sum(macs.values()) == 995_998_848


@pytest.mark.slow
def test_model_suite_times_jax_and_runtimes_against_keras(tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "roadflax.benchmark",
          "--suite=model",
          "--image_size=67",
          "--model_batch_size=2",
          "--model_steps=1",
          f"--workdir={tmp_path}",
          f"--results_dir={tmp_path / 'results'}",
      ],
      cwd=helpers.ROOT,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "model_benchmark.json") as f:
    record = json.load(f)
  with open(tmp_path / "results" / "model_benchmark.json") as f:
    assert json.load(f) == record
  assert record["command"].startswith(
      "python -m roadflax.benchmark --suite=model"
  )
  assert record["settings"]["model_batch_size"] == 2
  assert {"machine", "commit", "date"} <= set(record)
  figures = record["figures"]
  runtimes = [
      f"runtime {name}"
      for name in choice.RUNTIMES
      if name != "jax" and choice.installed(name)
  ]
  assert "runtime openvino_int8" in runtimes
  assert list(figures) == list(model_benchmark.systems())
  assert list(figures) == [*JAX_SYSTEMS, *model_benchmark.REFERENCES, *runtimes]
  for name, system in figures.items():
    assert system["parameters"] == PARAMETERS
    for phase in PHASES:
      speed = system[f"{phase}_images_per_second"]
      if phase == "train" and name in runtimes:
        assert speed is None  # inference only
      else:
        assert math.isfinite(speed) and speed > 0
  for reference, key in (
      ("keras float32", "vs_reference"),
      ("keras mixed_bfloat16", "vs_keras_mixed_bfloat16"),
  ):
    assert record[key] == model_benchmark.speed_ratios(figures, reference)

  expected = _expected_flops(67, batch_size=2)
  for name in JAX_SYSTEMS:
    system = figures[name]
    for phase in PHASES:
      flops = system[f"{phase}_flops_per_image"]
      assert 0.98 < flops / expected[phase] < 1.05, (name, phase, flops)
      # The network's, whatever the dtype it computes in.
      assert flops == figures["jax float32"][f"{phase}_flops_per_image"]
      assert system[f"{phase}_flops_per_second"] == pytest.approx(
          flops * system[f"{phase}_images_per_second"]
      )
      assert 0 < system[f"{phase}_mfu"] <= 1.5, (name, phase)
      vendor = system["vendor_peak_flops"]
      assert vendor == peaks.vendor_peak(system["device_kind"], name.split()[1])
      vendor_mfu = system[f"{phase}_vendor_mfu"]
      assert (vendor_mfu is None) == (vendor is None)
      assert vendor_mfu is None or 0 < vendor_mfu <= 1, (name, phase)

  # The speed table: one row per system, its figures as measured and its
  # ratios to both Keras systems; then a row per JAX system and step with
  # its FLOPs.
  rows = [
      [cell.strip() for cell in line.strip("|").split(" | ")]
      for line in result.stdout.splitlines()
      if line.startswith("| ") and not line.startswith("| system ")
  ]
  speed_rows, flops_rows = rows[: len(figures)], rows[len(figures) :]
  assert [row[0] for row in speed_rows] == list(figures)
  for row in speed_rows:
    measured = figures[row[0]]
    for phase, cells in zip(PHASES, (row[1:4], row[4:7])):
      key = f"{phase}_images_per_second"
      if measured[key] is None:
        assert cells == ["—"] * 3
        continue
      assert float(cells[0]) == pytest.approx(measured[key], abs=0.051)
      for reference, ratio in zip(model_benchmark.REFERENCES, cells[1:]):
        assert float(ratio.rstrip("x")) == pytest.approx(
            measured[key] / figures[reference][key], abs=0.0051
        )
  assert [row[:2] for row in flops_rows] == [
      [name, phase] for name in JAX_SYSTEMS for phase in PHASES
  ]
  for name, phase, gflop, tflops, peak, mfu, *_ in flops_rows:
    measured = figures[name]
    assert float(gflop) == pytest.approx(
        measured[f"{phase}_flops_per_image"] / 1e9, abs=0.0006
    )
    assert float(tflops) == pytest.approx(
        measured[f"{phase}_flops_per_second"] / 1e12, rel=0.006
    )
    assert float(peak) == pytest.approx(
        measured["measured_peak_flops"] / 1e12, rel=0.006
    )
    assert float(mfu.rstrip("%")) == pytest.approx(
        100 * measured[f"{phase}_mfu"], abs=0.051
    )
  assert (
      f"classifier of {PARAMETERS:,} parameters at 67x67, batch 2; JAX on"
      f" {figures['jax float32']['device_kind']}"
      in result.stdout
  )
  assert (tmp_path / "model_benchmark.md").read_text() in result.stdout
  assert not os.path.exists(tmp_path / "pipeline_benchmark.json")


def _jax_figures(**figures) -> dict:
  return {
      "parameters": 10,
      "backend": "gpu",
      "device_kind": "NVIDIA H100 80GB HBM3",
      "train_flops_per_image": 6e9,
      "infer_flops_per_image": 2e9,
      "measured_peak_flops": 800e12,
      **figures,
  }


def test_tables_give_ratios_to_keras_and_utilisation():
  figures = {
      "jax float32": _jax_figures(
          train_images_per_second=30.0,
          infer_images_per_second=300.0,
          train_flops_per_second=180e9,
          infer_flops_per_second=600e9,
          train_mfu=0.225,
          infer_mfu=0.75,
          vendor_peak_flops=494.7e12,
          train_vendor_mfu=0.364,
          infer_vendor_mfu=1.2,
      ),
      "keras float32": {
          "parameters": 10,
          "train_images_per_second": 60.0,
          "infer_images_per_second": 200.0,
      },
      "keras mixed_bfloat16": {
          "parameters": 10,
          "train_images_per_second": 120.0,
          "infer_images_per_second": 400.0,
      },
      "runtime onnx": {
          "parameters": 10,
          "train_images_per_second": None,
          "infer_images_per_second": 800.0,
      },
  }
  table = model_benchmark.table(figures, image_size=224, batch_size=32)
  assert "| jax float32 | 30.0 | 0.50x | 0.25x | 300.0 | 1.50x | 0.75x |" in (
      table
  )
  assert "| keras float32 | 60.0 | 1.00x | 0.50x | 200.0 | 1.00x | 0.50x |" in (
      table
  )
  assert "| runtime onnx | — | — | — | 800.0 | 4.00x | 2.00x |" in table
  assert (
      "| jax float32 | train | 6.000 | 0.18 | 800 | 22.5% | 495 | 36.4% |"
      in table
  )
  assert (
      "| jax float32 | infer | 2.000 | 0.6 | 800 | 75.0% | 495 | 120.0% |"
      in table
  )
  assert (
      "JAX on NVIDIA H100 80GB HBM3 (gpu), Keras and the runtimes on the CPU"
      in table
  )


def test_unknown_devices_have_no_vendor_peak_in_the_table():
  figures = {
      "jax bfloat16": _jax_figures(
          device_kind="cpu",
          train_images_per_second=1.0,
          infer_images_per_second=1.0,
          train_flops_per_second=6e9,
          infer_flops_per_second=2e9,
          train_mfu=0.5,
          infer_mfu=0.25,
          vendor_peak_flops=None,
          train_vendor_mfu=None,
          infer_vendor_mfu=None,
      ),
      "keras float32": {
          "parameters": 10,
          "train_images_per_second": 1.0,
          "infer_images_per_second": 1.0,
      },
  }
  table = model_benchmark.table(figures, image_size=224, batch_size=32)
  assert "| jax bfloat16 | train | 6.000 | 0.006 | 800 | 50.0% | — | — |" in (
      table
  )


@pytest.mark.parametrize(
    "device_kind,dtype,tflops",
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4),
        ("NVIDIA H100 80GB HBM3", "float32", 494.7),
        ("NVIDIA H100 PCIe", "bfloat16", 756.0),
        ("NVIDIA H200", "float16", 989.4),
        ("NVIDIA H200 NVL", "bfloat16", 835.5),
        ("NVIDIA A100-SXM4-80GB", "bfloat16", 312.0),
        ("NVIDIA L4", "float32", 60.0),
        ("TPU v5 lite", "bfloat16", 197.0),
        ("TPU v6 lite", "float32", 918.0),
        ("NVIDIA L40S", "bfloat16", None),
        ("TPU v4 lite", "bfloat16", None),
        ("cpu", "float32", None),
    ],
)
def test_vendor_peaks_by_device_kind(device_kind, dtype, tflops):
  peak = peaks.vendor_peak(device_kind, dtype)
  assert peak == (None if tflops is None else pytest.approx(tflops * 1e12))


def test_networks_of_different_sizes_are_refused():
  with pytest.raises(RuntimeError, match="differ in size"):
    model_benchmark.check_same_model(
        {"jax float32": {"parameters": 10}, "keras float32": {"parameters": 11}}
    )


# ------------------------------------------------------------- pipeline suite


def _label_batches(count: int, work):
  for _ in range(count):
    work()
    yield {"label": np.zeros(8, np.int32)}


def test_per_core_figures_are_images_per_cpu_second(monkeypatch):
  # A pipeline that used 1.5 cores for 4 wall seconds to make 40 images.
  clocks = {"wall": iter([10.0, 14.0]), "cpu": iter([100.0, 106.0])}
  monkeypatch.setattr(
      pipeline_benchmark.time, "perf_counter", lambda: next(clocks["wall"])
  )
  monkeypatch.setattr(
      pipeline_benchmark, "cpu_seconds", lambda: next(clocks["cpu"])
  )
  figures = pipeline_benchmark.measure_epoch(
      lambda: _label_batches(5, lambda: None)
  )
  assert figures == {
      "images": 40,
      "seconds": 4.0,
      "cpu_seconds": 6.0,
      "images_per_second": 10.0,
      "cpu_seconds_per_1000_images": 150.0,
      "images_per_cpu_second": pytest.approx(40 / 6),
      "cores_busy": 1.5,
  }


def test_cpu_time_counts_work_not_waiting():
  def spin():
    end = time.process_time() + 0.05
    while time.process_time() < end:
      pass

  waiting = pipeline_benchmark.measure_epoch(
      lambda: _label_batches(4, lambda: time.sleep(0.05))
  )
  working = pipeline_benchmark.measure_epoch(lambda: _label_batches(4, spin))
  assert waiting["cpu_seconds"] < 0.3 * waiting["seconds"]
  assert waiting["images_per_cpu_second"] > 3 * waiting["images_per_second"]
  # At least the 0.2 s of CPU the batches took, on a busy machine too.
  assert working["cpu_seconds"] >= 0.19
  assert working["images_per_cpu_second"] <= 32 / 0.19


def _phase(images, seconds, cpu_seconds):
  return {
      "images": images,
      "seconds": seconds,
      "cpu_seconds": cpu_seconds,
      "images_per_second": images / seconds,
      "cpu_seconds_per_1000_images": 1000 * cpu_seconds / images,
      "images_per_cpu_second": images / cpu_seconds,
      "cores_busy": cpu_seconds / seconds,
      "peak_memory_mib": 1500.0,
      "setup_seconds": 2.0,
  }


def test_pipeline_table_gives_per_core_figures_and_ratios_to_folder():
  figures = {
      "frames": 3000,
      "prepare_seconds": 3.0,
      "phases": {
          "folder": _phase(2000, 10.0, 20.0),  # 100 per core, 2 cores
          "disk_read": _phase(2000, 4.0, 5.0),  # 400 per core, 1.25 cores
      },
  }
  table = pipeline_benchmark.table(figures, image_size=224, batch_size=64)
  assert (
      "| folder | 2,000 | 200 | 1.00x | 10.00 | 100 | 1.00x | 2.00 | 1,500 |"
      " 2.0 |"
      in table
  )
  assert (
      "| disk_read | 2,000 | 500 | 2.50x | 2.50 | 400 | 4.00x | 1.25 | 1,500 |"
      " 2.0 |"
      in table
  )
  assert "3,000 frames at 224x224, batch 64" in table


def test_the_layer_profile_times_each_pass_in_jax_and_tensorflow():
  from roadflax.benchmark import layer_profile

  result = layer_profile.profile(image_size=67, batch=2, repeats=1)

  passes = [(row["layer"], row["pass"]) for row in result["rows"]]
  layers = [layer["name"] for layer in layer_profile.layers(67)]
  assert passes == [
      (layer, name)
      for layer in layers
      for name in layer_profile.PASSES
      if (layer, name) != ("conv1", "input gradient")  # the image's
  ]
  systems = ("jax float32", "tf float32", "tf bfloat16")
  for system in systems:
    assert all(row[system] > 0 for row in result["rows"])
    assert result["totals_ms"][system] == pytest.approx(
        sum(row[system] for row in result["rows"])
    )
  lines = layer_profile.table(result).splitlines()
  assert len(lines) == 2 + len(passes) + 1 and lines[-1].startswith(
      "| all | sum |"
  )
