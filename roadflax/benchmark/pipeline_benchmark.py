"""Pipeline speed: what one epoch of training batches costs a pipeline, in
wall time and in CPU time, and the suite's table.

Part of `python -m roadflax.benchmark` (`--suite=pipeline`; `suites` starts
each phase in a process of its own and builds its pipeline). A phase's CPU
time is its process's user + system time over the epoch, every thread
included (tf.data's pools do the work), so

  images_per_cpu_second         images/s per core: what each core given to
                                the pipeline feeds, on this kind of core,
                                whatever the machine's core count;
  cpu_seconds_per_1000_images   also the cores it takes to feed a model
                                1,000 images/s;
  cores_busy                    CPU-seconds per wall second: how many of the
                                machine's cores the phase kept busy.
"""

import resource
import time
from typing import Any, Callable, Iterable


def cpu_seconds() -> float:
  """User + system CPU time of this process so far, all its threads."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def measure_epoch(
    batches: Callable[[], Iterable[dict[str, Any]]],
) -> dict[str, float]:
  """Wall and CPU cost of making `batches()` and reading it to the end.

  The CPU time is the process's (`cpu_seconds`: tf.data's thread pools
  included) over the same interval as the wall time, so
  `images_per_cpu_second` is images/s per fully used core, and
  `cpu_seconds_per_1000_images` is also the cores it takes to feed 1,000
  images/s.
  """
  wall, cpu, images = time.perf_counter(), cpu_seconds(), 0
  for batch in batches():
    images += len(batch["label"])
  wall = time.perf_counter() - wall
  cpu = cpu_seconds() - cpu
  return {
      "images": images,
      "seconds": wall,
      "cpu_seconds": cpu,
      "images_per_second": images / wall,
      "cpu_seconds_per_1000_images": 1000 * cpu / images,
      "images_per_cpu_second": images / cpu,
      "cores_busy": cpu / wall,
  }


def table(figures: dict[str, Any], image_size: int, batch_size: int) -> str:
  """The pipeline suite's table: wall and CPU figures of every phase, each
  with its ratio to the folder pipeline's."""
  folder = figures["phases"]["folder"]
  lines = [
      (
          "| pipeline | images | images/s | vs folder | CPU-s per 1k images |"
          " images/s per core | per core vs folder | cores busy |"
          " peak memory (MiB) | setup (s) |"
      ),
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for phase, f in figures["phases"].items():
    speed, per_core = f["images_per_second"], f["images_per_cpu_second"]
    lines.append(
        f"| {phase} | {f['images']:,} | {speed:.0f} |"
        f" {speed / folder['images_per_second']:.2f}x |"
        f" {f['cpu_seconds_per_1000_images']:.2f} | {per_core:.0f} |"
        f" {per_core / folder['images_per_cpu_second']:.2f}x |"
        f" {f['cores_busy']:.2f} | {f['peak_memory_mib']:,.0f} |"
        f" {f['setup_seconds']:.1f} |"
    )
  per_100k = figures["prepare_seconds"] / figures["frames"] * 100_000
  lines.append("")
  lines.append(
      f"{figures['frames']:,} frames at {image_size}x{image_size}, batch"
      f" {batch_size}; rscd/3class prepared in"
      f" {figures['prepare_seconds']:.0f} s ({per_100k / 60:.1f} min per 100k"
      " frames). Per core: images per CPU-second of the phase's process (user"
      " + system, all threads); CPU-s per 1k images is also the cores it"
      " takes to feed 1,000 images/s."
  )
  return "\n".join(lines) + "\n"
