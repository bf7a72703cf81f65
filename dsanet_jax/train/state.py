"""One way to get a model and its state: resume, init_from, scratch, eval, predict and export.

`load(config, mesh, purpose=..., workdir=..., checkpoint=..., tx=...) -> Loaded` is the only entry
point; `check_init_source(config)` validates `config.init_from` at start-up (before anything is
compiled or written). Where the state comes from, in order:

  purpose='train': the workdir's newest intact checkpoint (resume; a corrupt newer one is renamed
    aside to `checkpoints.corrupt/`), else `config.init_from`, else scratch.
  purpose='eval' (eval, predict, export): `checkpoint` (a training workdir or a converted model
    directory), else the workdir's checkpoint, else `config.init_from`; never from scratch.

`config.init_from`: None or 'scratch' (fresh init; None is refused when `config.init_expected` is
set), a converted model directory (`dsanet_jax.convert.checkpoint_io`), or a PyTorch
`.pth` / `.safetensors` file converted at start-up by `dsanet_jax.convert.port` (a torchvision 2D
ImageNet ResNet is inflated to I3D as the original does; DSA / SE / R4D and the head start fresh).

The stored config is compared with the current one first: an architecture difference is refused in
one line naming the fields; for evaluation the checkpoint's model section is used when only
run-time fields (dtype, remat, bn_group_size, ...) differ. Checkpoints are read read-only.

The train state is `{"params", "batch_stats", "opt_state", "step"}` (pure dicts of arrays); for
evaluation `{"params", "batch_stats", "step"}`. Seeds follow `models.rng_seeds(config.seed)`.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from dsanet_jax.train import checkpoint as ckpt_lib
from dsanet_jax.train import logging as log_lib
from dsanet_jax.train import sharding as sharding_lib

State = dict[str, Any]
SCRATCH = "scratch"
TORCH_SUFFIXES = (".pth", ".pt", ".tar", ".bin", ".safetensors")
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
    self.step_dir, self.file = step_dir, file


# ===================================================================================== model pieces


@dataclasses.dataclass(frozen=True)
class ModelDef:
  """The static parts of a model: graphs for train and eval mode and the abstract RNG state."""

  train_graph: Any
  eval_graph: Any
  abstract_rngs: Any  # nnx.State of the model's RNG streams (ShapeDtypeStructs)


def build_fn(model_cfg: ml_collections.ConfigDict, seed: int) -> Callable[[], nnx.Module]:
  """A callable building the model of `model_cfg` under the seed convention (`rng_seeds`)."""
  from dsanet_jax.models import build_model, model_rngs

  return lambda: build_model(model_cfg, rngs=model_rngs(seed))


def split_model(model: nnx.Module) -> tuple[Any, Any, Any, Any]:
  """model -> (graphdef, params, batch_stats, rng_state) as pure dicts; fails on other variables."""
  graph, params, stats, rngs, other = nnx.split(model, nnx.Param, nnx.BatchStat, nnx.RngState, ...)
  params, stats, rngs = (nnx.to_pure_dict(x) for x in (params, stats, rngs))
  if jax.tree.leaves(other):
    raise NotImplementedError(
      "the model holds variables other than nnx.Param, nnx.BatchStat and RNG streams: "
      f"{jax.tree.map(lambda x: getattr(x, 'shape', x), other)}; the trainer cannot save them"
    )
  return graph, params, stats, rngs


def model_def(abstract_model: nnx.Module) -> ModelDef:
  """Train and eval graphs of a (typically `nnx.eval_shape`) model, and its abstract RNG state."""
  abstract_model.train()
  train_graph, _, _, rngs = split_model(abstract_model)
  abstract_model.eval()
  eval_graph = split_model(abstract_model)[0]
  abstract_model.train()
  rngs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), rngs)
  return ModelDef(train_graph, eval_graph, rngs)


def fresh_rngs(abstract_rngs: Any, key: jax.Array) -> Any:
  """An RNG state like `abstract_rngs` whose streams all derive from `key` (counts zero)."""
  leaves, treedef = jax.tree.flatten(abstract_rngs)
  out = []
  for i, x in enumerate(leaves):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      out.append(jax.random.fold_in(key, i))
    else:
      out.append(jnp.zeros(x.shape, x.dtype))
  return jax.tree.unflatten(treedef, out)


def init_state(
  build: Callable[[], nnx.Module], tx: optax.GradientTransformation
) -> tuple[State, nnx.Module]:
  """Builds the model (a callable returning it) and returns (train state, the model)."""
  model = build()
  _, params, stats, _ = split_model(model)
  state = {
    "params": params,
    "batch_stats": stats,
    "opt_state": tx.init(params),
    "step": jnp.zeros((), jnp.int32),
  }
  return state, model


def model_state(state: State, mdef: ModelDef, seed: int = 0) -> tuple[Any, Any, Any]:
  """(params, batch_stats, rngs) for `nnx.merge(mdef.eval_graph, *...)`."""
  return state["params"], state["batch_stats"], fresh_rngs(mdef.abstract_rngs, jax.random.key(seed))


def eval_model(loaded: "Loaded") -> nnx.Module:
  """The loaded model as an eval-mode `nnx.Module` (arrays where the state has them)."""
  return nnx.merge(loaded.mdef.eval_graph, *model_state(loaded.state, loaded.mdef))


# ===================================================================================== init sources


def init_source(
  config: ml_collections.ConfigDict, *, for_training: bool = True
) -> tuple[str, str | None]:
  """('none' | 'scratch' | 'converted' | 'torch', path) of `config.init_from`; checks it exists.

  Raises StateError (one line, naming the field) for a missing path, an unknown kind of file, or
  (`for_training`) a missing init_from where `config.init_expected` names what the recipe starts
  from.
  """
  src = config.get("init_from")
  expected = config.get("init_expected", "")
  if src is None or src == "":
    if expected and for_training:
      raise StateError(
        f"config.init_from is not set, but this recipe starts from {expected} "
        "(config.init_expected): pass --config.init_from=PATH (a converted model directory or "
        "the .pth / .safetensors file), or --config.init_from=scratch to train from scratch"
      )
    return "none", None
  if src == SCRATCH:
    return SCRATCH, None
  path = pathlib.Path(src)
  hint = f" ({expected})" if expected else ""
  if not path.exists():
    raise StateError(
      f"config.init_from={src}: no such file or directory{hint}; "
      "pass --config.init_from=scratch to train from scratch"
    )
  if path.is_dir():
    from dsanet_jax.convert import checkpoint_io

    checkpoint_io.read_metadata(path)  # fails naming metadata.json if it is not one
    return "converted", str(path)
  if path.name.endswith(TORCH_SUFFIXES):
    return "torch", str(path)
  raise StateError(
    f"config.init_from={src}: expected a converted model directory or a PyTorch "
    f"{'/'.join(TORCH_SUFFIXES)} file"
  )


def check_init_source(config: ml_collections.ConfigDict, *, for_training: bool = True) -> None:
  """Start-up check of `config.init_from` / `config.init_expected` (see `init_source`)."""
  init_source(config, for_training=for_training)


def _init_model(config: ml_collections.ConfigDict) -> tuple[nnx.Module | None, dict, str]:
  """(model or None for scratch, metadata, source) of `config.init_from`."""
  kind, path = init_source(config)
  if kind in ("none", SCRATCH):
    return None, {}, SCRATCH
  from dsanet_jax.convert import checkpoint_io

  if kind == "converted":
    try:
      model, meta = checkpoint_io.load_model(path, config.model, seed=config.seed)
    except ValueError as e:
      raise StateError(f"config.init_from={path}: {e}") from e
    return model, meta, f"converted:{path}"
  from dsanet_jax.convert import port, torch_checkpoint

  try:
    model, report = port.convert_checkpoint(path, config.model, seed=config.seed)
  except torch_checkpoint.CheckpointError as e:  # CheckpointError and ConversionError: ValueErrors
    raise StateError(f"config.init_from={path}: {e}") from e
  except ValueError as e:
    raise StateError(f"config.init_from={path}: {e}") from e
  logging.info("init_from %s: %s", path, report.summary(list_fresh=False))
  if report.fresh:
    log_lib.file_only("init_from %s: initialised fresh: %s", path, ", ".join(report.fresh))
  return model, {"class_names": None, "report": report}, f"{report.source}:{path}"


def _put_model(state: State, model: nnx.Module, shardings: Any) -> State:
  """`state` with the params and batch_stats of `model`, on `shardings`."""
  _, params, stats, _ = split_model(model)
  put = lambda new, sh, old: jax.device_put(jnp.asarray(new, old.dtype), sh)
  state = dict(state)
  state["params"] = jax.tree.map(put, params, shardings["params"], state["params"])
  state["batch_stats"] = jax.tree.map(put, stats, shardings["batch_stats"], state["batch_stats"])
  return state


# ===================================================================================== checkpoints


def checkpoint_steps(workdir: str | None) -> list[int]:
  """Steps of the workdir's finished checkpoints (`checkpoints/<step>/`), ascending."""
  if not workdir:
    return []
  d = pathlib.Path(ckpt_lib.checkpoint_dir(workdir))
  if not d.is_dir():
    return []
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and p.is_dir())


def read_meta(step_dir: str | pathlib.Path) -> dict[str, Any]:
  """The `meta` item of a training checkpoint; CorruptCheckpointError naming the file."""
  path = pathlib.Path(step_dir) / "meta" / "metadata"
  try:
    meta = json.loads(path.read_text())
  except FileNotFoundError as e:
    raise CorruptCheckpointError(str(step_dir), str(path), "missing") from e
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CorruptCheckpointError(str(step_dir), str(path), f"not valid JSON ({e})") from e
  if not isinstance(meta, dict) or "step" not in meta:
    raise CorruptCheckpointError(str(step_dir), str(path), "no 'step' entry")
  return meta


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
    return os.path.join(step_dir, "state", f"(array {m.group(1)})"), first
  m = re.search(re.escape(str(step_dir)) + r"[^\s\"',;]*", text)
  return (m.group(0) if m else os.path.join(step_dir, "state")), first


def _restore_step(mngr: Any, step: int, target: Any) -> State:
  step_dir = os.path.join(str(mngr.directory), str(step))
  try:
    state, _ = ckpt_lib.restore(mngr, target, step)
  except (ValueError, OSError, KeyError, RuntimeError) as e:
    raise CorruptCheckpointError(step_dir, *_failed_file(step_dir, e)) from e
  except Exception as e:  # Orbax wraps TensorStore read errors in a bare Exception: re-raise others
    if "TensorStore" not in str(e) and "reading" not in str(e):
      raise
    raise CorruptCheckpointError(step_dir, *_failed_file(step_dir, e)) from e
  return state


def stored_model_config(meta: dict[str, Any], where: str) -> dict[str, Any]:
  cfg = meta.get("config")
  if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
    raise StateError(f"{where}: its metadata holds no config.model section")
  return cfg["model"]


def compare_model(
  stored: dict[str, Any], config: ml_collections.ConfigDict, where: str
) -> list[str]:
  """Refuses an architecture mismatch (one line naming the fields); returns run-time differences."""
  from dsanet_jax.convert import checkpoint_io

  arch = checkpoint_io.architecture_differences(stored, config.model)
  if arch:
    raise StateError(f"{where} was made for another architecture: " + "; ".join(arch))
  return checkpoint_io.runtime_differences(stored, config.model)


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


# ===================================================================================== data layout


def data_layout(config: ml_collections.ConfigDict, num_examples: int) -> dict[str, Any]:
  """What fixes the order of the training data: recorded in every checkpoint, checked at resume.

  The fingerprint hashes the prepared split's TFDS description (dataset version, example count,
  shard lengths and bytes), so a rebuilt dataset of the same size is noticed too.
  """
  from dsanet_jax.data import pipeline

  split = config.data.train_split
  info = pipeline.load_builder(config).info
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


# ===================================================================================== the loader


@dataclasses.dataclass
class Loaded:
  """What `load` returns."""

  mdef: ModelDef
  state: State  # train: params, batch_stats, opt_state, step; eval: params, batch_stats, step
  class_names: list[str] | None
  source: str  # where it came from: 'scratch', 'converted:DIR', 'torchvision:FILE', 'DIR@step'
  start: str  # 'scratch' | 'init_from' | 'resumed@N' | 'checkpoint@N'
  config: ml_collections.ConfigDict  # the config the model was built from
  shardings: Any
  data_layout: dict[str, Any] | None = None

  @property
  def step(self) -> int:
    return int(jax.device_get(self.state["step"]))


def abstract_state(
  config: ml_collections.ConfigDict, mesh: Any, tx: optax.GradientTransformation | None
) -> tuple[ModelDef, State, Any]:
  """(model definition, abstract state, its shardings on `mesh`); without `tx`: the eval state."""
  build = build_fn(config.model, config.seed)
  mdef = model_def(nnx.eval_shape(build))
  if tx is None:  # evaluation: no optimiser state
    abstract = jax.eval_shape(lambda: _eval_state(build()))
  else:
    abstract = jax.eval_shape(lambda: init_state(build, tx)[0])
  shardings = sharding_lib.state_shardings(abstract, mesh, config.mesh.fsdp_min_size)
  return mdef, abstract, shardings


def _eval_state(model: nnx.Module) -> State:
  _, params, stats, _ = split_model(model)
  return {"params": params, "batch_stats": stats, "step": jnp.zeros((), jnp.int32)}


def _check_names(names: Any, class_names: list[str] | None, where: str) -> list[str] | None:
  if names is not None and class_names is not None and list(names) != list(class_names):
    raise StateError(
      f"{where}: its {len(names)} class names differ from the dataset's {len(class_names)} "
      "(a label order mismatch gives chance accuracy)"
    )
  return list(names) if names is not None else class_names


def _rename_aside(step_dir: str) -> str:
  """Moves a corrupt checkpoint to WORKDIR/checkpoints.corrupt/<step>[.n] (never deletes)."""
  src = pathlib.Path(step_dir)
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


def _resume(
  config: ml_collections.ConfigDict,
  workdir: str,
  abstract: State,
  shardings: Any,
  layout: dict[str, Any] | None,
) -> tuple[State, dict[str, Any], str]:
  """Restores the newest intact checkpoint; corrupt newer ones are renamed aside after that."""
  mngr = ckpt_lib.open_read_only(workdir)
  target = sharding_lib.with_shardings(abstract, shardings)
  bad: list[CorruptCheckpointError] = []
  try:
    for step in reversed(checkpoint_steps(workdir)):
      step_dir = os.path.join(str(mngr.directory), str(step))
      try:
        meta = read_meta(step_dir)
        stored = meta.get("config") or {}
        compare_model(stored_model_config(meta, step_dir), config, step_dir)
        _compare_optimizer(stored, config, step_dir)
        check_data_layout(meta.get("data_layout"), layout, config, step_dir, int(meta["step"]))
        state = _restore_step(mngr, step, target)
      except CorruptCheckpointError as e:
        logging.error("%s", e)
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


def _load_train(
  config: ml_collections.ConfigDict,
  mesh: Any,
  workdir: str | None,
  tx: optax.GradientTransformation,
  class_names: list[str] | None,
  layout: dict[str, Any] | None,
) -> Loaded:
  build = build_fn(config.model, config.seed)
  mdef, abstract, shardings = abstract_state(config, mesh, tx)
  if checkpoint_steps(workdir):
    state, meta, source = _resume(config, workdir, abstract, shardings, layout)
    names = _check_names(meta.get("class_names"), class_names, source)
    step = int(meta["step"])
    logging.info("resumed from %s at step %d", ckpt_lib.checkpoint_dir(workdir), step)
    return Loaded(mdef, state, names, source, f"resumed@{step}", config, shardings, layout)
  model, meta, source = _init_model(config)
  state = jax.jit(lambda: init_state(build, tx)[0], out_shardings=shardings)()
  if model is None:
    return Loaded(mdef, state, class_names, SCRATCH, SCRATCH, config, shardings, layout)
  names = _check_names(meta.get("class_names"), class_names, f"config.init_from={config.init_from}")
  state = _put_model(state, model, shardings)
  state["opt_state"] = jax.jit(tx.init, out_shardings=shardings["opt_state"])(state["params"])
  logging.info("initialised from %s", source)
  return Loaded(mdef, state, names, source, "init_from", config, shardings, layout)


def _with_model(
  config: ml_collections.ConfigDict, stored: dict[str, Any], where: str
) -> ml_collections.ConfigDict:
  """The config with the checkpoint's model section (after `compare_model`)."""
  from dsanet_jax.convert import checkpoint_io

  runtime = compare_model(stored, config, where)
  if not runtime:
    return config
  logging.warning(
    "%s: using the checkpoint's model section; run-time fields differ from the config: %s",
    where,
    "; ".join(runtime),
  )
  out = ml_collections.ConfigDict(config.to_dict())
  out.model = checkpoint_io.model_config(stored)
  return out


def _load_eval(
  config: ml_collections.ConfigDict, mesh: Any, path: str | None, workdir: str | None
) -> Loaded:
  from dsanet_jax.convert import checkpoint_io

  run = path if path and checkpoint_steps(path) else workdir
  if (
    path
    and not checkpoint_steps(path)
    and not os.path.isfile(os.path.join(path, checkpoint_io.METADATA_FILE))
  ):
    raise StateError(
      f"{path}: neither a training workdir (no checkpoints/<step>/) nor a converted model "
      f"directory (no {checkpoint_io.METADATA_FILE})"
    )
  if checkpoint_steps(run):
    step = checkpoint_steps(run)[-1]
    step_dir = os.path.join(ckpt_lib.checkpoint_dir(run), str(step))
    meta = read_meta(step_dir)
    config = _with_model(config, stored_model_config(meta, step_dir), step_dir)
    mdef, abstract, shardings = abstract_state(config, mesh, None)
    mngr = ckpt_lib.open_read_only(run)
    try:
      state = _restore_step(mngr, step, sharding_lib.with_shardings(abstract, shardings))
    finally:
      mngr.close()
    source = f"{ckpt_lib.checkpoint_dir(run)}@{step}"
    return Loaded(mdef, state, meta.get("class_names"), source, f"checkpoint@{step}", config,
                  shardings)  # fmt: skip
  converted = path or config.init_from
  if not converted or converted == SCRATCH:
    where = f"no checkpoint under {ckpt_lib.checkpoint_dir(workdir)}" if workdir else "no --workdir"
    raise StateError(f"nothing to evaluate: {where} and no config.init_from (or --checkpoint)")
  if os.path.isdir(converted):
    meta = checkpoint_io.read_metadata(converted)
    config = _with_model(config, meta["config"], converted)
  else:  # a PyTorch file, converted now
    init_source(config)
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.init_from = converted
  model, meta, source = _init_model(cfg)
  mdef, abstract, shardings = abstract_state(config, mesh, None)
  state = _put_model(
    jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract), model, shardings
  )
  state["step"] = jax.device_put(jnp.zeros((), jnp.int32), shardings["step"])
  return Loaded(mdef, state, meta.get("class_names"), source, "init_from", config, shardings)


def load(
  config: ml_collections.ConfigDict,
  mesh: Any,
  *,
  purpose: str,
  workdir: str | None = None,
  checkpoint: str | None = None,
  tx: optax.GradientTransformation | None = None,
  class_names: list[str] | None = None,
  layout: dict[str, Any] | None = None,
) -> Loaded:
  """The model and its state for `purpose` 'train' (needs `tx`) or 'eval' (see the module doc).

  class_names: the dataset's, checked against the checkpoint's (train). layout: `data_layout` of
  this run, checked against the resumed checkpoint's (train). Raises StateError with one line.
  """
  if purpose == "train":
    if tx is None:
      raise ValueError("state.load(purpose='train') needs the optimiser `tx`")
    return _load_train(config, mesh, workdir, tx, class_names, layout)
  if purpose != "eval":
    raise ValueError(f"state.load: purpose={purpose!r}, expected 'train' or 'eval'")
  t0 = time.time()
  out = _load_eval(config, mesh, checkpoint, workdir)
  logging.info("loaded %s in %.1fs", out.source, time.time() - t0)
  return out


def dataset_class_names(config: ml_collections.ConfigDict) -> list[str] | None:
  """The prepared dataset's class names; None (with a warning naming why) if its label feature
  has no names. A dataset that cannot be opened is an error, not a silent None."""
  from dsanet_jax.data import pipeline

  label = pipeline.load_builder(config).info.features["label"]
  names = getattr(label, "names", None)
  if not names:
    logging.warning(
      "%s: the 'label' feature has no class names; the label-order check is off",
      config.data.name,
    )
    return None
  return list(names)


__all__ = [
  "CorruptCheckpointError",
  "Loaded",
  "ModelDef",
  "StateError",
  "build_fn",
  "check_init_source",
  "data_layout",
  "dataset_class_names",
  "eval_model",
  "fresh_rngs",
  "init_state",
  "load",
  "model_def",
  "model_state",
  "split_model",
]
