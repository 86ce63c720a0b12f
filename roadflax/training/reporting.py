"""What a stage shows besides its scalars: the console's progress bar and
lines, and TensorBoard's pictures of the validation split."""

from typing import Any

import jax
import ml_collections
import numpy as np
from clu import metric_writers
from tqdm import tqdm

from roadflax.data import batching
from roadflax.models import objectives, roadnet, steps
from roadflax.results import reports, visuals
from roadflax.training import evaluate

# Train metrics on the epoch line (the health values stay in TensorBoard).
_EPOCH_LINE_METRICS = ("loss", "accuracy", "mse")


def progress_bar(description: str, *, total: int, initial: int) -> tqdm:
  """One epoch's bar in steps, on process 0's console; it clears when closed."""
  return tqdm(
      total=total,
      initial=initial,
      desc=description,
      unit="step",
      leave=False,
      disable=jax.process_index() > 0,
      dynamic_ncols=True,
  )


def write_line(text: str) -> None:
  """A console line that leaves the progress bar intact."""
  tqdm.write(text)


def hparams(
    config: ml_collections.ConfigDict, stage_name: str
) -> dict[str, Any]:
  """TensorBoard's HPARAMS tab: the stage's config, the data's and the seed."""
  stage = config.stages[stage_name]
  values = {f"stage.{k}": v for k, v in stage.items()}
  values.update({
      f"data.{k}": config.data[k] for k in ("source", "image_size", "contrast")
  })
  values.update(
      {"seed": config.seed, "model.head_input": config.model.head_input}
  )
  return {
      k: str(v) if isinstance(v, (tuple, list)) else v
      for k, v in values.items()
  }


def postfix(values: dict[str, Any], images_per_second: float) -> dict[str, str]:
  """The progress bar's latest train loss (and accuracy) and throughput."""
  shown = {"loss": f"{float(values['train_loss']):.4f}"}
  if "train_accuracy" in values:
    shown["acc"] = f"{float(values['train_accuracy']):.3f}"
  shown["img/s"] = f"{images_per_second:.0f}"
  return shown


def epoch_line(
    stage_name: str,
    epoch: int,
    num_epochs: int,
    train: dict[str, Any],
    val: dict[str, float],
    images_per_second: float,
    seconds: float,
) -> str:
  """`classify epoch 5/10 | train loss ... | val loss ... | 52 img/s, 35 s`."""
  parts = [f"{stage_name} epoch {epoch + 1}/{num_epochs}"]
  parts.append(
      "train "
      + " ".join(
          f"{k} {float(v):.4f}"
          for k, v in train.items()
          if k in _EPOCH_LINE_METRICS
      )
  )
  parts.append("val " + " ".join(f"{k} {v:.4f}" for k, v in val.items()))
  parts.append(f"{images_per_second:.0f} img/s, {seconds:.0f} s")
  return " | ".join(parts)


class PictureInputs:
  """A fixed handful of validation images, reconstructed each epoch."""

  def __init__(
      self,
      model: roadnet.RoadNet,
      objective: objectives.Objective,
      pipeline: batching.Pipeline,
      data: ml_collections.ConfigDict,
      count: int = 8,
  ):
    self.images = None
    self.mean, self.std = data.mean, data.std
    if objective.reconstructs and jax.process_index() == 0:
      batch = next(pipeline.eval_batches(batch_size=count))
      self.images = batch["image"][batch["mask"]]
      self.reconstruct = steps.jit_reconstruct_step(model)


def write_pictures(
    writer: metric_writers.MetricWriter,
    step: int,
    params: Any,
    result: evaluate.EvalResult,
    class_names: tuple[str, ...],
    pictures: PictureInputs,
) -> None:
  """Confusion matrix and per-class precision/recall, or reconstructions."""
  if result.confusion is not None:
    writer.write_images(
        step,
        {
            "val_confusion_matrix": visuals.confusion_image(
                result.confusion, class_names, f"validation, step {step}"
            )[None]
        },
    )
    per_class = reports.classification_report(
        result.confusion, class_names, checkpoint_step=step
    )["per_class"]
    writer.write_scalars(
        step,
        {
            f"val_{metric}/{name}": values[metric]
            for name, values in per_class.items()
            for metric in ("precision", "recall")
        },
    )
  if pictures.images is not None:
    reconstructions = np.asarray(pictures.reconstruct(params, pictures.images))
    writer.write_images(
        step,
        {
            "val_reconstructions": visuals.reconstruction_grid(
                pictures.images, reconstructions, pictures.mean, pictures.std
            )[None]
        },
    )
