"""The default recipe (the published method) on RSCD's three dry classes.

The first run builds the TFDS data set `rscd/3class` from the downloaded
release (its zip, or the extracted train/, vali_20k/, test_50k/):

  python main.py --config=configs/rscd3.py --workdir=runs/rscd3 \
      --config.data.manual_dir=/data/rscd

Variants: --config.data.variant=3class_by_day splits by capture day (no drive
day in two splits); --config.data.cache=disk keeps decoded 224x224 frames on
disk (about 150 KB each) for accelerators that JPEG decoding cannot keep busy.
"""

from roadflax.configs import default


def get_config():
  config = default.get_config()
  config.data.source = "rscd"
  config.data.variant = "3class"
  return config
