"""Reading PyTorch checkpoints safely, as flat `{key: np.ndarray}` dicts.

The file is read whole through etils.epath (a local path or a `gs://` URL), then parsed in memory:
- `.pth`/`.pt`/`.tar`/...: `torch.load(..., map_location='cpu', weights_only=True)`. Arbitrary
  pickled objects are never executed: a checkpoint needing anything beyond tensors, containers and
  plain values is refused with `CheckpointError`.
- `.safetensors`: `safetensors.torch.load` (no pickle at all).

The state dict may be bare or wrapped as mmcv writes it (`{'state_dict', 'meta', 'optimizer'}`) or
as other trainers do (`{'model': ...}`); a leading `module.` (DataParallel) is stripped.
Tensors become float32 numpy arrays (bf16/fp16 upcast), integer tensors stay integer.

Sources (`detect_source`):
  'dsanet':      the original DSANet / mmaction layout: `backbone.*`, `cls_head.fc_cls.*`.
  'v4d':         research-v4d's TSN wrapper: `base_model.*`, `new_fc.*` (renamed to the 'dsanet'
                 layout by `to_dsanet_layout`).
  'torchvision': a 2D ImageNet ResNet: `conv1.weight` 4-D, `layerX.Y.convZ`, `fc.*`.
"""

import io
import os
import pickle
from collections.abc import Mapping

import numpy as np
import torch
from etils import epath

from dsanet_jax.common import paths

SOURCES = ("auto", "dsanet", "v4d", "torchvision")
WRAPPER_KEYS = ("state_dict", "model", "model_state", "module")


class CheckpointError(ValueError):
  """A checkpoint that cannot (or must not) be converted; the message says why."""


def _load_raw(path: epath.Path) -> object:
  """The file's tensors, read whole through epath (a local file or a `gs://` object)."""
  data = path.read_bytes()
  if path.suffix == ".safetensors":
    import safetensors.torch

    try:
      return safetensors.torch.load(data)
    except Exception as e:  # safetensors raises its own SafetensorError / OSError types
      raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from e
  try:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as e:
    first = str(e).strip().splitlines()
    detail = next((ln for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[-1])
    raise CheckpointError(
      f"{path}: refused to unpickle: the file holds objects other than tensors and plain "
      f"containers, which could run code when loaded ({detail.strip()}). Only "
      "`torch.load(weights_only=True)`-loadable checkpoints and .safetensors files are accepted; "
      "if you trust the file, re-save just its state_dict (or convert it to safetensors) yourself."
    ) from e
  except (RuntimeError, EOFError, OSError) as e:
    raise CheckpointError(f"{path}: cannot be read by torch.load: {e}") from e


def unwrap_state_dict(obj: object, where: str = "checkpoint") -> dict[str, torch.Tensor]:
  """Returns the tensor dict inside `obj` (bare, or under 'state_dict'/'model'/...)."""
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{where}: expected a dict of tensors, got {type(obj).__name__}")
  for key in WRAPPER_KEYS:  # a dict under one of these names is the state dict, whatever else
    inner = obj.get(key)  # the wrapper holds (mmcv: meta, optimizer; others: epoch, best_prec1)
    if isinstance(inner, Mapping) and inner:
      return unwrap_state_dict(inner, f"{where}['{key}']")
  tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
  if not tensors:
    raise CheckpointError(
      f"{where}: no tensors found; top-level keys are {sorted(map(str, obj))[:20]} "
      f"(expected a state dict, bare or under one of {WRAPPER_KEYS})"
    )
  others = sorted(str(k) for k in obj if not torch.is_tensor(obj[k]))
  if others:
    raise CheckpointError(f"{where}: entries that are not tensors: {others}")
  return tensors


def strip_module_prefix(sd: Mapping[str, object]) -> dict[str, object]:
  """Removes a leading `module.` (DataParallel / DDP) from every key, if all keys have it."""
  if sd and all(k.startswith("module.") for k in sd):
    return {k[len("module.") :]: v for k, v in sd.items()}
  return dict(sd)


def to_numpy(t: torch.Tensor) -> np.ndarray:
  """A tensor as a numpy copy (never sharing the tensor's memory): floats as float32."""
  t = t.detach().cpu()
  if t.is_floating_point():
    t = t.to(torch.float32)
  return t.numpy().copy()


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Loads `path` (.pth or .safetensors; local or a URL) safely -> flat `{key: np.ndarray}`."""
  path = paths.resolve(path)
  if not path.is_file():
    raise CheckpointError(f"{path}: no such file")
  tensors = unwrap_state_dict(_load_raw(path), str(path))
  return {k: to_numpy(v) for k, v in strip_module_prefix(tensors).items()}


def detect_source(sd: Mapping[str, np.ndarray]) -> str:
  """'dsanet' | 'v4d' | 'torchvision' from the key layout, or a CheckpointError."""
  keys = list(sd)
  if any(k.startswith("backbone.") for k in keys):
    return "dsanet"
  if any(k.startswith("base_model.") for k in keys):
    return "v4d"
  w = sd.get("conv1.weight")
  if w is not None and w.ndim == 4 and any(k.startswith("layer1.") for k in keys):
    return "torchvision"
  raise CheckpointError(
    "cannot tell the checkpoint's layout: expected keys `backbone.*` (DSANet/mmaction), "
    "`base_model.*` (research-v4d) or a torchvision 2D ResNet (`conv1.weight` 4-D, `layer1.*`); "
    f"first keys: {keys[:8]}"
  )


def to_dsanet_layout(sd: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
  """Renames a research-v4d state dict to the DSANet layout; 'dsanet' passes through."""
  if source == "dsanet":
    return dict(sd)
  if source != "v4d":
    raise CheckpointError(f"to_dsanet_layout: source {source!r} is not 'dsanet' or 'v4d'")
  out = {}
  for k, v in sd.items():
    if k.startswith("base_model."):
      out["backbone." + k[len("base_model.") :]] = v
    elif k.startswith("new_fc."):
      out["cls_head.fc_cls." + k[len("new_fc.") :]] = v
    else:
      out[k] = v  # reported as unexpected later
  return out
