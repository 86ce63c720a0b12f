"""`--mode=label`: a labelling queue from videos and images, or labels made
elsewhere imported.

  roadflax --mode=label --workdir=runs/roads --input=drives/ --output=labelled
  roadflax --mode=label --workdir=runs/roads --labels=labelled/queue.csv \
      --output=labelled
"""

from typing import Sequence

from absl import logging

import roadflax
from roadflax.errors import UserError
from roadflax.labelling import imports, queue
from roadflax.labelling.store import LabelStore


def label_main(
    workdir: str,
    inputs: Sequence[str],
    output: str | None,
    labels_csv: str | None,
    every: float,
) -> None:
  """Builds the queue of `inputs` in `output`, or imports `labels_csv` into
  it; the model of `workdir` pre-labels the frames and names the classes."""
  if not output:
    raise UserError("--mode=label needs --output=ROOT, the labelled folder")
  if bool(inputs) == bool(labels_csv):
    raise UserError(
        "--mode=label needs --input=VIDEOS_OR_FOLDER (to queue frames) or"
        " --labels=FILE.csv (to import labels), not both"
    )
  model = roadflax.load(workdir)
  if labels_csv:
    done = imports.import_labels(
        LabelStore(output, model.class_names), labels_csv
    )
    _warn(done.warnings)
    print(done.summary(labels_csv, output))
    return
  built = queue.build_queue(model, inputs, output, every)
  _warn(built.warnings)
  print(built.summary(output))
  print(
      "label them in the app (--mode=serve --label_input=... "
      f"--label_output={output}), or fill the label column and import it"
      f" with --labels={output}/{queue.QUEUE_FILE}"
  )


def _warn(warnings: list[str]) -> None:
  for warning in warnings:
    logging.warning("%s", warning)
