"""The pipeline for a split: where training, evaluation and the benchmarks get
their batches.

  pipeline = pipeline_for(split, config.data, memory_cache=run_cache)
  pipeline.train_batches(...), pipeline.eval_batches(...)   see `batching`

An image folder's split (a `FolderSplit`) is served by index
(`indexed.IndexedPipeline`), optionally cached in memory; TFDS splits and any
split with `data.cache = "disk"` are streamed (`streaming.StreamPipeline`).
"""

from typing import Any

from roadflax.data import batching
from roadflax.data import caches
from roadflax.data import indexed
from roadflax.data import streaming
from roadflax.data.contract import AnySplit
from roadflax.data.contract import FolderSplit


def pipeline_for(
    split: AnySplit,
    data_config: Any,
    *,
    memory_cache: caches.MemoryCache | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> batching.Pipeline:
  """The pipeline serving `split` to this process.

  Args:
    split: the images to serve.
    data_config: `config.data`, checked now.
    memory_cache: with `data.cache = "memory"`, the run's decoded splits:
      give every pipeline of a run the same one, and each split is decoded
      once per run; default: each pipeline decodes its split for itself.
    process_index: this process (default: `jax.process_index()`).
    process_count: processes (default: `jax.process_count()`).

  Raises:
    UserError: a field of `data_config` has an unusable value.
  """
  processes = {"process_index": process_index, "process_count": process_count}
  if isinstance(split, FolderSplit) and data_config.cache != "disk":
    return indexed.IndexedPipeline(
        split, data_config, memory_cache=memory_cache, **processes
    )
  return streaming.StreamPipeline(split, data_config, **processes)
