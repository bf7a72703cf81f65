"""Small config validation helpers: fail loudly, naming the key and what is wrong."""

from collections.abc import Iterable
from typing import Any


def check_choice(value: Any, choices: Iterable[Any], *, key: str) -> Any:
  """Returns `value` if it is one of `choices`, else raises a ValueError naming `key`."""
  choices = tuple(choices)
  if value not in choices:
    raise ValueError(f"{key}={value!r} is not supported; choose one of {list(choices)}")
  return value
