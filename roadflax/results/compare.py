"""Several runs side by side: a results table and their validation curves.

Everything comes from what training leaves in each workdir (run.json,
config.json, STAGE/summary.json, STAGE/report.json, TensorBoard events), so
runs are compared without loading a checkpoint or the data, and an unfinished
run shows what it has so far ("—" elsewhere).

  python main.py --mode=compare --workdir='runs/*' --output=runs

writes comparison.md (the printed table), comparison.csv (the same numbers
unformatted, for a spreadsheet) and comparison.png (validation curves).
"""

import functools
import glob
import os

import jax
import ml_collections
from absl import logging

from roadflax.models import objectives, roadnet
from roadflax.runs import workdirs
from roadflax.errors import UserError
from roadflax.files import atomic_write_text, read_json, read_json_if_present
from roadflax.results import curves, tables

MARKDOWN_FILE, CSV_FILE, PLOT_FILE = (
    "comparison.md",
    "comparison.csv",
    "comparison.png",
)


def compare_main(workdirs_or_globs: list[str], output_dir: str) -> None:
  """Compares the runs in `workdirs_or_globs` into `output_dir`."""
  paths = expand_workdirs(workdirs_or_globs)
  names = run_names(paths)
  runs = [summarize_run(path, name) for path, name in zip(paths, names)]
  class_names = tables.union_class_names(runs)
  table = tables.markdown_table(runs, class_names)
  atomic_write_text(
      os.path.join(output_dir, MARKDOWN_FILE),
      f"# Run comparison\n\n{table}\n\n![Validation curves]({PLOT_FILE})\n",
  )
  atomic_write_text(
      os.path.join(output_dir, CSV_FILE), tables.csv_text(runs, class_names)
  )
  curves.write_plot(runs, os.path.join(output_dir, PLOT_FILE))
  print(table)
  logging.info(
      "compared %d runs into %s: %s, %s, %s",
      len(runs),
      output_dir,
      MARKDOWN_FILE,
      CSV_FILE,
      PLOT_FILE,
  )


def expand_workdirs(items: list[str]) -> list[str]:
  """Workdirs named or matched by globs (each glob sorted), without repeats.

  A glob may match other folders too (`runs/*` beside `runs/logs`); those are
  skipped, but a glob matching no workdir at all, or a named folder that is
  not one, is a mistake.
  """
  if not items:
    raise UserError(
        "--mode=compare needs --workdir=DIR (several, or a quoted glob like"
        " 'runs/*')"
    )
  paths = []
  for item in items:
    if glob.has_magic(item):
      matches = sorted(glob.glob(item))
      if not matches:
        raise UserError(f"--workdir={item} matches nothing")
      found = [path for path in matches if _is_workdir(path)]
      if not found:
        raise UserError(
            f"--workdir={item} matches no roadflax workdir (no "
            f"{workdirs.RUN_FILE} in {', '.join(matches)})"
        )
      paths += found
    elif _is_workdir(item):
      paths.append(item)
    elif not os.path.exists(item):
      raise UserError(f"--workdir={item}: no such folder")
    else:
      raise UserError(
          f"{item} is not a roadflax workdir (no {workdirs.RUN_FILE})"
      )
  return list(dict.fromkeys(os.path.normpath(path) for path in paths))


def _is_workdir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, workdirs.RUN_FILE))


def run_names(paths: list[str]) -> list[str]:
  """Folder names, or the whole paths where two runs share a folder name."""
  names = [os.path.basename(os.path.abspath(path)) for path in paths]
  return names if len(set(names)) == len(names) else list(paths)


def summarize_run(workdir: str, name: str) -> tables.RunSummary:
  """What the table and the plot show of one workdir."""
  run = read_json(os.path.join(workdir, workdirs.RUN_FILE))
  config_path = os.path.join(workdir, workdirs.CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise UserError(
        f"{workdir} has {workdirs.RUN_FILE} but no {workdirs.CONFIG_FILE}"
    )
  config = workdirs.run_config(workdir, None)
  stage_order = list(config.stage_order)
  summaries = {
      stage: read_json_if_present(
          os.path.join(workdir, stage, workdirs.SUMMARY_FILE)
      )
      for stage in stage_order
  }
  classifiers = [s for s in stage_order if _classifies(config.stages[s])]
  last = classifiers[-1] if classifiers else None
  stage = config.stages[last] if last else None
  summary = summaries.get(last) or {}
  report = (
      (read_json_if_present(os.path.join(workdir, last, "report.json")) or {})
      if last
      else {}
  )
  seconds = [s["seconds"] for s in summaries.values() if s and "seconds" in s]
  return tables.RunSummary(
      name=name,
      class_names=tuple(run.get("class_names", ()))
      + tuple(report.get("per_class", {})),
      description=describe_stages(config),
      optimizer=stage.optimizer if stage else None,
      learning_rate=stage.learning_rate if stage else None,
      epochs=summary.get("epochs")
      or (stage.epochs if stage and not stage.steps else None),
      test_accuracy=report.get("accuracy"),
      f1={
          cls: values["f1"]
          for cls, values in report.get("per_class", {}).items()
      },
      parameters=(
          classifier_parameters(workdirs.network(run), run["image_size"])
          if run.get("image_size") and run.get("class_names")
          else None
      ),
      seconds=sum(seconds) if seconds else None,
      images_per_second=summary.get("train_images_per_second"),
      accuracy_curves=curves.stage_curves(
          workdir, name, classifiers, "val_accuracy"
      ),
      reconstruction_curves=curves.stage_curves(
          workdir,
          name,
          [
              s
              for s in stage_order
              if config.stages[s].objective == "reconstruction"
          ],
          "val_loss",
      ),
  )


def _classifies(stage: ml_collections.ConfigDict) -> bool:
  return objectives.Objective(stage.objective).classifies


def describe_stages(config: ml_collections.ConfigDict) -> str:
  """e.g. `pretrain(reconstruction, adam 1e-3, 2 ep) -> classify(...)`: the
  config file's name is not recorded, so the stages stand for it; a
  corrupted input and normalisation layers are named where a run has them."""
  parts = []
  for name in config.stage_order:
    stage = config.stages[name]
    objective = stage.objective
    if stage.get("corruption", "none") != "none":
      objective += f" of {stage.corruption} {stage.corruption_amount:g}"
    length = f"{stage.steps} steps" if stage.steps else f"{stage.epochs} ep"
    parts.append(
        f"{name}({objective}, {stage.optimizer} "
        f"{tables.format_learning_rate(stage.learning_rate)}, {length})"
    )
  norm = config.model.get("norm", "none")
  return ("" if norm == "none" else f"{norm} norm: ") + " -> ".join(parts)


@functools.lru_cache(maxsize=None)
def classifier_parameters(model: roadnet.RoadNet, image_size: int) -> int:
  """Parameters `model`'s classifier reads at `image_size` (encoder, head,
  and with head_input='decoder' the decoder up to its 96-channel map), from
  shapes alone.
  """
  params = jax.eval_shape(
      functools.partial(roadnet.init_params, model, image_size=image_size),
      jax.random.key(0),
  )
  count = roadnet.count_params(params["encoder"]) + roadnet.count_params(
      params["head"]
  )
  if (
      model.head_input == "decoder"
  ):  # its last layer draws the image, which the head never reads
    count += sum(
        roadnet.count_params(layer)
        for name, layer in params["decoder"].items()
        if name != "deconv1"
    )
  return count
