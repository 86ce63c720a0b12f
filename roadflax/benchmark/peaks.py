"""Peak FLOP/s of the device JAX runs on: measured with one large matrix
product, and, for known accelerators, the vendor's dense peak.

The vendor figures are those of the precision JAX's default computes each
dtype in (https://docs.jax.dev/en/latest/201/precision.html): float32
products run as TF32 on NVIDIA tensor cores and as one bfloat16 pass on TPUs;
bfloat16 and float16 at the chips' 16-bit peak. Dense, without structured
sparsity, per chip, in TFLOP/s, from the datasheets:

  NVIDIA H100 and H200 (nvidia.com/en-us/data-center/h100/ and .../h200/;
    the sheets give the sparse figures, twice these): SXM TF32 494.7, 16-bit
    989.4; PCIe TF32 378, 16-bit 756; NVL TF32 417.5, 16-bit 835.5.
  NVIDIA A100 (nvidia.com/en-us/data-center/a100/): TF32 156, 16-bit 312.
  NVIDIA L4 (nvidia.com/en-us/data-center/l4/): TF32 60, 16-bit 121.
  Google TPUs (cloud.google.com/tpu/docs/v4, .../v5e, .../v5p, .../v6e):
    bfloat16 v4 275, v5e 197, v5p 459, v6e (Trillium) 918.
"""

import math
import time

import jax
import jax.numpy as jnp

# (float32, 16-bit) dense TFLOP/s as above.
_NVIDIA = {
    ("h100", "pcie"): (378.0, 756.0),
    ("h100", "nvl"): (417.5, 835.5),
    ("h100", None): (494.7, 989.4),  # SXM
    ("h200", "nvl"): (417.5, 835.5),
    ("h200", None): (494.7, 989.4),  # SXM
    ("a100", None): (156.0, 312.0),
    ("l4", None): (60.0, 121.0),
}
# JAX's device_kind of each TPU: its bfloat16 TFLOP/s, also its float32's.
_TPU = {
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,  # v5e
    "TPU v5": 459.0,  # v5p
    "TPU v5p": 459.0,
    "TPU v6 lite": 918.0,  # v6e
}
# Seconds each timing of the matrix product should last at least.
_TIMED_SECONDS = 0.2


def vendor_peak(device_kind: str, dtype: str) -> float | None:
  """The vendor's dense FLOP/s for `dtype` on a device of JAX's
  `device_kind` ("NVIDIA H100 80GB HBM3", "TPU v5 lite", ...), or None for
  a device not in the table."""
  if device_kind in _TPU:
    return _TPU[device_kind] * 1e12
  words = device_kind.lower().replace("-", " ").split()
  if words[:1] != ["nvidia"]:
    return None
  for (model, variant), peaks in _NVIDIA.items():
    if model in words and (variant is None or variant in words):
      return peaks[dtype != "float32"] * 1e12
  return None


def measured_peak(dtype: str) -> float:
  """FLOP/s of n x n matrix products in `dtype` on JAX's default device (n =
  2048 on CPUs, 8192 on accelerators): the best of three timings of a chain
  of products that lasts _TIMED_SECONDS."""
  n = 2048 if jax.default_backend() == "cpu" else 8192
  x, y = jax.random.normal(jax.random.key(0), (2, n, n), jnp.float32)
  # y scaled so that the chain x @ y @ y ... keeps its values' size.
  x, y = x.astype(dtype), (y / math.sqrt(n)).astype(dtype)
  chain = jax.jit(
      lambda x, y, count: jax.lax.fori_loop(0, count, lambda _, z: z @ y, x)
  )

  def seconds(count: int) -> float:
    start = time.perf_counter()
    jax.block_until_ready(chain(x, y, count))
    return time.perf_counter() - start

  seconds(1)  # compiles
  count = math.ceil(_TIMED_SECONDS / seconds(1))
  best = min(seconds(count) for _ in range(3)) / count
  return 2 * n**3 / best
