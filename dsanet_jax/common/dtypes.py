"""Compute-dtype parsing shared by the models, the trainer and the tools."""

import jax.numpy as jnp

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def parse_dtype(name: str, *, key: str = "model.dtype") -> jnp.dtype:
  """Returns the jnp dtype named `name` ('float32' | 'bfloat16' | 'float16').

  Raises:
    ValueError: naming `key` when the name is unknown.
  """
  if name not in _DTYPES:
    raise ValueError(f"{key}={name!r} is not a known dtype; choose one of {sorted(_DTYPES)}")
  return jnp.dtype(_DTYPES[name])
