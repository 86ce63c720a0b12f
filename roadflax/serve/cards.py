"""What the web app draws: the model card, the summary of all photos with
its downloads, one card per photo and one per video. Streamlit only; what
happens to the files is `uploads`, `summary` and `videos`."""

import datetime
import os
from typing import Any, Sequence

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from roadflax.files import read_json_if_present
from roadflax.results import visuals
from roadflax.runs import workdirs
from roadflax.serve import predict, summary, uploads, videos
from roadflax.serve.autoencoder import Autoencoder

PREDICTED_COLOUR = "#1c83e1"  # also the F1 bars of the model card
_OTHER_COLOUR = "#c4cad6"
UNSURE_BADGE = "unsure"


def model_card(
    classifier: predict.Classifier,
    autoencoder: Autoencoder | None,
    name: str,
) -> None:
  """Which model answers: what it tells apart, how well, and how old it is.

  Args:
    classifier: the model that answers.
    autoencoder: the model that reconstructs, or None.
    name: how the page names the model: its run and stage as listed.
  """
  # Each is None while the stage has not written it.
  report = read_json_if_present(
      os.path.join(classifier.stage_dir, "report.json")
  )
  summary_json = read_json_if_present(
      os.path.join(classifier.stage_dir, workdirs.SUMMARY_FILE)
  )
  size = classifier.data_config.image_size
  with st.container(border=True):
    st.subheader(f"Model: {name}")
    columns = st.columns(4)
    start = (report or {}).get("started_from")
    columns[0].metric(
        "Test accuracy",
        f"{report['accuracy']:.1%}" if report else "not evaluated",
        (
            f"{report['accuracy'] - start['accuracy']:+.1%} over the model it"
            " was fine-tuned from"
            if start
            else None
        ),
        help=(
            f"{start['stage_dir']} scored {start['accuracy']:.1%} on the same"
            " test images (groups held out of training)"
            if start
            else None
        ),
    )
    columns[1].metric(
        "Input",
        f"{size}×{size} px",
        help=f"Lanczos resize, contrast ×{classifier.data_config.contrast:g}",
    )
    columns[2].metric("Checkpoint step", f"{classifier.step:,}")
    if summary_json is None:
      columns[3].metric("Trained", "unfinished")
    else:
      completed = summary_json["completed_at"]
      columns[3].metric(
          "Trained", _date(completed), help=f"completed at {completed}"
      )
    st.dataframe(
        _class_table(classifier.class_names, report),
        column_config={
            "test F1": st.column_config.ProgressColumn(
                min_value=0.0,
                max_value=1.0,
                format="%.2f",
                color=PREDICTED_COLOUR,
            ),
            "precision": st.column_config.NumberColumn(format="%.2f"),
            "recall": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    reconstruction = (
        f"reconstructions by stage {os.path.basename(autoencoder.stage_dir)}"
        f" (step {autoencoder.step:,})"
        if autoencoder is not None
        else "no reconstruction stage"
    )
    st.caption(reconstruction)


def _date(timestamp: str) -> str:
  """The day of summary.json's `completed_at` (the minute is in the help)."""
  return datetime.datetime.fromisoformat(timestamp).strftime("%Y-%m-%d")


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


def summary_section(
    results: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    source: str,
    unsure_below: float,
) -> None:
  """Every photo in one table, the doubtful first; its downloads."""
  st.subheader("All photos, least confident first")
  table = summary.table(results)
  if table["error"].isna().all():
    table = table.drop(columns="error")
  st.dataframe(
      table.assign(confidence=100 * table["confidence"]),
      hide_index=True,
      column_config={
          "confidence": st.column_config.ProgressColumn(
              min_value=0.0,
              max_value=100.0,
              format="%.1f%%",
              color=PREDICTED_COLOUR,
          ),
          "unsure": st.column_config.CheckboxColumn(
              help=f"Top probability below {unsure_below:.0%}"
          ),
      },
  )
  buttons = st.container(horizontal=True)
  buttons.download_button(
      "Download predictions (CSV)",
      summary.to_csv(results, class_names),
      file_name=summary.CSV_NAME,
      mime="text/csv",
      on_click="ignore",
      icon=":material/download:",
  )
  buttons.download_button(
      "Download predictions (JSON)",
      summary.to_json(results, source, unsure_below),
      file_name=summary.JSON_NAME,
      mime="application/json",
      on_click="ignore",
      icon=":material/download:",
  )


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
              alt.value(PREDICTED_COLOUR),
              alt.value(_OTHER_COLOUR),
          ),
          tooltip=["class", alt.Tooltip("probability:Q", format=".1%")],
      )
  )


def upload_card(
    upload: uploads.Upload, class_names: Sequence[str], unsure_below: float
) -> None:
  """One file's card: its error, or its prediction and pictures."""
  if upload.error is not None:
    st.error(f"**{upload.name}**: {upload.error}")
    return
  with st.container(border=True):
    best = int(np.argmax(upload.probabilities))
    explained = upload.heatmap is not None
    left, middle, right = st.columns([2, 2 if explained else 1, 1])
    with left:
      st.metric(
          upload.name,
          class_names[best],
          f"{upload.probabilities[best]:.0%} probability",
          delta_color="off",
          delta_arrow="off",
      )
      if upload.probabilities[best] < unsure_below:
        st.badge(
            UNSURE_BADGE,
            icon=":material/help:",
            color="orange",
            help=f"The top probability is below {unsure_below:.0%}.",
        )
      st.altair_chart(
          _probability_chart(upload.probabilities, class_names),
          height=40 + 30 * len(class_names),
      )
      if upload.note is not None:
        st.caption(upload.note)
    if explained:
      middle.image(
          visuals.explanation_image(upload.model_view, upload.heatmap),
          caption=(
              f"what the model saw, and where it saw {class_names[best]}"
              " (Grad-CAM: red is strongest)"
          ),
          width="stretch",
      )
    else:
      middle.image(
          upload.model_view, caption="what the model saw", width="stretch"
      )
    if upload.reconstruction is not None:
      right.image(
          upload.reconstruction,
          caption="the autoencoder's reconstruction",
          width="stretch",
      )


def video_card(video: videos.Video, unsure_below: float) -> None:
  """One video's card: its error, or its timeline, segments and download."""
  if video.error is not None:
    st.error(f"**{video.name}**: {video.error}")
    return
  found = videos.with_threshold(video.timeline, unsure_below)
  with st.container(border=True):
    st.markdown(f"**{video.name}**")
    if found.warning is not None:
      st.warning(found.warning)
    st.pyplot(videos.figure(found))
    st.dataframe(
        videos.segment_table(found),
        hide_index=True,
        column_config={
            "mean confidence": st.column_config.ProgressColumn(
                min_value=0.0,
                max_value=1.0,
                format="percent",
                color=PREDICTED_COLOUR,
            ),
        },
    )
    st.caption(
        f"{len(found)} frames, one every {found.every:g} s of"
        f" {found.duration_s:.1f} s; {videos.unsure_share(found):.0%} unsure"
        f" (below {unsure_below:.0%})"
    )
    st.download_button(
        "Download timeline (CSV)",
        videos.timeline_csv(found),
        file_name=f"{os.path.splitext(video.name)[0]}_timeline.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/download:",
    )
