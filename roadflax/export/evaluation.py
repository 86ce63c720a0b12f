"""`--mode=evaluate` of an export folder: its own test report, by its own
runtime, beside it (EXPORT_DIR/report.json and report.md, in the format of a
stage's report)."""

from typing import Any

import ml_collections
import numpy as np
from absl import logging

from roadflax.datasets import sources
from roadflax.export import runtimes, samples
from roadflax.results import group_accuracy, reports


def evaluate_export(
    directory: str, data_config: ml_collections.ConfigDict | None = None
) -> dict[str, Any]:
  """Runs the export in `directory` over a test split and writes its report.

  Args:
    directory: an export folder.
    data_config: the data to test on (`config.data`); default: the data the
      export was measured on when written (its workdir's, or where the
      export was told they were).

  Returns:
    The report (`reports.classification_report`), also written to
    DIRECTORY/report.json and report.md.

  Raises:
    UserError: `directory` is not an export, its runtime is missing, or the
      data have other classes.
  """
  export = runtimes.load_export(directory)
  trained_on = ml_collections.ConfigDict(export.metadata["data_config"])
  dataset = sources.load_dataset_for(
      trained_on if data_config is None else data_config,
      export.class_names,
      f"the export in {directory}",
      trained_on=trained_on,
  )
  split = dataset.splits["test"]
  num_classes = len(export.class_names)
  confusion = np.zeros((num_classes, num_classes), np.int64)
  truths, predicted = [], []  # in the split's order, for groups
  for pixels, labels in samples.pixel_batches(split, export.preprocessing):
    predictions = np.argmax(export.probabilities(pixels), axis=1)
    confusion += reports.confusion_matrix(labels, predictions, num_classes)
    truths.append(labels)
    predicted.append(predictions)
  source = export.metadata["source"]
  report = reports.classification_report(
      confusion,
      export.class_names,
      checkpoint_step=source["step"],
      extra={
          "stage": f"{source['stage']} ({export.format} export)",
          "split": "test",
          "data_root": dataset.root,
          "export_format": export.format,
          "skipped_files": list(split.skipped),
          **group_accuracy.report_entry(
              getattr(split, "groups", None),
              np.concatenate(truths),
              np.concatenate(predicted),
              export.class_names,
          ),
      },
  )
  json_path, _ = reports.write_report(report, directory)
  logging.info(
      "test accuracy %.4f on %d images: %s",
      report["accuracy"],
      report["num_examples"],
      json_path,
  )
  print(reports.format_markdown(report))
  return report
