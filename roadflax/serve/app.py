"""The web app: drop road photos, get the surface class of each.

  python main.py --mode=serve --workdir=runs/demo
  python -m streamlit run roadflax/serve/app.py -- --workdir=runs/demo \
      [--stage=classify] [--examples=DIR]

For each image the page shows the predicted class, the class probabilities,
the image as the model saw it (resized and contrast-enhanced, exactly as in
training) and, when the workdir has a reconstruction stage, the autoencoder's
reconstruction of it. Above the uploads, a card says which model answers:
its classes, input size, test scores, training date and checkpoint.

Script arguments (after `--`):
  --workdir DIR    prefills the sidebar's workdir.
  --stage NAME     the classification stage selected first (default: last).
  --examples DIR   images run through the same path as uploads on every page
                   load, so the page shows predictions before anyone uploads
                   (demos, screenshots). Defaults to $ROADFLAX_EXAMPLES, which
                   also reaches the app through `--mode=serve`.

Everything about one batch of files is `describe_uploads`, plain Python that
tests call directly; the rest of this module only draws. Each bad file (empty,
truncated, not an image, too many pixels) gets its own error while the others
still get predictions.
"""

import argparse
import dataclasses
import datetime
import io
import os
import pathlib
import sys
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

import altair as alt  # noqa: E402  (after quieting TensorFlow)
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402
import streamlit as st  # noqa: E402

from roadflax.data import exif, image_folder, input_pipeline  # noqa: E402
from roadflax.serve import predict  # noqa: E402
from roadflax.results import visuals  # noqa: E402
from roadflax.runs import workdirs  # noqa: E402
from roadflax.serve.autoencoder import Autoencoder  # noqa: E402
from roadflax.errors import UserError  # noqa: E402
from roadflax.files import read_json  # noqa: E402

PAGE_TITLE = "roadflax — road surface classifier"
EXAMPLES_ENV = "ROADFLAX_EXAMPLES"
DEFAULT_MAX_MEGAPIXELS = 40
# PIL warns above this many pixels and refuses twice as many (a guard against
# decompression bombs); the sidebar's limit stays within it.
_LARGEST_MEGAPIXELS = Image.MAX_IMAGE_PIXELS // 1_000_000
# PNG signature (8), IHDR length and type (8), width and height (8).
_PNG_BIT_DEPTH_AT = 24
_PREDICTED_COLOUR = "#1c83e1"  # also the F1 bars of the model card
_OTHER_COLOUR = "#c4cad6"
# Colour modes, as PIL names them, that decoding turns into RGB.
_COLOUR_MODES = {
    "1": "black-and-white", "L": "grayscale", "LA": "grayscale",
    "I": "grayscale", "I;16": "grayscale", "I;16B": "grayscale",
    "P": "palette", "PA": "palette", "CMYK": "CMYK",
}


@dataclasses.dataclass
class Upload:
  """One file and what the classifier and the autoencoder make of it."""
  name: str
  error: str | None = None  # why the file got no prediction
  note: str | None = None  # what decoding changed (colour mode, bit depth)
  model_input: np.ndarray | None = None  # float32 [S, S, 3], normalised
  model_view: np.ndarray | None = None  # uint8 [S, S, 3], before normalising
  probabilities: np.ndarray | None = None  # float32 [classes]
  reconstruction: np.ndarray | None = None  # uint8 [S, S, 3]


def describe_uploads(files: Sequence[tuple[str, bytes]],
                     classifier: predict.Classifier,
                     autoencoder: Autoencoder | None, *,
                     max_pixels: int) -> list[Upload]:
  """Classifies (and reconstructs) every readable file; the rest get errors.

  A bad file must not cost the others their predictions, so each problem is
  recorded on its file's `Upload` rather than raised. The readable images go
  through each model together, in batches (`predict.in_batches`).

  Args:
    files: (name, contents) pairs, in the order to show them.
    classifier: the model that predicts.
    autoencoder: the model that reconstructs, or None for no reconstructions.
    max_pixels: files with more pixels than this are refused undecoded.

  Returns:
    One `Upload` per file, in order: with `error` set, or with a prediction.
  """
  uploads = [_read_upload(name, data, classifier.data_config, max_pixels)
             for name, data in files]
  readable = [upload for upload in uploads if upload.error is None]
  if not readable:
    return uploads
  images = np.stack([upload.model_input for upload in readable])
  probabilities = predict.in_batches(classifier.predict, images)
  reconstructions = (predict.in_batches(autoencoder.reconstruct, images)
                     if autoencoder is not None else [None] * len(readable))
  for upload, p, reconstruction in zip(readable, probabilities,
                                       reconstructions):
    upload.probabilities, upload.reconstruction = p, reconstruction
  return uploads


def _read_upload(name: str, data: bytes, data_config: ml_collections.ConfigDict,
                 max_pixels: int) -> Upload:
  """Checks and preprocesses one file, the cheapest checks first.

  The pixel count comes from the header, before anything is decoded, so a
  huge image (a decompression bomb, or just a 200-megapixel scan) is refused
  without allocating its pixels.
  """
  reason = image_folder.check_image_bytes(data)
  if reason is not None:
    return Upload(name, error=f"{reason}; upload a JPEG or PNG")
  try:
    with Image.open(io.BytesIO(data)) as image:
      (width, height), note = image.size, _decoding_note(image, data)
  except Image.DecompressionBombError as error:
    return Upload(name, error=f"too large ({error})")
  except OSError:  # PIL's UnidentifiedImageError is one.
    return Upload(name, error="damaged image header; upload a JPEG or PNG")
  if width * height > max_pixels:
    return Upload(name, error=(
        f"too large: {width:,} x {height:,} pixels ({width * height / 1e6:.1f} "
        f"megapixels) is over the limit of {max_pixels / 1e6:g} megapixels; "
        "shrink the image or raise the limit in the sidebar"))
  try:
    model_input = input_pipeline.preprocess_bytes(data, data_config)
  except UserError:  # Its reason is TensorFlow's op trace, no help here.
    return Upload(name, error="damaged image data, it cannot be decoded; "
                  "upload a JPEG or PNG")
  model_view = visuals.denormalize(model_input, data_config.mean,
                                   data_config.std)
  return Upload(name, note=note, model_input=model_input, model_view=model_view)


def _decoding_note(image: Image.Image, data: bytes) -> str | None:
  """What decoding changed, for files that are not plain 8-bit RGB.

  Not an error: training decodes every image the same way. But whoever
  uploads a 16-bit or transparent PNG should know what the model did not see,
  and whoever uploads a phone photo why its pixels were turned.
  """
  changes = []
  if exif.orientation(data) != exif.UPRIGHT:
    changes.append("turned upright as its EXIF orientation says")
  if image.mode not in ("RGB", "RGBA"):
    changes.append(f"{_COLOUR_MODES.get(image.mode, image.mode)} to RGB")
  if image.format == "PNG" and data[_PNG_BIT_DEPTH_AT] == 16:
    changes.append("16 to 8 bits per channel")
  if image.has_transparency_data:
    changes.append("transparency dropped")
  return f"Decoded as in training: {', '.join(changes)}." if changes else None


def example_files(folder: str) -> list[tuple[str, bytes]]:
  """(name, contents) of the images under `folder`, as if uploaded.

  Raises:
    UserError: `folder` does not exist or holds no image file.
  """
  return [(os.path.basename(path), pathlib.Path(path).read_bytes())
          for path in predict.image_paths([folder])]


# ----------------------------------------------------------------- the page


def _script_args(argv: Sequence[str]) -> argparse.Namespace:
  """The arguments after `--` of `streamlit run roadflax/serve/app.py -- ...`."""
  parser = argparse.ArgumentParser(
      prog="roadflax/serve/app.py", description="The roadflax web app's arguments.")
  parser.add_argument("--workdir", default="",
                      help="the workdir shown first")
  parser.add_argument("--stage", default=None,
                      help="the stage shown first (default: the last)")
  parser.add_argument("--examples", default=os.environ.get(EXAMPLES_ENV),
                      help=f"a folder of images to classify on every page load "
                      f"(default: ${EXAMPLES_ENV})")
  return parser.parse_args(argv)


@st.cache_resource(show_spinner="Loading the classifier...")
def _classifier(workdir: str, stage: str) -> predict.Classifier:
  """Loaded once per server, not per page view; jit's compilations stay too."""
  return predict.Classifier.load(workdir, stage)


@st.cache_resource(show_spinner="Loading the autoencoder...")
def _autoencoder(workdir: str) -> Autoencoder | None:
  return Autoencoder.load(workdir)


def _autoencoder_or_warning(workdir: str) -> Autoencoder | None:
  """The autoencoder, or None with a warning: predictions work without it."""
  try:
    return _autoencoder(workdir)
  except UserError as error:
    st.warning(f"No reconstructions: {error}")
    return None


def _read_json_if_present(path: str) -> dict[str, Any] | None:
  """A stage's summary or report; None while the stage has not written it."""
  return read_json(path) if os.path.exists(path) else None


def _model_card(classifier: predict.Classifier,
                autoencoder: Autoencoder | None) -> None:
  """Which model answers: what it tells apart, how well, and how old it is."""
  report = _read_json_if_present(
      os.path.join(classifier.stage_dir, "report.json"))
  summary = _read_json_if_present(
      os.path.join(classifier.stage_dir, workdirs.SUMMARY_FILE))
  size = classifier.data_config.image_size
  with st.container(border=True):
    st.subheader(f"Model: {os.path.basename(classifier.stage_dir)}")
    columns = st.columns(4)
    columns[0].metric("Test accuracy", f"{report['accuracy']:.1%}"
                      if report else "not evaluated")
    columns[1].metric("Input", f"{size}×{size} px",
                      help=f"Lanczos resize, contrast ×"
                      f"{classifier.data_config.contrast:g}")
    columns[2].metric("Checkpoint step", f"{classifier.step:,}")
    if summary is None:
      columns[3].metric("Trained", "unfinished")
    else:
      columns[3].metric("Trained", _date(summary["completed_at"]),
                        help=f"completed at {summary['completed_at']}")
    st.dataframe(_class_table(classifier.class_names, report), column_config={
        "test F1": st.column_config.ProgressColumn(
            min_value=0.0, max_value=1.0, format="%.2f",
            color=_PREDICTED_COLOUR),
        "precision": st.column_config.NumberColumn(format="%.2f"),
        "recall": st.column_config.NumberColumn(format="%.2f"),
    })
    reconstruction = (f"reconstructions by {autoencoder.stage_dir} (step "
                      f"{autoencoder.step:,})" if autoencoder is not None
                      else "no reconstruction stage")
    st.caption(f"{classifier.stage_dir} · {reconstruction}")


def _date(timestamp: str) -> str:
  """The day of summary.json's `completed_at` (the minute is in the help)."""
  return datetime.datetime.fromisoformat(timestamp).strftime("%Y-%m-%d")


def _probability_chart(probabilities: np.ndarray,
                       class_names: Sequence[str]) -> alt.Chart:
  """Horizontal bars on a fixed 0-100% scale, the predicted class in colour.

  A fixed scale keeps an unsure prediction looking unsure; st.bar_chart would
  stretch the largest bar to the full width.
  """
  predicted = np.arange(len(class_names)) == np.argmax(probabilities)
  data = pd.DataFrame({"class": class_names, "probability": probabilities,
                       "predicted": predicted})
  return alt.Chart(data).mark_bar().encode(
      x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]),
              axis=alt.Axis(format="%", title=None)),
      y=alt.Y("class:N", sort=None, title=None,
              axis=alt.Axis(labelLimit=240)),  # Whole class names.
      color=alt.condition("datum.predicted", alt.value(_PREDICTED_COLOUR),
                          alt.value(_OTHER_COLOUR)),
      tooltip=["class", alt.Tooltip("probability:Q", format=".1%")])


def _class_table(class_names: Sequence[str],
                 report: dict[str, Any] | None) -> pd.DataFrame:
  """One row per class: its test F1, precision, recall and support if known."""
  if report is None:
    return pd.DataFrame(index=pd.Index(class_names, name="class"))
  rows = {name: report["per_class"][name] for name in class_names}
  table = pd.DataFrame.from_dict(rows, orient="index")
  table.index.name = "class"
  return table[["f1", "precision", "recall", "support"]].rename(
      columns={"f1": "test F1", "support": "test images"})


def _show_upload(upload: Upload, class_names: Sequence[str]) -> None:
  """One file's card: its error, or its prediction and pictures."""
  if upload.error is not None:
    st.error(f"**{upload.name}**: {upload.error}")
    return
  with st.container(border=True):
    best = int(np.argmax(upload.probabilities))
    left, middle, right = st.columns([2, 1, 1])
    with left:
      st.metric(upload.name, class_names[best],
                f"{upload.probabilities[best]:.0%} probability",
                delta_color="off", delta_arrow="off")
      st.altair_chart(_probability_chart(upload.probabilities, class_names),
                      height=40 + 30 * len(class_names))
      if upload.note is not None:
        st.caption(upload.note)
    middle.image(upload.model_view, caption="what the model saw",
                 width="stretch")
    if upload.reconstruction is not None:
      right.image(upload.reconstruction,
                  caption="the autoencoder's reconstruction", width="stretch")


def main() -> None:
  st.set_page_config(page_title=PAGE_TITLE, page_icon="🛣️", layout="wide")
  args = _script_args(sys.argv[1:])
  st.title(PAGE_TITLE)
  workdir = st.sidebar.text_input(
      "Workdir", args.workdir,
      help="The folder a training run wrote: run.json, STAGE/checkpoints/.")
  if not workdir:
    st.info("Enter a workdir in the sidebar: the --workdir of a training run.")
    return
  try:
    stages = workdirs.classifier_stages(workdir)
  except UserError as error:
    st.error(str(error))
    return
  stage = st.sidebar.selectbox(
      "Stage", stages, index=(stages.index(args.stage)
                              if args.stage in stages else len(stages) - 1),
      help="The classification stage whose best checkpoint answers.")
  max_megapixels = st.sidebar.number_input(
      "Largest image (megapixels)", min_value=1, max_value=_LARGEST_MEGAPIXELS,
      value=DEFAULT_MAX_MEGAPIXELS,
      help="Larger files are refused before they are decoded.")
  try:
    classifier = _classifier(os.path.abspath(workdir), stage)
    examples = example_files(args.examples) if args.examples else []
  except UserError as error:
    st.error(str(error))
    return
  autoencoder = _autoencoder_or_warning(os.path.abspath(workdir))
  _model_card(classifier, autoencoder)
  files = st.file_uploader(
      "Road photos", type=["jpg", "jpeg", "png"], accept_multiple_files=True,
      help="Drag and drop JPEG or PNG files, or browse. Each is classified "
      "on its own.")
  uploads = describe_uploads(
      examples + [(file.name, file.getvalue()) for file in files],
      classifier, autoencoder, max_pixels=max_megapixels * 1_000_000)
  for upload in uploads:
    _show_upload(upload, classifier.class_names)


if __name__ == "__main__":  # Streamlit runs this file as __main__.
  main()
