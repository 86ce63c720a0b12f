"""The model card of an export (`model_card.md`), written from its metadata
alone, and the description of the data a model was trained on.

A card says what a user of the file needs and cannot see in it: the classes,
how to make the input from a photo exactly as training did, what the output
means, the data and the test results, the measured parity with JAX, the
intended use and limits, and the data's licence.
"""

from typing import Any

from roadflax.export import parity

RSCD_LICENCE = (
    "RSCD (Zhao et al., https://doi.org/10.6084/m9.figshare.20424582) is"
    " licensed CC BY-NC 4.0: this model was trained on it, so use it for"
    " non-commercial purposes only, and credit the data set."
)


def is_rscd(data: Any) -> bool:
  """Whether `data` (a run's `config.data`) reads RSCD: the `rscd` source,
  or a TFDS name holding "rscd" (such as `rscd/3class`)."""
  return data["source"] == "rscd" or (
      data["source"] == "tfds" and "rscd" in str(data["tfds_name"]).lower()
  )


def describe_data(data: Any) -> str:
  """What a run's `config.data` reads, in words."""
  source = data["source"]
  if source == "rscd":
    return f"RSCD, variant {data['variant']} (TFDS rscd/{data['variant']})"
  if source == "tfds":
    return (
        f"the TFDS data set {data['tfds_name']} (splits train, val, test:"
        f" {', '.join(data['tfds_splits'])})"
    )
  if source == "synthetic":
    synthetic = data["synthetic"]
    return (
        "roadflax's synthetic road textures (roadtex, seed"
        f" {synthetic['seed']}: {synthetic['train_per_class']} training images"
        " per class)"
    )
  return f"the image folder {data['root']} (train/, val/, test/)"


def model_card(metadata: dict[str, Any]) -> str:
  """The Markdown model card of an export's `roadflax_export.json`."""
  p = metadata["preprocessing"]
  size = p["image_size"]
  source = metadata["source"]
  lines = [
      f"# Road-surface classifier ({metadata['format']} export)",
      "",
      (
          f"Written by roadflax {metadata['roadflax_version']} from stage"
          f" `{source['stage']}` of `{source['workdir']}` (checkpoint step"
          f" {source['step']}). Model file: `{metadata['file']}`."
      ),
      "",
      "## Classes",
      "",
      *_class_table(metadata),
      "",
      "## Input",
      "",
      (
          f"`{metadata['input']['name']}`: {_tensor(metadata['input'])}, RGB"
          " pixels 0..255. Make them from a photo exactly as training did:"
      ),
      "",
      "1. Decode the JPEG or PNG to RGB (grayscale and RGBA become RGB).",
      "2. Turn it upright as its EXIF orientation says.",
      (
          f"3. Resize the whole image to {size}x{size} with Lanczos"
          " (antialiased), ignoring its aspect ratio; clip to 0..255 and"
          " round."
      ),
      (
          f"4. Apply PIL's `ImageEnhance.Contrast({p['contrast']:g})`: blend"
          " each pixel with the image's mean grey level (ITU-R 601-2 luma,"
          f" rounded), `grey + {p['contrast']:g} * (x - grey)`, clipped to"
          " 0..255 and truncated to uint8."
      ),
      "",
      (
          "Normalisation, `(x / 255 - mean) / std` with mean"
          f" {_numbers(p['mean'])} and std {_numbers(p['std'])}, is inside the"
          " model: give it the uint8 pixels. In Python,"
          ' `roadflax.load(EXPORT_DIR).predict(["photo.jpg"])` does all of'
          " this."
      ),
      "",
      "## Output",
      "",
      (
          f"`{metadata['output']['name']}`: {_tensor(metadata['output'])},"
          f" {metadata['output']['meaning']}."
      ),
      "",
      "## Training data and test results",
      "",
      f"Trained on {metadata['training_data']['description']}.",
      *_test_results(metadata.get("test_report")),
      "",
      "## Parity with JAX",
      "",
      f"Measured when written, {parity.summary(metadata['parity'])}.",
      "",
      "## Intended use and limits",
      "",
      (
          "- For classifying photos of road surfaces like the training images"
          " (camera, viewpoint, region, weather) into the classes above, in"
          " research, prototypes and driver-assistance studies."
      ),
      (
          "- Every image gets one of these classes: the model has no"
          f" 'unknown'. {_confidence(metadata['temperature_scaling'])}"
      ),
      (
          "- Accuracy is measured on the test split of the training data only;"
          " expect less on other cameras, angles, light or weather, and measure"
          " it on your own images (`--mode=evaluate --workdir=EXPORT_DIR`)."
      ),
      (
          "- Not validated for safety-critical decisions such as controlling a"
          " vehicle."
      ),
  ]
  if metadata["training_data"]["licence"]:
    lines += ["", "## Licence", "", metadata["training_data"]["licence"]]
  return "\n".join(lines) + "\n"


def _confidence(scaling: dict[str, Any] | None) -> str:
  """What the probabilities mean, by the export's temperature scaling."""
  if scaling is None:
    return (
        "Its probabilities are scores, not calibrated confidences (its stage"
        " was never calibrated: `--mode=evaluate` on the workdir calibrates"
        " it; export again after)."
    )
  if not scaling["fitted"] and "guard_reason" in scaling:
    return (
        "Its probabilities are as the network gives them (temperature 1):"
        f" {scaling['guard_reason']}."
    )
  if not scaling["fitted"]:
    return (
        "Its probabilities are as the network gives them: all"
        f" {scaling['images']} validation images were classified right,"
        " which leaves no temperature to fit."
    )
  return (
      "Its probabilities are calibrated by temperature scaling (logits"
      f" divided by {scaling['temperature']:.4g}, fitted on"
      f" {scaling['images']} validation images: expected calibration error"
      f" {scaling['ece_before']:.4f} before, {scaling['ece_after']:.4f}"
      " after), so that a class given 80% is right about 80% of the time on"
      " images like the training data; on other images it may be right"
      " less often than it is sure."
  )


def _tensor(spec: dict[str, Any]) -> str:
  shape = ", ".join("N" if dim is None else str(dim) for dim in spec["shape"])
  return f"{spec['dtype']} [{shape}]"


def _numbers(values: list[float]) -> str:
  return "(" + ", ".join(f"{value:g}" for value in values) + ")"


def _class_table(metadata: dict[str, Any]) -> list[str]:
  """One row per class: its index (the output column) and its test F1."""
  report = metadata.get("test_report")
  rows = ["| index | class | test F1 |", "|---:|---|---:|"]
  for index, name in enumerate(metadata["class_names"]):
    f1 = f"{report['per_class_f1'][name]:.4f}" if report else "-"
    rows.append(f"| {index} | {name} | {f1} |")
  return rows


def _test_results(report: dict[str, Any] | None) -> list[str]:
  if report is None:
    return [
        "",
        (
            "The stage has no test report (report.json); write one with"
            " `--mode=evaluate --workdir=WORKDIR`."
        ),
    ]
  return [
      "",
      (
          f"The JAX model's test accuracy: {report['accuracy']:.4f} on"
          f" {report['num_examples']} images (the stage's report.json;"
          " per-class F1 in the table above)."
      ),
  ]
