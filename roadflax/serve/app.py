"""The web app: drop road photos or videos, or take a photo; get the surface
class of each, and why.

  python main.py --mode=serve --workdir=runs/demo [--workdir=runs/ground]
  python main.py --mode=serve --workdir=runs      # every trained run in it
  python -m streamlit run roadflax/serve/app.py -- --workdir=runs/demo \
      [--workdir=...] [--stage=classify] [--examples=DIR]

The app opens only the runs given on its command line (`catalog`): the
sidebar lists them and their classification stages, and nothing else can be
opened from the page. Above the uploads, a card says which model answers: its
classes, input size, test scores, training date and checkpoint. Below them, a
table of all photos, least confident first, with the `unsure` ones flagged
(the threshold is a sidebar slider) and the predictions to download as CSV or
JSON; then, for each photo, the predicted class, the class probabilities, the
image as the model saw it (resized and contrast-enhanced, exactly as in
training) beside its Grad-CAM heat map and, when the run has a reconstruction
stage, the autoencoder's reconstruction of it; for each video, its timeline
(`roadflax.drives`): the class over time, the segments and a CSV download,
its frames classified by the runtime the sidebar names (`export.choice`;
auto: the fastest built for the checkpoint, else JAX). A
file is classified once per model: a rerun computes only the files it has
not seen (`st.cache_data`, keyed by their contents).

Script arguments (after `--`):
  --workdir DIR    a run to serve, or a folder of runs; repeatable.
  --stage NAME     the classification stage selected first (default: last).
  --examples DIR   images run through the same path as uploads on every page
                   load, so the page shows predictions before anyone uploads
                   (demos, screenshots). Defaults to $ROADFLAX_EXAMPLES, which
                   also reaches the app through `--mode=serve`.
  --input DIR      a folder of drive videos or images the Label page may
                   queue frames from (it and its subfolders); repeatable.
  --output DIR     the labelled folder the Label page writes
                   (`roadflax.labelling.store`).

Two pages: Classify (the above) and Label (`label_page`: frames of a drive
queued by the model's doubt, labelled with one key per class).

What happens to the files is `uploads`, `videos`, `summary` and `catalog`,
plain Python that tests call directly; this module and `cards` only draw.
"""

import argparse
import dataclasses
import os
import sys
from typing import Any, Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

# The imports below come after quieting TensorFlow.
import numpy as np
from PIL import Image
import streamlit as st

from roadflax.errors import UserError
from roadflax.export import choice
from roadflax.serve import cards, catalog, model, predict, summary, uploads
from roadflax.serve import batcher, label_page, videos
from roadflax.serve.autoencoder import Autoencoder

PAGE_TITLE = "roadflax — road surface classifier"
EXAMPLES_ENV = "ROADFLAX_EXAMPLES"
DEFAULT_MAX_MEGAPIXELS = 40
NO_RUNS = (
    "This app serves the runs given on its command line, and none was"
    " given: start it with `python main.py --mode=serve --workdir=RUN`"
    " (repeatable, or a folder of runs)."
)
# PIL warns above this many pixels and refuses twice as many (a guard against
# decompression bombs); the sidebar's limit stays within it.
_LARGEST_MEGAPIXELS = Image.MAX_IMAGE_PIXELS // 1_000_000
# Photos whose predictions the server keeps (each a few hundred kB of
# images), and videos whose timelines it keeps (a few kB a minute).
_CACHED_FILES = 500
_CACHED_VIDEOS = 100


def _script_args(argv: Sequence[str]) -> argparse.Namespace:
  """The arguments after `--` of `streamlit run roadflax/serve/app.py -- ...`."""
  parser = argparse.ArgumentParser(
      prog="roadflax/serve/app.py",
      description="The roadflax web app's arguments.",
  )
  parser.add_argument(
      "--workdir",
      action="append",
      default=[],
      help="a run to serve, or a folder of runs; repeatable",
  )
  parser.add_argument(
      "--stage", default=None, help="the stage shown first (default: the last)"
  )
  parser.add_argument(
      "--examples",
      default=os.environ.get(EXAMPLES_ENV),
      help=(
          "a folder of images to classify on every page load "
          f"(default: ${EXAMPLES_ENV})"
      ),
  )
  parser.add_argument(
      "--input",
      action="append",
      default=[],
      help="a folder to queue frames from for labelling; repeatable",
  )
  parser.add_argument("--output", default=None, help="the labelled folder")
  return parser.parse_args(argv)


@st.cache_resource(show_spinner="Loading the classifier...")
def _classifier(workdir: str, stage: str) -> predict.Classifier:
  """Loaded once per server, not per page view; jit's compilations stay too."""
  return predict.Classifier.load(workdir, stage)


@st.cache_resource(show_spinner=False)  # Compiled on first use.
def _explainer(workdir: str, stage: str) -> Callable[[np.ndarray], Any]:
  """Predictions with their Grad-CAM heat maps, from uint8 pixels; the
  concurrent requests of all sessions in shared batches."""
  return batcher.Batcher(_classifier(workdir, stage).trained.explain_function())


@st.cache_resource(show_spinner=False)  # Compiled on first use.
def _video_model(workdir: str, stage: str, runtime: str) -> model.Model:
  """The classifier as `drives.timeline.classify_video` takes it, predicting
  with `runtime` (`export.choice`); one per server, shared by sessions."""
  return model.Model.of_classifier(
      _classifier(workdir, stage).trained, runtime=runtime
  )


def _runtime(workdir: str, stage: str) -> str:
  """The sidebar's choice of what classifies videos and queues frames."""
  return st.sidebar.selectbox(
      "Runtime",
      ["auto", *choice.recorded(workdir, stage)],
      help=(
          "What classifies the frames of videos: auto is the fastest runtime"
          " that --mode=runtimes built and checked against JAX for this"
          " checkpoint (JAX where none was). Photos are classified and"
          " explained (Grad-CAM) by JAX."
      ),
  )


@st.cache_resource(show_spinner="Loading the autoencoder...")
def _autoencoder(workdir: str) -> Autoencoder | None:
  return Autoencoder.load(workdir)


@st.cache_resource(show_spinner=False)
def _reconstructor(workdir: str) -> Callable[[np.ndarray], Any]:
  """The autoencoder's reconstructions, all sessions' in shared batches."""
  return batcher.Batcher(_autoencoder(workdir).reconstruct)


def _autoencoder_or_warning(workdir: str) -> Autoencoder | None:
  """The autoencoder, or None with a warning: predictions work without it."""
  try:
    return _autoencoder(workdir)
  except UserError as error:
    st.warning(f"No reconstructions: {error}")
    return None


@st.cache_data(
    show_spinner="Classifying a new file...", max_entries=_CACHED_FILES
)
def _described_file(
    digest: str,
    models: tuple[str, int, int | None],
    max_pixels: int,
    _file: tuple[str, bytes],
    _classifier: predict.Classifier,
    _explain: Callable[[np.ndarray], Any],
    _autoencoder: Autoencoder | None,
    _reconstruct: Callable[[np.ndarray], Any] | None,
) -> uploads.Upload:
  """One photo's `Upload`, computed once per contents, models and pixel
  limit (the arguments hashed: those not starting with `_`)."""
  del digest, models  # The cache's key: what `_file` and the models are.
  [upload] = uploads.describe_uploads(
      [_file],
      _classifier,
      _autoencoder,
      max_pixels=max_pixels,
      explain=_explain,
      reconstruct=_reconstruct,
  )
  return dataclasses.replace(upload, model_input=None)  # Not needed again.


@st.cache_data(
    show_spinner=(
        f"Classifying a video, a frame every {videos.DEFAULT_EVERY:g} s..."
    ),
    max_entries=_CACHED_VIDEOS,
)
def _classified_video(
    digest: str,
    name: str,
    stage_dir: str,
    step: int,
    runtime: str,
    _data: bytes,
    _model: model.Model,
) -> videos.Video:
  """One video's timeline, computed once per contents, name (its messages
  and picture name it), model and runtime."""
  del digest, stage_dir, step, runtime  # The cache's key.
  return videos.classify_upload(name, _data, _model)


def _describe(
    files: Sequence[tuple[str, bytes]],
    run: catalog.Run,
    stage: str,
    autoencoder: Autoencoder | None,
    max_pixels: int,
    runtime: str,
) -> tuple[list[uploads.Upload], list[videos.Video]]:
  """Each photo's `Upload` and each video's `Video`, from the cache where
  the file was seen before (a photo under any name)."""
  classifier = _classifier(run.workdir, stage)
  key = (classifier.stage_dir, classifier.step)
  photos, clips = [], []
  for name, data in files:
    digest = uploads.digest(data)
    if videos.is_video(name):
      video_model = _video_model(run.workdir, stage, runtime)
      clips.append(
          _classified_video(digest, name, *key, runtime, data, video_model)
      )
      continue
    photo = _described_file(
        digest,
        (*key, None if autoencoder is None else autoencoder.step),
        max_pixels,
        (name, data),
        classifier,
        _explainer(run.workdir, stage),
        autoencoder,
        None if autoencoder is None else _reconstructor(run.workdir),
    )
    photos.append(dataclasses.replace(photo, name=name))
  return photos, clips


def _pick_run(
    runs: catalog.Catalog, stage: str | None
) -> tuple[catalog.Run, str] | None:
  """The sidebar's choice of run and stage (`stage` first, when the run has
  it), or None, said why, when there is none."""
  if not runs.runs:
    for problem in runs.problems or [NO_RUNS]:
      st.error(problem)
    return None
  for problem in runs.problems:
    st.sidebar.warning(f"Not served: {problem}")
  label = st.sidebar.selectbox(
      "Run",
      [run.label for run in runs.runs],
      help="The training runs this app serves.",
  )
  stages = {run.label: run.stages for run in runs.runs}.get(label, ())
  chosen = st.sidebar.selectbox(
      "Stage",
      stages,
      index=stages.index(stage) if stage in stages else len(stages) - 1,
      help="The classification stage whose best checkpoint answers.",
  )
  try:
    return runs.resolve(label, chosen), chosen
  except UserError as error:
    st.error(str(error))
    return None


def _inputs() -> list[tuple[str, bytes]]:
  """(name, contents) of the files uploaded and the camera's photo."""
  files = st.file_uploader(
      "Road photos or videos",
      type=["jpg", "jpeg", "png", *videos.EXTENSIONS],
      accept_multiple_files=True,
      help=(
          "Drag and drop JPEG or PNG photos, or videos of a drive, or"
          " browse. Each photo is classified on its own; a video a frame"
          f" every {videos.DEFAULT_EVERY:g} s."
      ),
  )
  chosen = [(file.name, file.getvalue()) for file in files]
  if st.toggle("Take a photo with the camera"):
    photo = st.camera_input("Road photo")
    if photo is not None:
      data = photo.getvalue()
      chosen.append((f"camera-{uploads.digest(data)[:8]}.jpg", data))
  return chosen


def _settings() -> tuple[float, int]:
  """The sidebar's unsure threshold and largest image (in pixels)."""
  unsure_below = st.sidebar.slider(
      "Unsure below",
      min_value=0.0,
      max_value=1.0,
      value=model.UNSURE_BELOW,
      step=0.05,
      help="A prediction whose top probability is below this is flagged.",
  )
  max_megapixels = st.sidebar.number_input(
      "Largest image (megapixels)",
      min_value=1,
      max_value=_LARGEST_MEGAPIXELS,
      value=DEFAULT_MAX_MEGAPIXELS,
      help="Larger files are refused before they are decoded.",
  )
  return unsure_below, max_megapixels * 1_000_000


def _classify_page(args: argparse.Namespace) -> None:
  st.title(PAGE_TITLE)
  picked = _pick_run(catalog.find_runs(args.workdir), args.stage)
  if picked is None:
    return
  run, stage = picked
  unsure_below, max_pixels = _settings()
  try:
    classifier = _classifier(run.workdir, stage)
    examples = uploads.example_files(args.examples) if args.examples else []
  except UserError as error:
    st.error(str(error))
    return
  autoencoder = _autoencoder_or_warning(run.workdir)
  name = f"{run.label} · {stage}"
  cards.model_card(classifier, autoencoder, name)
  runtime = _runtime(run.workdir, stage)
  try:
    photos, clips = _describe(
        examples + _inputs(), run, stage, autoencoder, max_pixels, runtime
    )
  except UserError as error:  # a runtime of another checkpoint
    st.error(str(error))
    return
  class_names = classifier.class_names
  if photos:
    results = summary.records(photos, class_names, unsure_below)
    cards.summary_section(results, class_names, name, unsure_below)
  for photo in photos:
    cards.upload_card(photo, class_names, unsure_below)
  for clip in clips:
    cards.video_card(clip, unsure_below)


def _label_page(args: argparse.Namespace) -> None:
  picked = _pick_run(catalog.find_runs(args.workdir), args.stage)
  if picked is None:
    return
  run, stage = picked
  try:
    predictor = _video_model(run.workdir, stage, _runtime(run.workdir, stage))
  except UserError as error:
    st.error(str(error))
    return
  label_page.label_page(predictor, run.workdir, args.input, args.output)


def main() -> None:
  st.set_page_config(page_title=PAGE_TITLE, page_icon="🛣️", layout="wide")
  args = _script_args(sys.argv[1:])

  def classify() -> None:
    _classify_page(args)

  def label() -> None:
    _label_page(args)

  pages = [
      st.Page(classify, title="Classify", icon="🛣️", default=True),
      st.Page(label, title="Label", icon="🏷️", url_path="label"),
  ]
  st.navigation(pages).run()


if __name__ == "__main__":  # Streamlit runs this file as __main__.
  main()
