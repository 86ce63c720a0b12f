"""roadflax command line: train, evaluate, predict, or summarise a model.

  python main.py --config=configs/synthetic.py --workdir=runs/demo
  python main.py --mode=evaluate --workdir=runs/demo
  python main.py --mode=predict --workdir=runs/demo --input=photo.jpg
  python main.py --mode=summary --config=configs/default.py
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

from absl import app, flags, logging
from ml_collections import config_flags

from roadflax import evaluate, models, predict, train
from roadflax.errors import UserError

MODES = ("train", "evaluate", "predict", "summary")

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/NAME.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and reports.")
flags.DEFINE_enum("mode", "train", MODES, "The job to run.")
flags.DEFINE_multi_string("input", [], "predict: image files or folders.")
flags.DEFINE_string("output", None, "predict: also write the predictions as JSON here.")
flags.DEFINE_string("stage", None, "predict: the stage to use (default: the last classifier).")
FLAGS = flags.FLAGS


def run(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}: every option is a --flag")
  config, workdir = FLAGS.config, FLAGS.workdir
  if FLAGS.mode in ("train", "summary") and config is None:
    raise UserError(f"--mode={FLAGS.mode} needs --config=configs/NAME.py")
  if FLAGS.mode != "summary" and not workdir:
    raise UserError(f"--mode={FLAGS.mode} needs --workdir=DIR")
  if FLAGS.mode == "summary":
    model = models.create_model(config.model, num_classes=3)
    print(models.summary(model, config.data.image_size))
  elif FLAGS.mode == "train":
    train.train_and_evaluate(config, workdir)
  elif FLAGS.mode == "evaluate":
    evaluate.evaluate_workdir(workdir, config.data if config is not None else None)
  else:
    predict.predict_main(workdir, FLAGS.input, FLAGS.output, FLAGS.stage)


def main(argv: list[str]) -> None:
  try:
    run(argv)
  except UserError as error:
    logging.flush()
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
