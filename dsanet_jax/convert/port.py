"""PyTorch state dict -> our NNX model: strict, by name, with what could be inferred checked.

`convert_state_dict(sd, model, model_cfg, source=..., allow_new_head=...)` fills `model` in place;
`convert_checkpoint(path, model_cfg, ...)` builds the model from the config and does the same.
Any missing key, unexpected key or shape mismatch is listed by name and refuses the conversion.
"""

import dataclasses
import logging
import os
from collections.abc import Mapping

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from dsanet_jax.convert import checkpoint_io, inflate, keymap, torch_checkpoint
from dsanet_jax.convert.keymap import ConversionError

HEAD_KEYS = ("cls_head.fc_cls.weight", "cls_head.fc_cls.bias")


@dataclasses.dataclass
class Report:
  """What a conversion did."""

  source: str
  loaded: list[str] = dataclasses.field(default_factory=list)  # original keys copied in
  fresh: list[str] = dataclasses.field(default_factory=list)  # our paths not from the checkpoint
  dropped: list[str] = dataclasses.field(default_factory=list)  # checkpoint keys not needed
  inferred: dict = dataclasses.field(default_factory=dict)
  notes: list[str] = dataclasses.field(default_factory=list)

  def summary(self, *, list_fresh: bool = True) -> str:
    """Counts and notes; with `list_fresh`, the paths initialised fresh too."""
    lines = [
      f"source: {self.source}; {len(self.loaded)} tensors loaded, {len(self.fresh)} initialised "
      f"fresh, {len(self.dropped)} checkpoint entries dropped",
      *self.notes,
    ]
    if self.fresh and list_fresh:
      lines.append("initialised fresh: " + ", ".join(self.fresh))
    return "\n".join(lines)


def state_leaves(model: nnx.Module) -> list[tuple[tuple, nnx.Variable]]:
  """`(path, Variable)` for every Param and BatchStat of `model`."""
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  return list(nnx.to_flat_state(state))


def model_table(model: nnx.Module) -> dict[str, keymap.Entry]:
  """Original key -> Entry for `model` (see keymap.build_table)."""
  return keymap.build_table([(p, v.get_value().shape) for p, v in state_leaves(model)])


def _assign(model: nnx.Module, values: Mapping[tuple, np.ndarray]) -> None:
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  for path, var in nnx.to_flat_state(state):
    if path in values:
      var.set_value(jnp.array(values[path], jnp.float32, copy=True))
  nnx.update(model, state)


def _new_head_keys(
  sd: Mapping[str, np.ndarray],
  table: Mapping[str, keymap.Entry],
  model_cfg: ml_collections.ConfigDict,
  report: Report,
) -> set[str]:
  """--allow_new_head: the head keys to initialise fresh (none when the checkpoint's head fits)."""
  w = sd.get(HEAD_KEYS[0])
  if all(k in sd and tuple(sd[k].shape) == table[k].torch_shape for k in HEAD_KEYS):
    return set()
  got = "no head" if w is None else f"a {w.shape[0]}-class head"
  msg = (
    f"--allow_new_head: the checkpoint has {got}; the {model_cfg.num_classes}-class head "
    "cls_head.fc_cls is initialised fresh (N(0, 0.01), bias 0) for fine-tuning"
  )
  report.notes.append(msg)
  logging.warning(msg)
  return set(HEAD_KEYS)


def _values_or_fail(
  sd: Mapping[str, np.ndarray],
  table: Mapping[str, keymap.Entry],
  fresh_keys: set[str],
  *,
  where: str,
  allow_new_head: bool,
) -> dict[tuple, np.ndarray]:
  """Our arrays (by nnx path) for every table key not in `fresh_keys`; raises ConversionError
  listing every missing, unexpected and mis-shaped key."""
  missing = [
    f"{k} {e.torch_shape}" for k, e in table.items() if k not in sd and k not in fresh_keys
  ]
  unexpected = [f"{k} {tuple(v.shape)}" for k, v in sd.items() if k not in table]
  mismatched = []
  values: dict[tuple, np.ndarray] = {}
  for k, e in table.items():
    if k in fresh_keys or k not in sd:
      continue
    try:
      values[e.path] = keymap.to_ours(e, sd[k])
    except ConversionError as err:
      mismatched.append(str(err))
  if missing or unexpected or mismatched:
    msg = inflate.format_problems(where, missing, unexpected, mismatched)
    if not allow_new_head and any(k.split(" ")[0] in HEAD_KEYS for k in missing):
      msg += "\n  (a checkpoint without a head: pass --allow_new_head to initialise one)"
    raise ConversionError(msg)
  return values


def convert_state_dict(
  sd: Mapping[str, np.ndarray],
  model: nnx.Module,
  model_cfg: ml_collections.ConfigDict,
  *,
  source: str = "auto",
  allow_new_head: bool = False,
  where: str = "checkpoint",
) -> Report:
  """Copies `sd` (flat, `module.` already stripped) into `model` in place. Returns a Report.

  `model`: built by `build_model`, or `checkpoint_io.abstract_model` (faster); then the parts
  listed in `Report.fresh` are still placeholders: `checkpoint_io.initialise_missing` fills them
  (`convert_checkpoint` does both).

  source: 'auto' | 'dsanet' | 'v4d' | 'torchvision' (2D ImageNet ResNet, inflated).
  allow_new_head: a head of another class count (or none) is left at its fresh init.
  """
  if source not in torch_checkpoint.SOURCES:
    raise ValueError(f"--source={source!r}: choose one of {torch_checkpoint.SOURCES}")
  if source == "auto":
    source = torch_checkpoint.detect_source(sd)
  report = Report(source)
  table = model_table(model)
  if source == "torchvision":
    return _convert_torchvision(sd, model, model_cfg, table, report, where)

  sd = torch_checkpoint.to_dsanet_layout(sd, source)
  report.dropped = sorted(k for k in sd if k.endswith("num_batches_tracked"))
  sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
  report.inferred = keymap.infer_architecture(sd)
  ignore = ("num_classes",) if allow_new_head else ()
  problems = keymap.check_architecture(report.inferred, model_cfg, ignore=ignore)
  if problems:
    hint = ""
    if any(p.startswith("model.num_classes") for p in problems):
      hint = "\n  (to fine-tune on another class count, pass --allow_new_head)"
    raise ConversionError(
      f"{where} does not match the config:\n" + "\n".join(f"  {p}" for p in problems) + hint
    )
  if model_cfg.aggregation == "dsa":
    report.notes.append(
      f"model.insert_place={model_cfg.insert_place!r} taken from the config: the checkpoint "
      "cannot tell it (DSA's parameters do not depend on the channels it acts on)"
    )

  fresh_keys = _new_head_keys(sd, table, model_cfg, report) if allow_new_head else set()
  values = _values_or_fail(sd, table, fresh_keys, where=where, allow_new_head=allow_new_head)
  _assign(model, values)
  report.loaded = sorted(k for k in table if k not in fresh_keys)
  report.dropped += sorted(k for k in fresh_keys if k in sd)
  report.fresh = sorted(keymap.path_str(table[k].path) for k in fresh_keys)
  return report


def _convert_torchvision(
  sd: Mapping[str, np.ndarray],
  model: nnx.Module,
  model_cfg: ml_collections.ConfigDict,
  table: Mapping[str, keymap.Entry],
  report: Report,
  where: str,
) -> Report:
  info = keymap.infer_architecture({"backbone." + k: v for k, v in sd.items()})
  info = {k: v for k, v in info.items() if k in ("depth", "base_width", "blocks_per_stage")}
  report.inferred = info
  problems = keymap.check_architecture(info, model_cfg)
  if problems:
    raise ConversionError(
      f"{where} (2D ResNet) does not match the config:\n" + "\n".join(f"  {p}" for p in problems)
    )
  sd3d, dropped = inflate.inflate_resnet2d(sd, table)
  values = {table[k].path: keymap.to_ours(table[k], w) for k, w in sd3d.items()}
  _assign(model, values)
  report.loaded = sorted(sd3d)
  report.dropped = dropped
  report.fresh = sorted(keymap.path_str(e.path) for k, e in table.items() if k not in sd3d)
  report.notes.append(
    "2D ImageNet ResNet inflated to I3D (kernels repeated over kT and divided by kT, BatchNorm "
    "copied); fc dropped; head, DSA and R4D initialised fresh from the model's init"
  )
  return report


def convert_checkpoint(
  path: str | os.PathLike,
  model_cfg: ml_collections.ConfigDict,
  *,
  source: str = "auto",
  allow_new_head: bool = False,
  seed: int = 0,
) -> tuple[nnx.Module, Report]:
  """Loads `path` safely, builds the model of `model_cfg` and converts into it."""
  sd = torch_checkpoint.load_state_dict(path)
  if source == "auto":
    source = torch_checkpoint.detect_source(sd)
  # Placeholders first; only the parts the checkpoint does not have get initialised.
  model = checkpoint_io.abstract_model(model_cfg, seed)
  report = convert_state_dict(
    sd, model, model_cfg, source=source, allow_new_head=allow_new_head, where=str(path)
  )
  filled = {keymap.path_str(p) for p in checkpoint_io.initialise_missing(model, model_cfg, seed)}
  if filled != set(report.fresh):
    raise ConversionError(
      f"{path}: left without values: {sorted(filled - set(report.fresh))} (a converter bug)"
    )
  return model, report


def export_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
  """Our model -> an original-layout state dict (R4D as Conv3d), e.g. to run the reference."""
  out = {}
  leaves = dict(state_leaves(model))
  for k, e in model_table(model).items():
    out[k] = keymap.to_torch(e, np.asarray(leaves[e.path].get_value()))
  return out
