"""The table between original PyTorch keys and our NNX state, and what the keys tell of the net.

Our model's state (see `dsanet_jax/models/README.md`) mirrors the original names, so the table is a
handful of renames plus layout transforms:

  ours (nnx path)                               original key (DSANet layout)
  backbone.conv1.kernel          (kt,kh,kw,I,O)  backbone.conv1.weight              (O,I,kt,kh,kw)
  backbone.bn1.{scale,bias,mean,var}             backbone.bn1.{weight,bias,running_mean,running_var}
  backbone.layerL.b.convK.kernel / bnK.*         backbone.layerL.b.convK.weight / bnK.*
  backbone.layerL.b.downsample_conv.kernel       backbone.layerL.b.downsample.0.weight
  backbone.layerL.b.downsample_bn.*              backbone.layerL.b.downsample.1.*
  (block b with DSA: every key above)            backbone.layerL.b.block.<...>     (`.block.` infix)
  backbone.layerL.b.dsa.fc1.kernel   (U, aU)     backbone.layerL.b.dsa.generate.0.weight   (aU, U)
  backbone.layerL.b.dsa.bn.*                     backbone.layerL.b.dsa.generate.1.*
  backbone.layerL.b.dsa.fc2.kernel   (aU, L)     backbone.layerL.b.dsa.generate.3.weight   (L, aU)
  backbone.layerL.b.r4d.kernel  (3,3,1,1,C,C)    backbone.layerL.<i>.tsa.weight  (C,C,3,3,1) or
                                                 (3,C,C,3,1,1) (research-v4d Conv4d, pre-permuted);
                                                 i = the Sequential index: b + 1 + R4Ds before b
  cls_head.fc_cls.kernel (C, K) / .bias (K,)     cls_head.fc_cls.weight (K, C) / .bias

`num_batches_tracked` has no counterpart and is dropped. BatchNorm momentum is a config value
(`model.bn_momentum = 1 - torch momentum`), not a stored one.
"""

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from dsanet_jax.convert.torch_checkpoint import CheckpointError

# ARCH: depth -> (block kind, blocks per stage)
from dsanet_jax.models.resnet import ARCH, compress_stage_flags, expand_stage_flags

_BN_LEAF = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_DSA_SUB = {"fc1": "generate.0", "bn": "generate.1", "fc2": "generate.3"}
_LAYER = re.compile(r"^backbone\.layer(\d+)\.(\d+)\.(.+)$")


class ConversionError(CheckpointError):
  """Keys or shapes that do not fit the model; the message lists every offending key."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One tensor of our state and where it comes from in the original layout."""

  path: tuple  # nnx state path, e.g. ('backbone', 'layer2', 1, 'conv1', 'kernel')
  key: str  # original key, e.g. 'backbone.layer2.1.block.conv1.weight'
  shape: tuple[int, ...]  # our shape
  kind: str  # 'conv' | 'linear' | 'r4d' | 'vector'
  # The key without `.block.` infix or V4D index shift (= torchvision's, with 'backbone.').
  plain: str

  @property
  def torch_shape(self) -> tuple[int, ...]:
    s = self.shape
    if self.kind == "conv":
      return (s[4], s[3], s[0], s[1], s[2])
    if self.kind == "linear":
      return (s[1], s[0])
    if self.kind == "r4d":
      return (s[5], s[4], s[0], s[1], s[2])
    return s


def path_str(path: Sequence) -> str:
  return ".".join(str(p) for p in path)


def _kind(path: tuple, ndim: int) -> str:
  if path[-1] != "kernel":
    return "vector"
  return {5: "conv", 2: "linear", 6: "r4d"}.get(ndim, "unknown")


def _module_parts(path: tuple) -> list[str]:
  """Renames the module part of an nnx path to the original's (no infix / V4D shift yet)."""
  out: list[str] = []
  mods = [str(p) for p in path[:-1]]
  for i, p in enumerate(mods):
    prev = mods[i - 1] if i else ""
    if p == "downsample_conv":
      out += ["downsample", "0"]
    elif p == "downsample_bn":
      out += ["downsample", "1"]
    elif prev == "dsa" and p in _DSA_SUB:
      out += _DSA_SUB[p].split(".")
    else:
      out.append(p)
  return out


def build_table(flat_state: Sequence[tuple[tuple, object]]) -> dict[str, Entry]:
  """Original key -> Entry, for every Param / BatchStat of our model.

  `flat_state`: `(path, shape)` pairs of the model's Param and BatchStat leaves.
  """
  # Which blocks carry a DSA (-> `.block.` infix) or an R4D (-> Sequential index shift).
  dsa_blocks, r4d_blocks = set(), set()
  for path, _ in flat_state:
    if len(path) > 3 and path[0] == "backbone" and str(path[1]).startswith("layer"):
      if path[3] == "dsa":
        dsa_blocks.add((path[1], int(path[2])))
      if path[3] == "r4d":
        r4d_blocks.add((path[1], int(path[2])))
  table: dict[str, Entry] = {}
  for path, shape in flat_state:
    shape = tuple(shape)
    kind = _kind(path, len(shape))
    if kind == "unknown":
      raise ValueError(f"keymap: no PyTorch layout for {path_str(path)} of shape {shape}")
    parts = _module_parts(path)
    leaf = str(path[-1])
    # BatchNorm scale/mean/var get their torch names; a bias is a bias in BatchNorm and Linear.
    leaf = _BN_LEAF.get(leaf, leaf) if kind == "vector" else "weight"
    if len(path) > 3 and path[0] == "backbone" and str(path[1]).startswith("layer"):
      layer, b = path[1], int(path[2])
      rest = parts[3:]
      if rest[0] == "r4d":
        i = b + 1 + sum(1 for (lay, j) in r4d_blocks if lay == layer and j < b)
        key = f"backbone.{layer}.{i}.tsa.weight"
      else:
        i = b + sum(1 for (lay, j) in r4d_blocks if lay == layer and j < b)
        infix = [] if rest[0] == "dsa" or (layer, b) not in dsa_blocks else ["block"]
        key = ".".join(["backbone", str(layer), str(i), *infix, *rest, leaf])
    else:
      key = ".".join([*parts, leaf])
    if key in table:
      raise ValueError(
        f"keymap: {path_str(path)} and {path_str(table[key].path)} both map to {key}"
      )
    table[key] = Entry(tuple(path), key, shape, kind, ".".join([*parts, leaf]))
  return table


def to_ours(entry: Entry, w: np.ndarray) -> np.ndarray:
  """A PyTorch tensor (original layout) -> our layout for `entry`, or ConversionError."""
  w = np.asarray(w, np.float32)
  if entry.kind == "r4d" and w.ndim == 6:  # research-v4d Conv4d: (kU, O, I, kT, kH, kW)
    out = w.transpose(0, 3, 4, 5, 2, 1)
  elif tuple(w.shape) != entry.torch_shape:
    raise ConversionError(f"{entry.key}: shape {tuple(w.shape)}, expected {entry.torch_shape}")
  elif entry.kind == "conv":
    out = w.transpose(2, 3, 4, 1, 0)
  elif entry.kind == "linear":
    out = w.T
  elif entry.kind == "r4d":  # fast implementation: Conv3d (O, I, kU, kT, 1)
    out = w.transpose(2, 3, 4, 1, 0)[:, :, :, None]
  else:
    out = w
  if out.shape != entry.shape:
    raise ConversionError(f"{entry.key}: shape {tuple(w.shape)} does not fit ours {entry.shape}")
  return np.array(out, np.float32, order="C", copy=True)  # never a view of the input


def to_torch(entry: Entry, w: np.ndarray) -> np.ndarray:
  """Our array -> the original layout (the inverse of `to_ours`; R4D as the Conv3d form)."""
  w = np.asarray(w, np.float32)
  if entry.kind == "conv":
    w = w.transpose(4, 3, 0, 1, 2)
  elif entry.kind == "linear":
    w = w.T
  elif entry.kind == "r4d":
    w = w[:, :, :, 0].transpose(4, 3, 0, 1, 2)
  return np.array(w, np.float32, order="C", copy=True)


# ------------------------------------------------------------------ reading the architecture


def _scan_stage(sd: Mapping[str, np.ndarray], s: int, blocks: Mapping[int, set[str]]) -> dict:
  """One stage's keys -> block count, per-block aggregation ('dsa' | 'r4d' | 0), per-block
  temporal kernel sizes (kt of conv1, kt of conv2), bottleneck-ness and its first DSA's weights."""
  flags, kts, bottleneck, dsa_w = [], [], False, None
  for i in sorted(blocks):
    rests = blocks[i]
    if rests == {"tsa.weight"}:  # an R4D element of V4D's Sequential
      if flags:
        flags[-1] = "r4d"
      continue
    has_dsa = any(r.startswith("dsa.") for r in rests)
    flags.append("dsa" if has_dsa else 0)
    pre = f"backbone.layer{s}.{i}." + ("block." if has_dsa else "")
    bottleneck = bottleneck or any(r.endswith("conv3.weight") for r in rests)
    kt = []
    for conv in ("conv1", "conv2"):
      w = sd.get(pre + conv + ".weight")
      kt.append(int(w.shape[2]) if w is not None and w.ndim == 5 else 1)
    kts.append(tuple(kt))
    if has_dsa and dsa_w is None:
      dsa = f"backbone.layer{s}.{i}.dsa.generate."
      dsa_w = (sd.get(dsa + "0.weight"), sd.get(dsa + "3.weight"))
  return {"blocks": len(kts), "flags": flags, "kts": kts, "bottleneck": bottleneck, "dsa": dsa_w}


def _inflate_info(kind: str, kts: Sequence[Sequence[tuple[int, int]]]) -> dict:
  """Per-block temporal kernel sizes -> `inflate_flags` (and `inflate_style` for Bottlenecks)."""
  if kind == "basic":
    return {"inflate_flags": tuple(tuple(int(k1 == 3) for k1, _ in st) for st in kts)}
  info: dict = {"inflate_flags": tuple(tuple(int(3 in k) for k in st) for st in kts)}
  if any(3 in k for st in kts for k in st):
    info["inflate_style"] = "3x3x3" if any(k2 == 3 for st in kts for _, k2 in st) else "3x1x1"
  return info


def _dsa_info(dsa_w: tuple[np.ndarray | None, np.ndarray | None] | None) -> dict:
  """DSA's `generate.0` (aU, U) and `generate.3` (L, aU) weights -> U, alpha, kernel size."""
  info: dict = {}
  if dsa_w is None or dsa_w[0] is None or dsa_w[0].ndim != 2:
    return info
  hidden, u = dsa_w[0].shape
  info["num_segments"] = int(u)
  if hidden % u == 0:
    info["dsa.alpha"] = hidden // u
  if dsa_w[1] is not None and dsa_w[1].ndim == 2:
    info["dsa.kernel_size"] = int(dsa_w[1].shape[0])
  return info


def infer_architecture(sd: Mapping[str, np.ndarray]) -> dict:
  """What the original keys tell: depth, widths, classes, aggregation, insertion map, U, alpha.

  Returns a dict with the config field names it could infer (dotted, relative to `model`).
  `model.insert_place` cannot be inferred (DSA's parameters do not depend on its channels).
  """
  stages: dict[int, dict[int, set[str]]] = {}
  for k in sd:
    m = _LAYER.match(k)
    if m:
      stages.setdefault(int(m[1]), {}).setdefault(int(m[2]), set()).add(m[3])
  info: dict = {}
  if "backbone.conv1.weight" in sd:
    info["base_width"] = int(sd["backbone.conv1.weight"].shape[0])
  if "cls_head.fc_cls.weight" in sd:
    info["num_classes"] = int(sd["cls_head.fc_cls.weight"].shape[0])
  if sorted(stages) != [1, 2, 3, 4]:
    return info
  scans = [_scan_stage(sd, s, stages[s]) for s in (1, 2, 3, 4)]
  counts = tuple(st["blocks"] for st in scans)
  kind = "bottleneck" if any(st["bottleneck"] for st in scans) else "basic"
  depth = next((d for d, (k, c) in ARCH.items() if k == kind and c == counts), None)
  if depth is None:
    info["blocks_per_stage"] = (kind, counts)
    return info
  info["depth"] = depth
  kinds = {f for st in scans for f in st["flags"] if f}
  if len(kinds) > 1:
    info["aggregation"] = "mixed: " + "+".join(sorted(kinds))
    return info
  agg = kinds.pop() if kinds else "tsn"
  info["aggregation"] = {"r4d": "v4d"}.get(agg, agg)
  info["insert_flags"] = tuple(tuple(int(bool(f)) for f in st["flags"]) for st in scans)
  info.update(_inflate_info(kind, [st["kts"] for st in scans]))
  info.update(_dsa_info(next((st["dsa"] for st in scans if st["dsa"] is not None), None)))
  return info


def _config_value(model_cfg: ml_collections.ConfigDict, dotted: str) -> Any:
  for part in dotted.split("."):
    model_cfg = model_cfg[part]
  return model_cfg


def _stage_differences(info: dict, model_cfg: ml_collections.ConfigDict) -> list[tuple]:
  """(field, checkpoint value, config value) for the per-block maps that differ (same depth)."""
  out = []
  nb = ARCH[model_cfg.depth][1]
  fields = [("inflate_freq", "inflate_flags")]
  if info.get("aggregation") in ("dsa", "v4d"):
    fields.insert(0, ("insert_freq", "insert_flags"))
  for name, key in fields:
    if key not in info:
      continue
    want = getattr(model_cfg, name)
    if tuple(expand_stage_flags(want, nb, key=f"model.{name}")) != info[key]:
      out.append((name, compress_stage_flags(info[key]), tuple(want)))
  if "inflate_style" in info and ARCH[model_cfg.depth][0] == "bottleneck":
    out.append(("inflate_style", info["inflate_style"], model_cfg.inflate_style))
  return out


def check_architecture(
  info: dict, model_cfg: ml_collections.ConfigDict, *, ignore: Sequence[str] = ()
) -> list[str]:
  """Differences between what the checkpoint says (`info`) and `model_cfg`, one line each."""
  problems = []
  if "blocks_per_stage" in info:
    kind, counts = info["blocks_per_stage"]
    problems.append(
      f"the checkpoint has {kind} blocks {counts} per stage: no ResNet depth has that"
    )
  if str(info.get("aggregation", "")).startswith("mixed"):
    problems.append(f"the checkpoint mixes aggregation modules ({info['aggregation']})")
  diffs = [
    (name, info[name], _config_value(model_cfg, name))
    for name in ("depth", "base_width", "num_classes", "num_segments", "dsa.alpha",
                 "dsa.kernel_size")
    if name in info
  ]  # fmt: skip
  if "aggregation" in info and not info["aggregation"].startswith("mixed"):
    diffs.append(("aggregation", info["aggregation"], model_cfg.aggregation))
  if info.get("depth") in ARCH and info.get("depth") == model_cfg.depth:
    diffs += _stage_differences(info, model_cfg)
  for name, got, want in diffs:
    if name not in ignore and got != want:
      problems.append(
        f"model.{name}: the config says {want!r}, the checkpoint has {got!r} "
        f"(pass --config.model.{name}={got!r} or use another checkpoint)"
      )
  return problems
