"""`tfds build` for roadflax's data sets, runnable with roadflax's pinned packages.

TFDS's own `tfds` command (4.9.10) imports apache-beam at start-up for its
format-conversion command, and no apache-beam release installs beside
pillow 13; building `rscd` needs no beam. This runs TFDS's `build` command
itself, with the same flags, with `rscd` registered:

  python -m roadflax.datasets.tfds_build rscd --config=3class \
      --manual_dir=/data/rscd --data_dir=~/tensorflow_datasets

Where apache-beam is installed, `tfds build rscd --imports=roadflax.datasets.rscd_builder
...` does the same.
"""

from absl import app
from tensorflow_datasets.scripts.cli import build, cli_utils

from roadflax.datasets import rscd_builder  # noqa: F401  (registers rscd)

_parse_flags = cli_utils.make_flags_parser(
    build.Args,
    description="Builds a TFDS data set (tfds build), rscd included.",
)


def main(args: build.Args) -> None:
  args.execute()


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
