"""`profile_steps`: a JAX profiler trace of a few train steps of each stage,
where TensorBoard's Profile tab reads it."""

import glob
import os

from roadflax.training import train
from tests import helpers


def _events(path: str) -> list[tuple[str, dict[str, int]]]:
  """(name, integer stats) of every event in an XSpace file."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2

  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  events = []
  for plane in space.planes:
    for line in plane.lines:
      for event in line.events:
        stats = {
            plane.stat_metadata[stat.metadata_id].name: (
                stat.int64_value or stat.uint64_value
            )
            for stat in event.stats
        }
        events.append((plane.event_metadata[event.metadata_id].name, stats))
  return events


def test_profile_steps_traces_train_steps_after_the_warmup(data_root, tmp_path):
  config = helpers.tiny_config(data_root, classify=5)
  config.stage_order = ("classify",)
  config.stages.classify.init_from = ""
  config.profile_steps = 2
  train.train_and_evaluate(config, str(tmp_path))

  traces = glob.glob(
      os.path.join(
          tmp_path, "classify", "plugins", "profile", "*", "*.xplane.pb"
      )
  )
  assert len(traces) == 1
  events = _events(traces[0])
  # Steps 3 and 4 of 5 (numbered from 0), annotated, and the compiled train
  # step ran inside the trace.
  assert sorted(
      stats["step_num"] for name, stats in events if name == "train"
  ) == [2, 3]
  assert any("train_step" in name for name, _ in events)
