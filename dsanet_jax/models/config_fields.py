"""Which model config fields fix what the stored arrays mean (architecture) and which are run-time
choices; how a stored (JSON) model section compares with a config.

Every checkpoint kind (training checkpoints, converted model directories) records the `model`
section of the config it was made with; these functions are the one definition of "the same model".
"""

from collections.abc import Mapping
from typing import Any

import ml_collections

from dsanet_jax.models.resnet import compress_stage_flags

# Model config fields that change what the stored arrays mean; the others (dtype, remat,
# conv_impl, dropout_rate, bn_group_size, bn_momentum, ...) are run-time choices.
ARCH_FIELDS = (
  "backbone",
  "depth",
  "base_width",
  "num_classes",
  "num_segments",
  "aggregation",
  "inflate_freq",
  "inflate_style",
  "bn_epsilon",
)
AGG_FIELDS = {
  "dsa": ("insert_freq", "insert_place", "dsa.alpha", "dsa.beta", "dsa.kernel_size",
          "dsa.with_identity"),
  "se": ("insert_freq", "insert_place", "se.reduction"),
  "v4d": ("insert_freq",),
  "tsn": (),
}  # fmt: skip


def plain(x: Any) -> Any:
  """ConfigDict / tuples -> JSON-able dicts and lists."""
  if isinstance(x, ml_collections.ConfigDict):
    x = x.to_dict()
  if isinstance(x, Mapping):
    return {str(k): plain(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return [plain(v) for v in x]
  return x


def _tuples(x: Any) -> Any:
  """JSON lists -> tuples, recursively (config values are tuples)."""
  if isinstance(x, Mapping):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list | tuple):
    return tuple(_tuples(v) for v in x)
  return x


def _get(cfg: Mapping, dotted: str) -> Any:
  for part in dotted.split("."):
    if not isinstance(cfg, Mapping) or part not in cfg:
      return "<absent>"
    cfg = cfg[part]
  return cfg


def architecture_differences(stored: Mapping, model_cfg: Mapping) -> list[str]:
  """`model.x: checkpoint ..., config ...` for every architecture field that differs."""
  stored, given = _tuples(plain(stored)), _tuples(plain(model_cfg))
  fields = list(ARCH_FIELDS) + list(AGG_FIELDS.get(str(_get(stored, "aggregation")), ()))
  out = []
  for f in fields:
    a, b = _get(stored, f), _get(given, f)
    if f in ("insert_freq", "inflate_freq"):  # 1 / 0 vs explicit flags: compare expanded
      a, b = compress_stage_flags(a), compress_stage_flags(b)
    if a != b:
      out.append(f"model.{f}: checkpoint has {_get(stored, f)!r}, config {_get(given, f)!r}")
  return out


def runtime_differences(stored: Mapping, model_cfg: Mapping) -> list[str]:
  """`model.x: checkpoint ..., config ...` for the other (run-time) fields that differ."""
  stored, given = _tuples(plain(stored)), _tuples(plain(model_cfg))
  arch = set(ARCH_FIELDS) | {f.split(".")[0] for fs in AGG_FIELDS.values() for f in fs}
  out = []
  for f in sorted(set(stored) | set(given)):
    if f in arch or (f == "tsm" and stored.get("backbone") != "tsm_resnet"):
      continue
    a, b = _get(stored, f), _get(given, f)
    if a != b:
      out.append(f"model.{f}: checkpoint has {a!r}, config {b!r}")
  return out


def model_config(stored: Mapping) -> ml_collections.ConfigDict:
  """A stored model section (JSON) as a ConfigDict with tuples, as the configs write them."""
  return ml_collections.ConfigDict(_tuples(plain(stored)))
