"""Mixed precision: the dtype the network computes in (`model.dtype`).

Convolutions and dense layers run in it; parameters, optimiser state, losses
and softmax stay float32 (`roadnet` casts its outputs back), so a checkpoint
is float32 and loads into a model computing in any of them.
"""

import jax
import jax.numpy as jnp

from roadflax.errors import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def compute_dtype(name: str) -> jnp.dtype:
  """The dtype `name` stands for; "auto" is bfloat16 on GPUs and TPUs, whose
  matrix units run it several times faster than float32, and float32 on
  CPUs, where bfloat16 is emulated and slower.

  float16 is as fast on GPUs that lack bfloat16 (before Ampere) but has a
  narrow range; there is no loss scaling here, so small gradients of
  activations may flush to zero.
  """
  if name not in DTYPES:
    raise UserError(f"model.dtype must be one of {DTYPES}, got {name!r}")
  if name == "auto":
    name = "bfloat16" if jax.default_backend() in ("gpu", "tpu") else "float32"
  return jnp.dtype(name)
