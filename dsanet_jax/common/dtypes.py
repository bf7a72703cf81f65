"""Compute-dtype names, shared by the models, the trainer, the data pipeline and the tools."""

import ml_dtypes
import numpy as np

_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def parse_dtype(name: str, *, key: str = "model.dtype") -> np.dtype:
  """Returns the dtype named `name` ('float32' | 'bfloat16' | 'float16'), usable as a jnp dtype
  and by `tf.as_dtype`.

  Raises:
    ValueError: naming `key` when the name is unknown.
  """
  if name not in _DTYPES:
    raise ValueError(f"{key}={name!r} is not a known dtype; choose one of {sorted(_DTYPES)}")
  return np.dtype(_DTYPES[name])
