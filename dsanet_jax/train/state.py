"""One way to get a model and its state: resume, init_from, scratch, eval, predict and export.

`load(config, mesh, purpose=..., workdir=..., checkpoint=..., tx=...) -> Loaded` is the only entry
point (`init_from.check_init_source(config)` validates `config.init_from` at start-up, before
anything is compiled or written). Where the state comes from, in order:

  purpose='train': the workdir's newest intact checkpoint (resume; a corrupt newer one is renamed
    aside to `checkpoints.corrupt/`), else `config.init_from`, else scratch.
  purpose='eval' (eval, predict, export): `checkpoint` (a training workdir or a converted model
    directory), else the workdir's checkpoint, else `config.init_from`; never from scratch.

Reading checkpoints, corrupt ones and the compatibility checks (architecture, optimiser, data
layout, class names): `restore.py`. The init sources (`config.init_from`): `init_from.py`. For
evaluation the checkpoint's model section is used when only run-time fields (dtype, remat,
bn_group_size, ...) differ. Checkpoints are read read-only.

The train state is `{"params", "batch_stats", "opt_state", "step"}` (pure dicts of arrays); for
evaluation `{"params", "batch_stats", "step"}`. Seeds follow `models.rng_seeds(config.seed)`.
"""

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from flax import nnx

from dsanet_jax.common import paths
from dsanet_jax.train import checkpoint as ckpt_lib
from dsanet_jax.train import init_from as init_lib
from dsanet_jax.train import restore
from dsanet_jax.train import sharding as sharding_lib
from dsanet_jax.train.restore import CorruptCheckpointError, StateError

State = dict[str, Any]


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


def _put_model(state: State, model: nnx.Module, shardings: Any) -> State:
  """`state` with the params and batch_stats of `model`, on `shardings`."""
  _, params, stats, _ = split_model(model)
  put = lambda new, sh, old: jax.device_put(jnp.asarray(new, old.dtype), sh)
  state = dict(state)
  state["params"] = jax.tree.map(put, params, shardings["params"], state["params"])
  state["batch_stats"] = jax.tree.map(put, stats, shardings["batch_stats"], state["batch_stats"])
  return state


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


# XLA:CPU's cheapest code generation, for programs that run once (the initialiser): the default
# R18's init compiles in 1.8 s instead of 14.8 s on 2 cores; its draws differ by at most one
# float32 ulp (6e-8), not in distribution.
_RUN_ONCE_CPU_OPTIONS = {
  "xla_backend_optimization_level": 0,
  "xla_llvm_disable_expensive_passes": True,
}


def _compile_once(fn: Any) -> Callable[[], Any]:
  """`fn` (jitted, no arguments) compiled for a single call: on CPU with `_RUN_ONCE_CPU_OPTIONS`."""
  lowered = fn.lower()
  if jax.default_backend() == "cpu":
    return lowered.compile(_RUN_ONCE_CPU_OPTIONS)
  return lowered.compile()


def _eval_state(model: nnx.Module) -> State:
  _, params, stats, _ = split_model(model)
  return {"params": params, "batch_stats": stats, "step": jnp.zeros((), jnp.int32)}


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
  if ckpt_lib.checkpoint_steps(workdir):
    state, meta, source = restore.resume(config, workdir, abstract, shardings, layout)
    names = restore.check_class_names(meta.class_names, class_names, source)
    logging.info("resumed from %s at step %d", ckpt_lib.checkpoint_dir(workdir), meta.step)
    return Loaded(mdef, state, names, source, f"resumed@{meta.step}", config, shardings, layout)
  model, meta, source = init_lib.init_model(config)
  state = _compile_once(jax.jit(lambda: init_state(build, tx)[0], out_shardings=shardings))()
  if model is None:
    return Loaded(mdef, state, class_names, source, init_lib.SCRATCH, config, shardings, layout)
  where = f"config.init_from={config.init_from}"
  names = restore.check_class_names(meta.get("class_names"), class_names, where)
  state = _put_model(state, model, shardings)
  state["opt_state"] = jax.jit(tx.init, out_shardings=shardings["opt_state"])(state["params"])
  logging.info("initialised from %s", source)
  return Loaded(mdef, state, names, source, "init_from", config, shardings, layout)


def _eval_step(config: ml_collections.ConfigDict, steps: list[int], run: str) -> int:
  """The checkpoint step to evaluate: `config.eval.checkpoint_step`, else the latest."""
  want = int(config.eval.checkpoint_step)
  if not want:
    return steps[-1]
  if want not in steps:
    raise StateError(
      f"config.eval.checkpoint_step={want}: no such checkpoint under "
      f"{ckpt_lib.checkpoint_dir(run)} (steps {', '.join(map(str, steps))})"
    )
  return want


def _load_eval(
  config: ml_collections.ConfigDict, mesh: Any, path: str | None, workdir: str | None
) -> Loaded:
  run = path if path and ckpt_lib.checkpoint_steps(path) else workdir
  if path and not ckpt_lib.checkpoint_steps(path) and not init_lib.is_model_dir(path):
    raise StateError(
      f"{path}: neither a training workdir (no checkpoints/<step>/) nor a converted model "
      f"directory (no {init_lib.METADATA_FILE})"
    )
  steps = ckpt_lib.checkpoint_steps(run)
  if steps:
    step = _eval_step(config, steps, run)
    step_dir = str(paths.resolve(ckpt_lib.checkpoint_dir(run)) / str(step))
    try:
      meta = restore.read_meta(step_dir)
      stored = restore.stored_model_config(meta, step_dir)
      config = restore.model_section(config, stored, step_dir)
      mdef, abstract, shardings = abstract_state(config, mesh, None)
      mngr = ckpt_lib.open_read_only(run)
      try:
        state = restore.restore_step(mngr, step, sharding_lib.with_shardings(abstract, shardings))
      finally:
        mngr.close()
    except CorruptCheckpointError as e:
      older = [s for s in steps if s < step]
      hint = (
        f"; to evaluate an older one: --config.eval.checkpoint_step={older[-1]} (steps "
        f"{', '.join(map(str, older))})"
        if older
        else "; there is no older checkpoint"
      )
      raise CorruptCheckpointError(e.step_dir, e.file, f"{e.detail}{hint}") from e
    source = f"{ckpt_lib.checkpoint_dir(run)}@{step}"
    return Loaded(mdef, state, meta.class_names, source, f"checkpoint@{step}", config, shardings)
  converted = path or config.init_from
  if not converted or converted == init_lib.SCRATCH:
    where = f"no checkpoint under {ckpt_lib.checkpoint_dir(workdir)}" if workdir else "no --workdir"
    raise StateError(f"nothing to evaluate: {where} and no config.init_from (or --checkpoint)")
  if paths.resolve(converted).is_dir():
    config = restore.model_section(config, init_lib.model_dir_config(converted), converted)
  else:  # a PyTorch file, converted now
    init_lib.init_source(config)
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.init_from = converted
  model, meta, source = init_lib.init_model(cfg)
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


__all__ = [
  "CorruptCheckpointError",
  "Loaded",
  "ModelDef",
  "StateError",
  "abstract_state",
  "build_fn",
  "eval_model",
  "fresh_rngs",
  "init_state",
  "load",
  "model_def",
  "model_state",
  "split_model",
]
