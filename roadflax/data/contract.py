"""What a data source gives the pipelines: the split names, and the split and
data-set protocols every source keeps.

A data set (`DataSet`) names its classes and holds one split per name in
`SPLIT_NAMES`. Splits come in two kinds, told apart at run time with
`isinstance` (the protocols are runtime-checkable):

  FolderSplit  image files with labels, indexable (`image_folder.Split`): a
               pipeline can gather any example by its index.
  RecordSplit  a stream of encoded records (`tfds_source.TfdsSplit`), read in
               per-process parts, never indexed.

Both are an `AnySplit`: a length, class counts, a fingerprint and the files
skipped as unreadable. This module imports nothing heavy: the image
generator's worker processes read `SPLIT_NAMES` from it.
"""

from typing import TYPE_CHECKING, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
  import tensorflow as tf

# roadflax's splits, in order: the folders of an image-folder tree, and what
# the specs of `data.tfds_splits` become.
SPLIT_NAMES = ("train", "val", "test")


@runtime_checkable
class AnySplit(Protocol):
  """What every split offers, however its images are stored."""

  def __len__(self) -> int:
    ...

  def class_counts(self, num_classes: int) -> np.ndarray:
    """Examples per class, int64 [num_classes] (longer if a label is larger)."""
    ...

  @property
  def fingerprint(self) -> str:
    """Names the split's content (files and labels, or the prepared set), as
    the key of caches built from it."""
    ...

  @property
  def skipped(self) -> tuple[str, ...]:
    """Files left out as unreadable, for reports."""
    ...


@runtime_checkable
class FolderSplit(AnySplit, Protocol):
  """Image files with labels, example i being `paths[i]` of class `labels[i]`.

  The in-memory cache keys on the split object: keep one per split for a run.
  """

  @property
  def paths(self) -> Sequence[str]:
    ...

  @property
  def labels(self) -> np.ndarray:
    """int32 [len(paths)]."""
    ...


@runtime_checkable
class RecordSplit(AnySplit, Protocol):
  """A split read as a stream of encoded images."""

  def records(
      self, *, process_index: int, process_count: int, shuffle_seed: int | None
  ) -> "tf.data.Dataset":
    """This process's part of the split: {"encoded": string, "label": int32}.

    Every process gets a part of about the same size, together the whole split
    once. With `shuffle_seed`, the part's files are read in an order drawn
    from it; without, in the split's own order.
    """
    ...


class DataSet(Protocol):
  """A loaded data set: what `datasets.sources.load_dataset` returns."""

  @property
  def root(self) -> str:
    """What the data set is, for messages and reports."""
    ...

  @property
  def class_names(self) -> tuple[str, ...]:
    ...

  @property
  def splits(self) -> Mapping[str, AnySplit]:
    """One split per name in `SPLIT_NAMES` (or fewer, when so scanned)."""
    ...
