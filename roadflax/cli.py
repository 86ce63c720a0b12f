"""The roadflax command (`roadflax ...`, or `python main.py ...` in a checkout):
train, evaluate, predict, label, audit, export, build the runtimes behind
predictions, serve, compare, or summarise.

roadflax --config=roadflax:synthetic --workdir=runs/demo
roadflax --mode=evaluate --workdir=runs/demo
roadflax --mode=predict --workdir=runs/demo --input=photo.jpg [--explain]
roadflax --mode=predict --workdir=runs/demo --input=drive.mp4 --gpx=track.gpx
roadflax --mode=label --workdir=runs/demo --input=drives/ --output=labelled
roadflax --mode=audit --workdir=runs/demo [--config=... --config.data.root=DIR]
roadflax --mode=export --workdir=runs/demo --format=onnx --output=exports/onnx
roadflax --mode=runtimes --workdir=runs/demo
roadflax --mode=serve --workdir=runs/demo --workdir=runs/ground
roadflax --mode=serve --workdir=runs/demo --input=drives/ --output=labelled
roadflax --mode=compare --workdir='runs/*' --output=runs
roadflax --mode=summary --config=roadflax:default
"""

import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

from roadflax import configs, console
from roadflax.drives.segments import DEFAULT_MIN_SECONDS
from roadflax.drives.timeline import DEFAULT_EVERY
from roadflax.export import choice, runtimes
from roadflax.models import layer_table, roadnet, test_time
from roadflax.serve import predict
from roadflax.serve.model import UNSURE_BELOW
from roadflax.training import evaluate, sharding, train
from roadflax.errors import UserError

MODES = (
    "train",
    "evaluate",
    "predict",
    "label",
    "audit",
    "export",
    "runtimes",
    "serve",
    "compare",
    "summary",
)

config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config: a file (configs/NAME.py[:ARG] in a checkout) or a"
    " shipped one by name (roadflax:NAME[:ARG]).",
    lock_config=True,
)
flags.DEFINE_multi_string(
    "workdir",
    [],
    "Directory for checkpoints, TensorBoard events and "
    "reports; compare: several, or a quoted glob; serve: several, or a"
    " folder of runs.",
)
flags.DEFINE_enum("mode", "train", MODES, "The job to run.")
flags.DEFINE_multi_string(
    "input",
    [],
    "predict: image files or folders; or videos (.mp4, .mov, .mkv, ...) or"
    " folders of them, in a run of their own; label: videos, images or"
    " folders of them to queue for labelling; serve: folders the Label page"
    " may queue frames from.",
)
flags.DEFINE_float(
    "every",
    DEFAULT_EVERY,
    "predict, videos: seconds between sampled frames; label: the same (1 s"
    " when not given).",
)
flags.DEFINE_string(
    "labels",
    None,
    "label: a CSV of labels made elsewhere (queue.csv with its label column"
    " filled in, or file,label rows) to import into --output.",
)
flags.DEFINE_float(
    "min_segment_seconds",
    DEFAULT_MIN_SECONDS,
    "predict, videos: a shorter run of one class is absorbed into a"
    " neighbour (the rule: roadflax/drives/segments.py).",
)
flags.DEFINE_string(
    "gpx",
    None,
    "predict, one video: the drive's GPS track, to write segments.geojson"
    " and map.html.",
)
flags.DEFINE_float(
    "gpx_offset",
    0.0,
    "predict, with --gpx: seconds from the track's first point to the"
    " video's start (negative: the video started first).",
)
flags.DEFINE_float(
    "unsure_below",
    UNSURE_BELOW,
    "predict: flag a prediction whose top probability is below this as unsure.",
)
flags.DEFINE_bool(
    "explain",
    False,
    "predict: also write each image's Grad-CAM heat map, beside the image as"
    " the model saw it, as a PNG in explanations/ beside --output (or here);"
    " a workdir's model only.",
)
flags.DEFINE_string(
    "output",
    None,
    "predict: a JSON file for the predictions (videos: the folder for their"
    " timelines, default ./timelines); export: the folder to write;"
    " compare: the folder for comparison.md/.csv/.png (default: .); label"
    " and serve: the labelled folder (ROOT/CLASS/GROUP/*.jpg, labels.csv,"
    " queue.csv).",
)
flags.DEFINE_string(
    "stage",
    None,
    "predict, export, serve: the stage to use (default: the last "
    "classification stage).",
)
flags.DEFINE_enum(
    "format",
    None,
    list(runtimes.FORMATS),
    "export: the file format.",
)
flags.DEFINE_enum(
    "runtime",
    "auto",
    list(choice.CHOICES),
    "predict (images and videos) and serve: what computes the predictions:"
    " auto (the fastest runtime --mode=runtimes built and checked for the"
    " checkpoint, else jax) or one by name.",
)
flags.DEFINE_enum(
    "tta",
    None,
    list(test_time.TTAS),
    "evaluate, a workdir: evaluate and calibrate with this test-time"
    " augmentation instead of the run's (config.model.tta); run.json then"
    " records it, and the model predicts and exports with it.",
)
flags.DEFINE_string("address", "localhost", "serve: the address to listen on.")
flags.DEFINE_integer("port", 8501, "serve: the port to listen on.")
flags.DEFINE_string(
    "coordinator",
    None,
    "train on several processes (hosts): "
    "HOST:PORT of process 0, the same for every process, with "
    "--num_processes and --process_id; 'auto' on Cloud TPU or SLURM.",
)
flags.DEFINE_integer(
    "num_processes", None, "With --coordinator: how many processes."
)
flags.DEFINE_integer(
    "process_id", None, "With --coordinator: this process, 0 to N-1."
)
FLAGS = flags.FLAGS
LABEL_EVERY = 1.0  # --mode=label's --every: frames 0.25 s apart look alike


def run(argv: list[str]) -> None:
  console.show_roadflax_logs_only()
  if len(argv) > 1:
    raise UserError(
        f"unexpected arguments {argv[1:]}: every option is a --flag"
    )
  config = _loaded_config()
  mode, workdirs = FLAGS.mode, FLAGS.workdir
  if FLAGS.coordinator:
    sharding.join_processes(
        FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id
    )
  if mode in ("train", "summary") and config is None:
    raise UserError(
        f"--mode={mode} needs --config=configs/NAME.py or"
        " --config=roadflax:NAME"
    )
  if mode == "compare":
    from roadflax.results import compare  # matplotlib is needed by this mode only

    compare.compare_main(workdirs, FLAGS.output or ".")
    return
  if mode == "summary":
    model = roadnet.create_model(config.model, num_classes=3)
    print(layer_table.layer_table(model, config.data.image_size))
    return
  if mode == "serve":
    from roadflax.serve import serving  # streamlit is needed by this mode only

    serving.serve(
        workdirs,
        stage=FLAGS.stage,
        address=FLAGS.address,
        port=FLAGS.port,
        label=serving.LabelFolders(tuple(FLAGS.input), FLAGS.output),
    )
    return
  if len(workdirs) != 1:
    raise UserError(f"--mode={mode} needs one --workdir=DIR")
  workdir = workdirs[0]
  if mode == "train":
    train.train_and_evaluate(config, workdir)
  elif mode == "evaluate":
    data_config = config.data if config is not None else None
    if runtimes.is_export(workdir):
      if FLAGS.tta is not None:
        raise UserError(
            "--tta needs a workdir: an export's test-time augmentation is"
            " fixed when it is written (evaluate the workdir with --tta,"
            " then export it again)"
        )
      from roadflax.export import evaluation  # the export's runtime

      evaluation.evaluate_export(workdir, data_config)
    else:
      evaluate.evaluate_workdir(workdir, data_config, tta=FLAGS.tta)
  elif mode == "audit":
    from roadflax.labelling import audit

    audit.audit_workdir(workdir, config.data if config is not None else None)
  elif mode == "label":
    from roadflax.labelling import label_mode

    label_mode.label_main(
        workdir,
        FLAGS.input,
        FLAGS.output,
        FLAGS.labels,
        FLAGS.every if FLAGS["every"].present else LABEL_EVERY,
    )
  elif mode == "runtimes":
    choice.build(
        workdir, FLAGS.stage, config.data if config is not None else None
    )
  elif mode == "predict" and (videos := _videos()):
    _predict_videos(workdir, videos)
  elif mode == "predict":
    predict.predict_main(
        workdir,
        FLAGS.input,
        FLAGS.output,
        FLAGS.stage,
        unsure_below=FLAGS.unsure_below,
        explain=FLAGS.explain,
        runtime=FLAGS.runtime,
    )
  else:
    _export(workdir, config)


def _loaded_config() -> ml_collections.ConfigDict | None:
  """--config, loaded; config_flags defers a load failure to the first use."""
  try:
    config = FLAGS.config
    if config is not None:
      config.keys()
  except OSError as error:
    raise UserError(
        "cannot load the --config file:"
        f" {str(error).strip().splitlines()[-1].strip()}"
    ) from None
  return config


def _videos() -> list[str]:
  """The videos among --input; [] for images (mixing both is an error)."""
  from roadflax.serve import video_predict  # PyAV and folium: videos only

  videos = video_predict.video_inputs(FLAGS.input)
  if not videos and FLAGS.gpx:
    raise UserError("--gpx places a video on the map: --input holds none")
  return videos


def _predict_videos(workdir: str, videos: list[str]) -> None:
  from roadflax.serve import video_predict

  video_predict.predict_videos(
      workdir,
      videos,
      FLAGS.output,
      FLAGS.stage,
      every=FLAGS.every,
      min_seconds=FLAGS.min_segment_seconds,
      gpx_path=FLAGS.gpx,
      gpx_offset=FLAGS.gpx_offset,
      unsure_below=FLAGS.unsure_below,
      runtime=FLAGS.runtime,
  )


def _export(workdir: str, config) -> None:
  if FLAGS.format is None or not FLAGS.output:
    raise UserError(
        "--mode=export needs --format=FORMAT (one of"
        f" {', '.join(runtimes.FORMATS)}) and --output=DIR"
    )
  from roadflax.export import exporters  # converters load on demand

  exporters.export_model(
      workdir,
      FLAGS.stage,
      FLAGS.format,
      FLAGS.output,
      data_config=config.data if config is not None else None,
  )


def fail(message: str) -> None:
  logging.flush()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, with config mistakes reported in one line."""
  try:
    return FLAGS(_shipped_configs_resolved(argv))
  except ValueError as error:  # no such shipped config
    fail(str(error))
  except flags.Error as error:
    fail(str(error))
  except (
      AttributeError,
      KeyError,
  ) as error:  # ml_collections: no such config key
    key = re.search(r'instead of "(\w+)"', str(error)) or re.search(
        r"'(\w+)'", str(error)
    )
    hint = re.search(r'Did you mean "(\w+)"', str(error))
    fail(
        f"unknown config key {key.group(1) if key else str(error)!r}"
        + (f" (did you mean {hint.group(1)!r}?)" if hint else "")
        + "; every key is listed in configs/default.py"
    )


def _shipped_configs_resolved(argv: list[str]) -> list[str]:
  """argv with `--config=roadflax:NAME` (or `--config roadflax:NAME`) as
  the path of the shipped config file."""
  resolved = list(argv)
  for i, arg in enumerate(resolved):
    if arg.startswith("--config="):
      resolved[i] = "--config=" + configs.resolve(arg[len("--config=") :])
    elif arg == "--config" and i + 1 < len(resolved):
      resolved[i + 1] = configs.resolve(resolved[i + 1])
  return resolved


def execute(argv: list[str]) -> None:
  """Runs the parsed command; a user's mistake ends in one `error:` line."""
  try:
    run(argv)
  except UserError as error:
    fail(str(error))


def main() -> None:
  """The `roadflax` console command."""
  if sys.argv[1:] == ["--version"]:
    from roadflax import __version__

    print(f"roadflax {__version__}")
    return
  app.run(execute, flags_parser=parse_flags)
