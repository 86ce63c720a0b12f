"""The benchmark: how fast roadflax feeds and trains its model, each figure
a ratio against a reference measured in the same run on the same machine.

  python -m roadflax.benchmark --images=50000 --workdir=/tmp/roadflax_bench
  python -m roadflax.benchmark --suite=model   # the model suite alone (minutes)
  python -m roadflax.benchmark --suite=labels --labels_root=/tmp/roads
      # accuracy with few labels, from scratch and pre-trained
      # (`label_efficiency`; hours on a CPU)

Suite `model` (`model_benchmark`): training and inference images/s of the
classifier's jitted JAX steps, in float32 and in bfloat16 on whatever device
JAX has, and inference images/s of each installed runtime behind
predictions, against a Keras build of the same network on the CPU in float32
and in mixed_bfloat16 (the references); and for JAX the FLOPs per image,
FLOP/s and MFU of each step.

Suite `pipeline`: images/s, CPU cost and peak memory per way of feeding a
model at scale, against the plain image-folder pipeline. It generates a release-shaped
set of `--images` frames (360x240 JPEGs of 3 classes, `fake_rscd`), builds
`rscd/3class` from it with TFDS (timed: the preparation cost per 100k frames),
then reads one training epoch through each pipeline:

  folder       image-folder pipeline: file paths in memory, a JPEG decoded per
               image and epoch (the reference)
  tfds         rscd/3class streamed: shuffled file shards, a shuffle buffer of
               encoded frames, parallel decoding
  disk_write   the first epoch with data.cache=disk: decodes and writes the cache
  disk_read    a later epoch: preprocessed frames streamed from the cache

Each phase reports its wall images/s and, from its process's CPU time (user +
system, every thread), the CPU-seconds per 1,000 images and the images/s per
core (images per CPU-second): what a machine with more cores than this one
would reach per core it gives the pipeline.

Every pipeline and every model system runs in a process of its own, so that
its peak memory and its thread pools are its own. Results go to stdout and
WORKDIR/{pipeline,model}_benchmark.{json,md}. The generated set, the TFDS data
and the cache stay in WORKDIR for later runs.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from typing import Any

from absl import flags, logging

from roadflax.benchmark import model_benchmark
from roadflax.benchmark import pipeline_benchmark
from roadflax.results import records

FLAGS = flags.FLAGS
flags.DEFINE_integer(
    "images", 50_000, "Frames to generate (98% train, 1% val, 1% test)."
)
flags.DEFINE_string(
    "workdir", "/tmp/roadflax_bench", "Where data, TFDS files and cache go."
)
flags.DEFINE_integer("image_size", 224, "Model input size.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer(
    "processes", os.cpu_count() or 1, "Processes generating frames."
)
flags.DEFINE_enum(
    "suite",
    "all",
    ["all", "pipeline", "model", "labels"],
    "What to measure (all: pipeline and model; labels takes hours on a CPU).",
)
flags.DEFINE_integer("model_batch_size", 32, "Batch size of the model suite.")
flags.DEFINE_integer(
    "model_steps", 10, "Timed steps per repeat in the model suite."
)
flags.DEFINE_string(
    "results_dir",
    "",
    "Also write each suite's figures, with the command, machine, commit and"
    " date, as RESULTS_DIR/{model,pipeline}_benchmark.json (docs/results"
    " for the figures the docs cite).",
)
flags.DEFINE_string(
    "labels_root",
    "roadtex",
    "Suite labels: the labelled folder (split by group), or roadtex.",
)
flags.DEFINE_string(
    "labels_pool",
    "",
    "Suite labels: unlabelled images/videos ('' = the root's train split).",
)
flags.DEFINE_string("labels", "5,10,25,100", "Suite labels: labels per class.")
flags.DEFINE_string("labels_seeds", "0,1,2", "Suite labels: seeds.")
flags.DEFINE_string(
    "labels_pretrainings",
    "reconstruction,denoising,masked,contrastive",
    "Suite labels: pre-training objectives compared with from scratch.",
)
flags.DEFINE_integer("labels_image_size", 67, "Suite labels: input size.")
flags.DEFINE_float(
    "labels_pseudo_label_threshold",
    0.9,
    "Suite labels: semi-supervised fine-tuning at this threshold (0 = off).",
)
flags.DEFINE_string(
    "phase",
    "",
    "Internal: run one pipeline or model system and print its figures.",
)

PHASES = ("folder", "tfds", "disk_write", "disk_read")
MODEL_PHASE_PREFIX = "model_"


def _paths(workdir: str) -> dict[str, str]:
  return {
      "release": os.path.join(workdir, "release"),
      "tfds": os.path.join(workdir, "tfds"),
      "cache": os.path.join(workdir, "cache"),
  }


def _data_config(paths: dict[str, str], **overrides: Any):
  from roadflax.configs import default

  data = default.get_config().data
  data.update(
      source="rscd",
      variant="3class",
      manual_dir=paths["release"],
      data_dir=paths["tfds"],
      cache_dir=paths["cache"],
      image_size=FLAGS.image_size,
  )
  data.update(overrides)
  return data


def _prepare(paths: dict[str, str]) -> dict[str, float]:
  """Generates the frames (unless already there) and builds rscd/3class."""
  from roadflax.datasets import sources
  from tests import fake_rscd

  figures = {}
  if not os.path.isdir(paths["release"]):
    per_class = FLAGS.images // 3
    held_out = max(1, per_class // 100)
    start = time.time()
    writing = paths["release"] + ".writing"
    fake_rscd.write_release(
        writing,
        {
            "train": per_class - 2 * held_out,
            "validation": held_out,
            "test": held_out,
        },
        size=(360, 240),
        processes=FLAGS.processes,
    )
    os.rename(writing, paths["release"])
    figures["generate_seconds"] = time.time() - start
  start = time.time()
  sources.load_dataset(_data_config(paths))
  figures["prepare_seconds"] = time.time() - start
  return figures


def _run_phase(phase: str, paths: dict[str, str]) -> dict[str, float]:
  """One epoch of training batches through one pipeline, in this process."""
  from roadflax.data import image_folder, pipelines
  from roadflax.datasets import sources

  start = time.time()
  if phase == "folder":
    split = image_folder.scan_image_folder(
        paths["release"], splits=("train",)
    ).splits["train"]
    pipeline = pipelines.pipeline_for(
        split, _data_config(paths, source="folder")
    )
  else:
    cache = "disk" if phase.startswith("disk") else "none"
    data = _data_config(paths, cache=cache)
    split = sources.load_dataset(data).splits["train"]
    pipeline = pipelines.pipeline_for(split, data)
  setup = time.time() - start
  epoch = 1 if phase == "disk_read" else 0
  figures = pipeline_benchmark.measure_epoch(
      lambda: pipeline.train_batches(
          batch_size=FLAGS.batch_size, seed=0, epoch=epoch
      )
  )
  return {
      **figures,
      "setup_seconds": setup,
      "peak_memory_mib": (
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
      ),
  }


def _phase_in_subprocess(phase: str) -> dict[str, Any]:
  command = [
      sys.executable,
      "-m",
      "roadflax.benchmark",
      f"--phase={phase}",
      f"--workdir={FLAGS.workdir}",
      f"--image_size={FLAGS.image_size}",
      f"--batch_size={FLAGS.batch_size}",
      f"--model_batch_size={FLAGS.model_batch_size}",
      f"--model_steps={FLAGS.model_steps}",
  ]
  result = subprocess.run(
      command,
      capture_output=True,
      text=True,
      check=False,
      cwd=os.path.dirname(
          os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
      ),
  )
  if result.returncode != 0:
    raise RuntimeError(f"phase {phase} failed:\n{result.stderr[-3000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def _pipeline_suite(paths: dict[str, str]) -> None:
  # Measured afresh each run; only the generated frames are reused.
  shutil.rmtree(paths["tfds"], ignore_errors=True)
  shutil.rmtree(paths["cache"], ignore_errors=True)
  figures: dict[str, Any] = _prepare(paths)
  figures["frames"] = sum(
      len(files) for _, _, files in os.walk(paths["release"])
  )
  figures["phases"] = {}
  for phase in PHASES:
    logging.info("benchmark: %s ...", phase)
    figures["phases"][phase] = _phase_in_subprocess(phase)
  _write_results(
      "pipeline_benchmark",
      figures,
      {},
      pipeline_benchmark.table(figures, FLAGS.image_size, FLAGS.batch_size),
  )


def _model_suite() -> None:
  figures = {}
  for system in model_benchmark.systems():
    logging.info("benchmark: model, %s ...", system)
    figures[system] = _phase_in_subprocess(MODEL_PHASE_PREFIX + system)
  model_benchmark.check_same_model(figures)
  _write_results(
      "model_benchmark",
      figures,
      {
          "vs_reference": model_benchmark.speed_ratios(figures),
          "vs_keras_mixed_bfloat16": model_benchmark.speed_ratios(
              figures, model_benchmark.BFLOAT16_REFERENCE
          ),
      },
      model_benchmark.table(
          figures,
          image_size=FLAGS.image_size,
          batch_size=FLAGS.model_batch_size,
      ),
  )


def _labels_suite() -> None:
  """`label_efficiency` with the suite's flags, into WORKDIR (and
  RESULTS_DIR)/label_efficiency.{json,md,png}."""
  from roadflax.benchmark import label_efficiency

  output = os.path.join(FLAGS.workdir, "label_efficiency.json")
  label_efficiency.main([
      f"--root={FLAGS.labels_root}",
      f"--pool={FLAGS.labels_pool}",
      f"--labels={FLAGS.labels}",
      f"--seeds={FLAGS.labels_seeds}",
      f"--pretrainings={FLAGS.labels_pretrainings}",
      f"--image_size={FLAGS.labels_image_size}",
      f"--pseudo_label_threshold={FLAGS.labels_pseudo_label_threshold}",
      f"--workdir={os.path.join(FLAGS.workdir, 'labels')}",
      f"--output={output}",
  ])
  if FLAGS.results_dir:
    os.makedirs(FLAGS.results_dir, exist_ok=True)
    for extension in (".json", ".md", ".png"):
      shutil.copy(
          os.path.splitext(output)[0] + extension,
          os.path.join(FLAGS.results_dir, "label_efficiency" + extension),
      )


def _write_results(
    name: str, figures: dict[str, Any], derived: dict[str, Any], table: str
) -> None:
  """WORKDIR/NAME.{json,md} (and RESULTS_DIR/NAME.json): `figures` as
  measured, `derived` computed from them."""
  command = " ".join(["python -m roadflax.benchmark", *sys.argv[1:]])
  settings = {
      "settings": {
          key: FLAGS[key].value
          for key in ("images", "image_size", "batch_size", "model_batch_size")
      }
  }
  for directory in filter(None, (FLAGS.workdir, FLAGS.results_dir)):
    os.makedirs(directory, exist_ok=True)
    records.write(
        os.path.join(directory, f"{name}.json"),
        {**settings, "figures": figures, **derived},
        command,
    )
  with open(os.path.join(FLAGS.workdir, f"{name}.md"), "w") as f:
    f.write(table)
  print(table)


def main(argv: list[str]) -> None:
  del argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  paths = _paths(FLAGS.workdir)
  if FLAGS.phase.startswith(MODEL_PHASE_PREFIX):
    print(
        json.dumps(
            model_benchmark.measure(
                FLAGS.phase[len(MODEL_PHASE_PREFIX) :],
                image_size=FLAGS.image_size,
                batch_size=FLAGS.model_batch_size,
                steps=FLAGS.model_steps,
            )
        )
    )
    return
  if FLAGS.phase:
    print(json.dumps(_run_phase(FLAGS.phase, paths)))
    return
  os.makedirs(FLAGS.workdir, exist_ok=True)
  if FLAGS.suite in ("all", "model"):
    _model_suite()
  if FLAGS.suite in ("all", "pipeline"):
    _pipeline_suite(paths)
  if FLAGS.suite == "labels":
    _labels_suite()
