"""The app's labelling page: a folder's frames queued by the model's doubt,
one at a time with the model's guess and its Grad-CAM, labelled with one
key per class. Streamlit only; what happens to the files is
`roadflax.labelling` (`queue`, `store`, `session`).

Keys: 1, 2, 3, ... the classes in the order shown; s skip; u unknown. Each
label is written at once (`store.LabelStore.add`); the next frame is the
first of the queue the labels file does not hold, so a refresh, a restart
or a second person labelling the same folder carries on from the files.
"""

import os
from typing import Sequence
import uuid

import streamlit as st

from roadflax.errors import UserError
from roadflax.labelling import audit_files, queue, session, store
from roadflax.results import visuals
from roadflax.serve import model

TITLE = "Label frames"
EVERY_S = 1.0  # seconds between the frames queued from a video
NO_FOLDERS = (
    "Labelling needs folders to label from and a folder to write to: start"
    " the app with `python main.py --mode=serve --workdir=RUN"
    " --input=VIDEOS_OR_IMAGES --output=LABELLED`."
)
_NOTICE = "label_notice"  # session key: what the last key press did
_SESSION = "label_session"  # session key: this browser session's id


@st.cache_resource
def _claims(output: str) -> session.Claims:
  """One per labelled folder and server: what each session is shown."""
  del output  # the cache's key
  return session.Claims()


def label_page(
    predictor: model.Model,
    workdir: str,
    inputs: Sequence[str],
    output: str | None,
) -> None:
  """The page, for the model `predictor` (of the run `workdir`, picked)."""
  st.header(TITLE)
  _audit_section(workdir)
  folders = session.Folders.under(inputs)
  if not folders.choices or not output:
    st.info(NO_FOLDERS)
    return
  labels = store.LabelStore(output, predictor.class_names)
  _queue_form(predictor, folders, output)
  notice = st.session_state.pop(_NOTICE, None)
  if notice is not None:
    kind, text = notice
    (st.error if kind == "error" else st.toast)(text)
  progress = session.progress(labels)
  given = sum(progress.counts.values())
  counts = ", ".join(f"{k} {v}" for k, v in progress.counts.items())
  st.caption(
      f"{given} frames labelled in {output} ({counts or 'none yet'});"
      f" {len(progress.left)} of {progress.queued} queued frames left"
  )
  session_id = st.session_state.setdefault(_SESSION, uuid.uuid4().hex)
  frame = _claims(os.path.realpath(output)).next_frame(
      session_id, progress.left
  )
  if frame is None:
    st.info("No frame left to label: queue a folder's frames above.")
    return
  _frame_card(predictor, labels, frame)


def _audit_section(workdir: str) -> None:
  """The run's label audit (`--mode=audit`), when it has one, for review."""
  rows = audit_files.read_audit(workdir)
  if not rows:
    return
  issues = [r for r in rows if r["issue"] == "True"]
  with st.expander(
      f"Label audit of this run's data: {len(issues)} of {len(rows)} labels"
      " look wrong"
  ):
    st.caption(
        "Ranked by confident learning (python main.py --mode=audit): the"
        " labels an out-of-fold model contradicts, least likely first."
    )
    st.dataframe(
        [
            {k: r[k] for k in ("rank", "file", "label", "suggested",
                                "label_probability", "outlier_score")}
            for r in issues
        ],
        hide_index=True,
    )  # fmt: skip


def _queue_form(
    predictor: model.Model, folders: session.Folders, output: str
) -> None:
  """Choosing a folder, and queueing its frames (this replaces the queue)."""
  left, right = st.columns([4, 1], vertical_alignment="bottom")
  chosen = left.selectbox(
      "Folder of drive videos or images",
      list(folders.choices),
      help="The --input folders of the serve command, and their subfolders.",
  )
  if right.button("Queue frames", width="stretch"):
    try:
      with st.spinner(
          f"Sampling a frame every {EVERY_S:g} s and pre-labelling..."
      ):
        built = queue.build_queue(
            predictor, [folders.resolve(chosen)], output, every=EVERY_S
        )
    except UserError as error:
      st.error(str(error))
      return
    for warning in built.warnings:
      st.warning(warning)
    st.success(built.summary(output))


def _frame_card(
    predictor: model.Model, labels: store.LabelStore, row: dict[str, str]
) -> None:
  """The frame to label, what the model thinks, and a button per label."""
  path = os.path.join(labels.root, row["frame"])
  where = os.path.basename(row["source"])
  if row["time_s"]:
    where += f" at {float(row['time_s']):.1f} s"
  with st.container(border=True):
    st.markdown(
        f"**{where}** · the model's guess: **{row['guess']}**"
        f" ({float(row['confidence']):.0%}, margin {float(row['margin']):.2f})"
    )
    picture, explained = st.columns(2)
    picture.image(path, caption="the frame", width="stretch")
    try:
      seen = predictor.explain([path])
      explained.image(
          visuals.explanation_image(seen.pixels[0], seen.heatmaps[0]),
          caption=(
              f"where the model saw {row['guess']} (Grad-CAM: red is strongest)"
          ),
          width="stretch",
      )
    except UserError as error:
      explained.warning(f"No Grad-CAM: {error}")
    names = [*labels.class_names, store.SKIP, store.UNKNOWN]
    keys = [str(k + 1) for k in range(len(labels.class_names))] + ["s", "u"]
    for column, name, key in zip(st.columns(len(names)), names, keys):
      column.button(  # Streamlit shows the key beside the name
          name,
          key=f"label:{name}",
          shortcut=key if len(key) == 1 else None,  # classes 10 and on: none
          type="primary" if name == row["guess"] else "secondary",
          on_click=_label,
          args=(labels, row, name),
          width="stretch",
      )


def _label(labels: store.LabelStore, row: dict[str, str], name: str) -> None:
  """A button's (or key's) callback: writes the label before the rerun."""
  try:
    written, added = labels.add(
        row, name, os.path.join(labels.root, row["frame"])
    )
  except UserError as error:
    st.session_state[_NOTICE] = ("error", str(error))
    return
  where = os.path.basename(row["source"])
  st.session_state[_NOTICE] = (
      "toast",
      f"{where}: {name}"
      if added
      else f"{where} was labelled {written['label']} already",
  )
