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

What happens to the files is `uploads.describe_uploads`, plain Python that
tests call directly; this module only draws.
"""

import argparse
import datetime
import os
import sys
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

# The imports below come after quieting TensorFlow.
import altair as alt
import numpy as np
import pandas as pd
from PIL import Image
import streamlit as st

from roadflax.serve import predict, uploads
from roadflax.runs import workdirs
from roadflax.serve.autoencoder import Autoencoder
from roadflax.errors import UserError
from roadflax.files import read_json_if_present

PAGE_TITLE = "roadflax — road surface classifier"
EXAMPLES_ENV = "ROADFLAX_EXAMPLES"
DEFAULT_MAX_MEGAPIXELS = 40
# PIL warns above this many pixels and refuses twice as many (a guard against
# decompression bombs); the sidebar's limit stays within it.
_LARGEST_MEGAPIXELS = Image.MAX_IMAGE_PIXELS // 1_000_000
_PREDICTED_COLOUR = "#1c83e1"  # also the F1 bars of the model card
_OTHER_COLOUR = "#c4cad6"


def _script_args(argv: Sequence[str]) -> argparse.Namespace:
  """The arguments after `--` of `streamlit run roadflax/serve/app.py -- ...`."""
  parser = argparse.ArgumentParser(
      prog="roadflax/serve/app.py",
      description="The roadflax web app's arguments.",
  )
  parser.add_argument("--workdir", default="", help="the workdir shown first")
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


def _model_card(
    classifier: predict.Classifier, autoencoder: Autoencoder | None
) -> None:
  """Which model answers: what it tells apart, how well, and how old it is."""
  # Each is None while the stage has not written it.
  report = read_json_if_present(
      os.path.join(classifier.stage_dir, "report.json")
  )
  summary = read_json_if_present(
      os.path.join(classifier.stage_dir, workdirs.SUMMARY_FILE)
  )
  size = classifier.data_config.image_size
  with st.container(border=True):
    st.subheader(f"Model: {os.path.basename(classifier.stage_dir)}")
    columns = st.columns(4)
    columns[0].metric(
        "Test accuracy",
        f"{report['accuracy']:.1%}" if report else "not evaluated",
    )
    columns[1].metric(
        "Input",
        f"{size}×{size} px",
        help=f"Lanczos resize, contrast ×{classifier.data_config.contrast:g}",
    )
    columns[2].metric("Checkpoint step", f"{classifier.step:,}")
    if summary is None:
      columns[3].metric("Trained", "unfinished")
    else:
      columns[3].metric(
          "Trained",
          _date(summary["completed_at"]),
          help=f"completed at {summary['completed_at']}",
      )
    st.dataframe(
        _class_table(classifier.class_names, report),
        column_config={
            "test F1": st.column_config.ProgressColumn(
                min_value=0.0,
                max_value=1.0,
                format="%.2f",
                color=_PREDICTED_COLOUR,
            ),
            "precision": st.column_config.NumberColumn(format="%.2f"),
            "recall": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    reconstruction = (
        f"reconstructions by {autoencoder.stage_dir} (step "
        f"{autoencoder.step:,})"
        if autoencoder is not None
        else "no reconstruction stage"
    )
    st.caption(f"{classifier.stage_dir} · {reconstruction}")


def _date(timestamp: str) -> str:
  """The day of summary.json's `completed_at` (the minute is in the help)."""
  return datetime.datetime.fromisoformat(timestamp).strftime("%Y-%m-%d")


def _probability_chart(
    probabilities: np.ndarray, class_names: Sequence[str]
) -> alt.Chart:
  """Horizontal bars on a fixed 0-100% scale, the predicted class in colour.

  A fixed scale keeps an unsure prediction looking unsure; st.bar_chart would
  stretch the largest bar to the full width.
  """
  predicted = np.arange(len(class_names)) == np.argmax(probabilities)
  data = pd.DataFrame({
      "class": class_names,
      "probability": probabilities,
      "predicted": predicted,
  })
  return (
      alt.Chart(data)
      .mark_bar()
      .encode(
          x=alt.X(
              "probability:Q",
              scale=alt.Scale(domain=[0, 1]),
              axis=alt.Axis(format="%", title=None),
          ),
          y=alt.Y(
              "class:N", sort=None, title=None, axis=alt.Axis(labelLimit=240)
          ),  # Whole class names.
          color=alt.condition(
              "datum.predicted",
              alt.value(_PREDICTED_COLOUR),
              alt.value(_OTHER_COLOUR),
          ),
          tooltip=["class", alt.Tooltip("probability:Q", format=".1%")],
      )
  )


def _class_table(
    class_names: Sequence[str], report: dict[str, Any] | None
) -> pd.DataFrame:
  """One row per class: its test F1, precision, recall and support if known."""
  if report is None:
    return pd.DataFrame(index=pd.Index(class_names, name="class"))
  rows = {name: report["per_class"][name] for name in class_names}
  table = pd.DataFrame.from_dict(rows, orient="index")
  table.index.name = "class"
  return table[["f1", "precision", "recall", "support"]].rename(
      columns={"f1": "test F1", "support": "test images"}
  )


def _show_upload(upload: uploads.Upload, class_names: Sequence[str]) -> None:
  """One file's card: its error, or its prediction and pictures."""
  if upload.error is not None:
    st.error(f"**{upload.name}**: {upload.error}")
    return
  with st.container(border=True):
    best = int(np.argmax(upload.probabilities))
    left, middle, right = st.columns([2, 1, 1])
    with left:
      st.metric(
          upload.name,
          class_names[best],
          f"{upload.probabilities[best]:.0%} probability",
          delta_color="off",
          delta_arrow="off",
      )
      st.altair_chart(
          _probability_chart(upload.probabilities, class_names),
          height=40 + 30 * len(class_names),
      )
      if upload.note is not None:
        st.caption(upload.note)
    middle.image(
        upload.model_view, caption="what the model saw", width="stretch"
    )
    if upload.reconstruction is not None:
      right.image(
          upload.reconstruction,
          caption="the autoencoder's reconstruction",
          width="stretch",
      )


def main() -> None:
  st.set_page_config(page_title=PAGE_TITLE, page_icon="🛣️", layout="wide")
  args = _script_args(sys.argv[1:])
  st.title(PAGE_TITLE)
  workdir = st.sidebar.text_input(
      "Workdir",
      args.workdir,
      help="The folder a training run wrote: run.json, STAGE/checkpoints/.",
  )
  if not workdir:
    st.info("Enter a workdir in the sidebar: the --workdir of a training run.")
    return
  try:
    stages = workdirs.classifier_stages(workdir)
  except UserError as error:
    st.error(str(error))
    return
  stage = st.sidebar.selectbox(
      "Stage",
      stages,
      index=(
          stages.index(args.stage) if args.stage in stages else len(stages) - 1
      ),
      help="The classification stage whose best checkpoint answers.",
  )
  max_megapixels = st.sidebar.number_input(
      "Largest image (megapixels)",
      min_value=1,
      max_value=_LARGEST_MEGAPIXELS,
      value=DEFAULT_MAX_MEGAPIXELS,
      help="Larger files are refused before they are decoded.",
  )
  try:
    classifier = _classifier(os.path.abspath(workdir), stage)
    examples = uploads.example_files(args.examples) if args.examples else []
  except UserError as error:
    st.error(str(error))
    return
  autoencoder = _autoencoder_or_warning(os.path.abspath(workdir))
  _model_card(classifier, autoencoder)
  files = st.file_uploader(
      "Road photos",
      type=["jpg", "jpeg", "png"],
      accept_multiple_files=True,
      help=(
          "Drag and drop JPEG or PNG files, or browse. Each is classified "
          "on its own."
      ),
  )
  described = uploads.describe_uploads(
      examples + [(file.name, file.getvalue()) for file in files],
      classifier,
      autoencoder,
      max_pixels=max_megapixels * 1_000_000,
  )
  for upload in described:
    _show_upload(upload, classifier.class_names)


if __name__ == "__main__":  # Streamlit runs this file as __main__.
  main()
