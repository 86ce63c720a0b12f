"""The TFDS builder `rscd`: the RSCD release as a TensorFlow Datasets data set.

Importing this module registers it:

  import roadflax.datasets.rscd_builder
  builder = tfds.builder("rscd/3class", data_dir=DATA_DIR)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=MANUAL_DIR))

or from a shell:

  tfds build rscd --config=3class --imports=roadflax.datasets.rscd_builder \
      --manual_dir=MANUAL_DIR --data_dir=DATA_DIR

MANUAL_DIR holds the downloaded release, extracted or as its zip. Configs:
`3class` (the published project's subset) and `27class` keep RSCD's official
split; `3class_by_day` and `27class_by_day` pool it and re-split whole capture
days (`rscd.split_by_day`), since the official split puts frames of one drive
day in both train and test. JPEG bytes are stored as they are in the release;
files that are empty, truncated or not JPEG are skipped and counted.
"""

from absl import logging
import tensorflow_datasets as tfds

from roadflax.datasets import rscd
from roadflax.data.image_folder import JPEG_MAGIC, check_image_bytes

# Where by-day configs put the pooled frames: about the official split's
# proportions, filled smallest first (see `rscd.split_by_day`).
_BY_DAY_FRACTIONS = {"validation": 0.02, "test": 0.05, "train": 0.93}

_DESCRIPTION = """\
RSCD, the Road Surface Classification Dataset: about a million 240x360 JPEG
frames from a forward-looking vehicle camera, labelled with friction (dry, wet,
water, fresh snow, melted snow, ice), material (asphalt, concrete, mud, gravel)
and unevenness (smooth, slight, severe) in 27 classes.
"""

_CITATION = """\
@misc{rscd,
  title = {{RSCD}: Road Surface Classification Dataset},
  author = {Zhao, Tong and He, Jian and Lv, Jianwei and Min, Di and Wei, Yintao},
  year = {2022},
  doi = {10.6084/m9.figshare.20424582},
}
"""


class RscdConfig(tfds.core.BuilderConfig):
  """Which classes, and whether to split by capture day."""

  def __init__(self, *, classes: tuple[str, ...], by_day: bool, **kwargs):
    super().__init__(**kwargs)
    self.classes = classes
    self.by_day = by_day


class Rscd(tfds.core.GeneratorBasedBuilder):
  """RSCD road-surface frames, read from the manually downloaded release."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download the RSCD release (one zip, about 13.9 GB) from
  https://doi.org/10.6084/m9.figshare.20424582 and put the zip, or the folders
  train/, vali_20k/ and test_50k/ extracted from it, in the manual_dir.
  """
  BUILDER_CONFIGS = [
      RscdConfig(
          name="3class",
          classes=rscd.CLASSES_3,
          by_day=False,
          description=(
              "dry_asphalt_smooth, dry_concrete_smooth, dry_gravel; "
              "official split"
          ),
      ),
      RscdConfig(
          name="27class",
          classes=rscd.CLASSES_27,
          by_day=False,
          description="all 27 classes; official split",
      ),
      RscdConfig(
          name="3class_by_day",
          classes=rscd.CLASSES_3,
          by_day=True,
          description="3class, whole capture days per split",
      ),
      RscdConfig(
          name="27class_by_day",
          classes=rscd.CLASSES_27,
          by_day=True,
          description="27class, whole capture days per split",
      ),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=(None, None, 3), encoding_format="jpeg"
            ),
            "label": tfds.features.ClassLabel(
                names=self.builder_config.classes
            ),
            "friction": tfds.features.Text(),
            "material": tfds.features.Text(),
            "unevenness": tfds.features.Text(),
            "capture_day": tfds.features.Text(),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://doi.org/10.6084/m9.figshare.20424582",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    frames, unnamed = rscd.release_files(str(dl_manager.manual_dir))
    if unnamed:
      logging.warning(
          "rscd: %d JPEG files are not named like release frames and are left "
          "out, e.g. %s",
          len(unnamed),
          unnamed[0],
      )
    classes = set(self.builder_config.classes)
    frames = [f for f in frames if f.label in classes]
    by_split = {
        split: [f for f in frames if f.split == split]
        for split in rscd.SPLIT_FOLDERS
    }
    if self.builder_config.by_day:
      by_split = rscd.split_by_day(frames, _BY_DAY_FRACTIONS)
    else:
      self._check_sizes(
          {split: len(found) for split, found in by_split.items()}
      )
    return {
        split: self._generate_examples(found, split)
        for split, found in by_split.items()
        if found
    }

  def _check_sizes(self, sizes: dict[str, int]) -> None:
    """Warns where the release's split sizes differ from the published ones."""
    name = self.builder_config.name
    for split, published in rscd.PUBLISHED_SIZES[name].items():
      if sizes.get(split, 0) != published:
        logging.warning(
            "rscd/%s: %s has %d frames, the published release %d",
            name,
            split,
            sizes.get(split, 0),
            published,
        )

  def _generate_examples(self, frames: list[rscd.Frame], split: str):
    skipped = 0
    for frame, data in rscd.iter_frames(frames):
      reason = check_image_bytes(data) or (
          None if data.startswith(JPEG_MAGIC) else "not a JPEG"
      )
      if reason is not None:
        skipped += 1
        logging.warning("rscd: skipping %s (%s)", frame.path, reason)
        continue
      yield f"{frame.archive}:{frame.path}", {
          "image": data,
          "label": frame.label,
          "friction": frame.friction,
          "material": frame.material,
          "unevenness": frame.unevenness,
          "capture_day": frame.capture_day,
          "file_name": frame.file_name,
      }
    log = logging.warning if skipped else logging.info
    log(
        "rscd/%s %s: %d frames, %d skipped (empty, truncated or not JPEG)",
        self.builder_config.name,
        split,
        len(frames) - skipped,
        skipped,
    )
