"""Reading training checkpoints back: their meta, their arrays, corrupt ones, and whether they fit.

`state.load` is the front door; this module holds what it needs to trust a checkpoint:

  reading:       `read_meta(step_dir) -> CheckpointMeta`, `restore_step(mngr, step, target)`; a
                 checkpoint whose files cannot be read raises `CorruptCheckpointError` naming the
                 checkpoint and the file.
  corruption:    `resume` restores the newest intact checkpoint; corrupt newer ones are then renamed
                 aside to `WORKDIR/checkpoints.corrupt/` (never deleted).
  compatibility: the checks run before any array is read, each refusing in one line that names the
                 fields and the fix: the model architecture (`compare_model`; for evaluation
                 `model_section` uses the checkpoint's model section when only run-time fields
                 differ), the optimiser structure, the training data layout (`data_layout`,
                 `check_data_layout`) and the class names (`check_class_names`).

Checkpoints are read read-only (`checkpoint.open_read_only`).
"""

import hashlib
import json
import os
import re
from typing import Any

import jax
import ml_collections
from absl import logging
from jax.experimental import multihost_utils

from dsanet_jax.common import data_spec, paths
from dsanet_jax.models import config_fields
from dsanet_jax.train import checkpoint as ckpt_lib
from dsanet_jax.train import sharding as sharding_lib

State = dict[str, Any]
CORRUPT_DIR = "checkpoints.corrupt"
# Optimiser fields that change the optimiser state's structure (a resume across them cannot work).
OPT_FIELDS = ("optimizer", "grad_clip_norm", "weight_decay", "momentum")
LAYOUT_FIELDS = ("global_batch_size", "process_count", "dataset", "split", "num_examples",
                 "fingerprint")  # fmt: skip


class StateError(ValueError):
  """The state cannot be had as asked; the (one-line) message says why and what to do."""


class CorruptCheckpointError(StateError):
  """A checkpoint whose files cannot be read: names the checkpoint and the file."""

  def __init__(self, step_dir: str, file: str, detail: str) -> None:
    super().__init__(f"checkpoint {step_dir} is corrupt: {file}: {detail}")
    self.step_dir, self.file, self.detail = step_dir, file, detail


# ===================================================================================== reading


def read_meta(step_dir: str | os.PathLike) -> ckpt_lib.CheckpointMeta:
  """The `meta` item of a training checkpoint; CorruptCheckpointError naming the file."""
  path = paths.resolve(step_dir) / "meta" / "metadata"
  try:
    d = json.loads(path.read_text())
  except FileNotFoundError as e:
    raise CorruptCheckpointError(str(step_dir), str(path), "missing") from e
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CorruptCheckpointError(str(step_dir), str(path), f"not valid JSON ({e})") from e
  try:
    return ckpt_lib.CheckpointMeta.from_json(d)
  except ValueError as e:
    raise CorruptCheckpointError(str(step_dir), str(path), str(e)) from e


def _failed_file(step_dir: str, err: BaseException) -> tuple[str, str]:
  """(file, detail) of an Orbax / TensorStore read error inside `step_dir`.

  TensorStore names the array and the OCDBT database (`.../state/`), not the data file within.
  """
  chain, e = [], err
  while e is not None and len(chain) < 8:
    chain.append(str(e).strip())
    e = e.__cause__ or e.__context__
  text = next((t for t in chain if "Error reading" in t), chain[0])
  first = text.splitlines()[0][:400] if text else type(err).__name__
  m = re.search(r'Error reading "([^"]+)"', text)
  if m:
    return f"{step_dir}/state/(array {m.group(1)})", first
  m = re.search(re.escape(str(step_dir)) + r"[^\s\"',;]*", text)
  return (m.group(0) if m else f"{step_dir}/state"), first


def restore_step(mngr: Any, step: int, target: Any) -> State:
  """The state at `step` onto `target` (abstract arrays with shardings); CorruptCheckpointError."""
  step_dir = str(paths.resolve(mngr.directory) / str(step))
  try:
    state, _ = ckpt_lib.restore(mngr, target, step)
  except (ValueError, OSError, KeyError, RuntimeError) as e:
    raise CorruptCheckpointError(step_dir, *_failed_file(step_dir, e)) from e
  except Exception as e:  # Orbax wraps TensorStore read errors in a bare Exception: re-raise others
    if "TensorStore" not in str(e) and "reading" not in str(e):
      raise
    raise CorruptCheckpointError(step_dir, *_failed_file(step_dir, e)) from e
  return state


def _rename_aside(step_dir: str) -> str:
  """Moves a corrupt checkpoint to WORKDIR/checkpoints.corrupt/<step>[.n] (never deletes; on object
  storage a move is a copy of every object, then their deletion)."""
  src = paths.resolve(step_dir)
  dest_dir = src.parent.parent / CORRUPT_DIR
  dest = dest_dir / src.name
  n = 1
  while dest.exists():
    dest, n = dest_dir / f"{src.name}.{n}", n + 1
  if jax.process_index() == 0:
    dest_dir.mkdir(exist_ok=True)
    src.rename(dest)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"rename_aside_{src.name}")
  return str(dest)


def resume(
  config: ml_collections.ConfigDict,
  workdir: str,
  abstract: State,
  shardings: Any,
  layout: dict[str, Any] | None,
) -> tuple[State, ckpt_lib.CheckpointMeta, str]:
  """(state, meta, source) of the newest intact checkpoint that fits `config` and `layout`.

  Corrupt newer ones are renamed aside after that one is restored; a misfit is refused
  (StateError); nothing intact left is a StateError naming every corrupt one.
  """
  mngr = ckpt_lib.open_read_only(workdir)
  target = sharding_lib.with_shardings(abstract, shardings)
  bad: list[CorruptCheckpointError] = []
  try:
    for step in reversed(ckpt_lib.checkpoint_steps(workdir)):
      step_dir = str(paths.resolve(mngr.directory) / str(step))
      try:
        meta = read_meta(step_dir)
        compare_model(stored_model_config(meta, step_dir), config, step_dir)
        _compare_optimizer(meta.config, config, step_dir)
        check_data_layout(meta.data_layout, layout, config, step_dir, meta.step)
        state = restore_step(mngr, step, target)
      except CorruptCheckpointError as e:
        logging.info("%s", e, extra={"file_only": True})  # the console gets one line below
        bad.append(e)
        continue
      for e in bad:
        dest = _rename_aside(e.step_dir)
        logging.warning("%s; resuming from step %d instead, the bad one moved to %s", e, step, dest)
      return state, meta, f"{mngr.directory}@{step}"
  finally:
    mngr.close()
  raise StateError(
    f"no intact checkpoint under {ckpt_lib.checkpoint_dir(workdir)}: "
    + "; ".join(str(e) for e in bad)
    + " (nothing was renamed; move them aside to start again)"
  )


# ===================================================================================== checks


def stored_model_config(meta: ckpt_lib.CheckpointMeta, where: str) -> dict[str, Any]:
  """The model section of the config a checkpoint was written with."""
  if not isinstance(meta.config.get("model"), dict):
    raise StateError(f"{where}: its metadata holds no config.model section")
  return meta.config["model"]


def compare_model(
  stored: dict[str, Any], config: ml_collections.ConfigDict, where: str
) -> list[str]:
  """Refuses an architecture mismatch (one line naming the fields); returns run-time differences."""
  arch = config_fields.architecture_differences(stored, config.model)
  if arch:
    raise StateError(f"{where} was made for another architecture: " + "; ".join(arch))
  return config_fields.runtime_differences(stored, config.model)


def model_section(
  config: ml_collections.ConfigDict, stored: dict[str, Any], where: str
) -> ml_collections.ConfigDict:
  """The config with the checkpoint's model section (evaluation; after `compare_model`)."""
  runtime = compare_model(stored, config, where)
  if not runtime:
    return config
  logging.warning(
    "%s: using the checkpoint's model section; run-time fields differ from the config: %s",
    where,
    "; ".join(runtime),
  )
  out = ml_collections.ConfigDict(config.to_dict())
  out.model = config_fields.model_config(stored)
  return out


def _compare_optimizer(
  stored_cfg: dict[str, Any], config: ml_collections.ConfigDict, where: str
) -> None:
  train = stored_cfg.get("train") or {}
  diffs = [
    f"train.{f}: checkpoint has {train[f]!r}, config {config.train[f]!r}"
    for f in OPT_FIELDS
    if f in train
    and (
      train[f] != config.train[f] if f == "optimizer" else bool(train[f]) != bool(config.train[f])
    )
  ]
  if diffs:
    raise StateError(
      f"{where}: cannot resume, the optimiser state has another structure: " + "; ".join(diffs)
    )


def check_class_names(
  names: list[str] | None, class_names: list[str] | None, where: str
) -> list[str] | None:
  """The class names to use: refuses a checkpoint whose names differ from the dataset's."""
  if names is not None and class_names is not None and list(names) != list(class_names):
    raise StateError(
      f"{where}: its {len(names)} class names differ from the dataset's {len(class_names)} "
      "(a label order mismatch gives chance accuracy)"
    )
  return list(names) if names is not None else class_names


def dataset_class_names(config: ml_collections.ConfigDict) -> list[str] | None:
  """The prepared dataset's class names; None (with a warning naming why) if its label feature
  has no names. A dataset that cannot be opened is an error, not a silent None."""
  from dsanet_jax.data import pipeline

  label = pipeline.load_builder(data_spec.from_config(config)).info.features["label"]
  names = getattr(label, "names", None)
  if not names:
    logging.warning(
      "%s: the 'label' feature has no class names; the label-order check is off",
      config.data.name,
    )
    return None
  return list(names)


def data_layout(config: ml_collections.ConfigDict, num_examples: int) -> dict[str, Any]:
  """What fixes the order of the training data: recorded in every checkpoint, checked at resume.

  The fingerprint hashes the prepared split's TFDS description (dataset version, example count,
  shard lengths and bytes), so a rebuilt dataset of the same size is noticed too.
  """
  from dsanet_jax.data import pipeline

  split = config.data.train_split
  info = pipeline.load_builder(data_spec.from_config(config)).info
  desc = {"name": info.full_name, "split": split}
  if split in info.splits:
    s = info.splits[split]
    desc.update(n=int(s.num_examples), shards=[int(x) for x in s.shard_lengths], b=int(s.num_bytes))
  fp = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]
  return {
    "global_batch_size": int(config.train.global_batch_size),
    "process_count": int(jax.process_count()),
    "dataset": str(config.data.name),
    "split": str(split),
    "num_examples": int(num_examples),
    "fingerprint": fp,
  }


def check_data_layout(
  stored: dict[str, Any] | None,
  current: dict[str, Any] | None,
  config: ml_collections.ConfigDict,
  where: str,
  step: int,
) -> None:
  """Refuses a resume whose data layout changed, unless `config.train.allow_data_change`."""
  if current is None:
    return
  if stored is None:
    logging.warning("%s records no data layout (an older checkpoint): not checked", where)
    return
  diffs = [
    f"{k}: checkpoint has {stored.get(k)!r}, now {current[k]!r}"
    for k in LAYOUT_FIELDS
    if stored.get(k) != current[k]
  ]
  if not diffs:
    return
  if not config.train.get("allow_data_change", False):
    raise StateError(
      f"{where}: the training data layout changed, so resuming would silently reorder the data "
      f"({'; '.join(diffs)}); restore the old setting, or pass "
      "--config.train.allow_data_change=True to continue with the data order remapped"
    )
  old = step * int(stored.get("global_batch_size", current["global_batch_size"]))
  new = step * current["global_batch_size"]
  logging.warning(
    "data layout changed (%s); continuing at step %d as allowed by train.allow_data_change: the "
    "data order is remapped (the checkpoint had read %d examples, the resumed order restarts at "
    "example position %d of the new layout)",
    "; ".join(diffs),
    step,
    old,
    new,
  )
