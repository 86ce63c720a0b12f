"""All image uploads at once: a table with the doubtful ones on top, and the
predictions as CSV and JSON files to download. Plain Python, no Streamlit.

A prediction is `unsure` when its top probability is below the threshold the
page's visitor chose (`roadflax.serve.model.UNSURE_BELOW` at first); it is
worked out here, from the kept probabilities, so moving the threshold
recomputes no prediction.
"""

import io
import json
from typing import Any, Sequence

import numpy as np
import pandas as pd

from roadflax.serve.uploads import Upload

CSV_NAME = "predictions.csv"
JSON_NAME = "predictions.json"


def records(
    uploads: Sequence[Upload],
    class_names: Sequence[str],
    unsure_below: float,
) -> list[dict[str, Any]]:
  """One JSON-ready dict per upload, in order: its file, class,
  probabilities and unsure flag, or its file and the error that cost it its
  prediction."""
  results = []
  for upload in uploads:
    if upload.error is not None:
      results.append({"file": upload.name, "error": upload.error})
      continue
    best = int(np.argmax(upload.probabilities))
    results.append({
        "file": upload.name,
        "class": class_names[best],
        "probabilities": {
            name: float(p) for name, p in zip(class_names, upload.probabilities)
        },
        "unsure": bool(upload.probabilities[best] < unsure_below),
    })
  return results


def table(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
  """One row per file (`records`), the unreadable first, then by rising
  confidence: the uploads a person should look at come first."""
  rows = pd.DataFrame(
      {
          "file": [r["file"] for r in results],
          "class": [r.get("class") for r in results],
          "confidence": [
              max(r["probabilities"].values()) if "class" in r else np.nan
              for r in results
          ],
          "unsure": [r.get("unsure", False) for r in results],
          "error": [r.get("error") for r in results],
      },
  )
  return rows.sort_values(
      "confidence", na_position="first", kind="stable"
  ).reset_index(drop=True)


def to_csv(
    results: Sequence[dict[str, Any]], class_names: Sequence[str]
) -> str:
  """`records` as CSV, in upload order: file, class, unsure, a
  `probability_CLASS` column per class, and error (empty for predictions)."""
  rows = pd.DataFrame(
      [
          {
              "file": r["file"],
              "class": r.get("class"),
              "unsure": r.get("unsure"),
              **{
                  f"probability_{name}": r.get("probabilities", {}).get(name)
                  for name in class_names
              },
              "error": r.get("error"),
          }
          for r in results
      ],
      columns=[
          "file",
          "class",
          "unsure",
          *(f"probability_{name}" for name in class_names),
          "error",
      ],
  )
  buffer = io.StringIO()
  rows.to_csv(buffer, index=False)
  return buffer.getvalue()


def to_json(
    results: Sequence[dict[str, Any]], source: str, unsure_below: float
) -> str:
  """`records` as `--mode=predict --output` writes them: the model, and the
  predictions apart from the files skipped as unreadable."""
  return json.dumps(
      {
          "model": source,
          "unsure_below": unsure_below,
          "predictions": [r for r in results if "error" not in r],
          "skipped": [r for r in results if "error" in r],
      },
      indent=2,
  )
