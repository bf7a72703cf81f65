"""The training loop: one flat function in big_vision's manner, plus the pieces it is made of.

`train_and_evaluate(config, workdir)` runs, top to bottom:
  set-up -> mesh -> input -> model -> sharding -> update -> checkpoint -> evaluation -> loop.
The same code runs on one CPU and on a multi-host TPU/GPU slice: the batch is a global array
sharded over the mesh's ('data', 'fsdp') axes, parameters and optimiser state are replicated or
FSDP-sharded, and every process feeds its own shard of the data.

The train state is a dict of pytrees `{"params", "batch_stats", "opt_state", "step"}` (nnx.State and
optax state). Dropout randomness is not state: the model's RNG streams are re-seeded every step from
`fold_in(seed, step)`, so a resumed run draws the same masks as an uninterrupted one.
"""

import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from dsanet_jax.models.flops import count_params
from dsanet_jax.train import checkpoint as ckpt_lib
from dsanet_jax.train import evaluator as eval_lib
from dsanet_jax.train import logging as log_lib
from dsanet_jax.train import optim
from dsanet_jax.train import sharding as sharding_lib

State = dict[str, Any]


# ===================================================================================== pieces


@dataclasses.dataclass(frozen=True)
class ModelDef:
  """The static parts of a model: graphs for train and eval mode and the abstract RNG state."""

  train_graph: Any
  eval_graph: Any
  abstract_rngs: Any  # nnx.State of the model's RNG streams (ShapeDtypeStructs)


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


def cross_entropy(
  logits: jax.Array, labels: jax.Array, mask: jax.Array, label_smoothing: float
) -> tuple[jax.Array, jax.Array]:
  """Mean (over mask) cross-entropy with label smoothing; and the count of correct top-1."""
  k = logits.shape[-1]
  onehot = (
    optax.smooth_labels(jax.nn.one_hot(labels, k), label_smoothing)
    if label_smoothing
    else (jax.nn.one_hot(labels, k))
  )
  ce = optax.softmax_cross_entropy(logits.astype(jnp.float32), onehot)
  w = mask.astype(jnp.float32)
  loss = jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)
  correct = jnp.sum((jnp.argmax(logits, -1) == labels) * w)
  return loss, correct


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


def make_train_step(
  mdef: ModelDef,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  *,
  seed: int,
  grad_accum_steps: int = 1,
  label_smoothing: float = 0.0,
) -> Callable[[State, dict[str, jax.Array]], tuple[State, dict[str, jax.Array]]]:
  """Returns `train_step(state, batch) -> (state, metrics)` (pure; jit it with shardings).

  batch: `video` [B, U, T, H, W, 3], `label` int32 [B], `mask` bool [B]. With gradient accumulation
  the batch is split into `grad_accum_steps` micro-batches (micro-batch m takes rows m, m + A, ...,
  so each stays spread over the devices), BatchNorm statistics run through them in turn, and the
  averaged gradient makes one optimiser step.
  """
  base_key = jax.random.key(seed)
  acc = grad_accum_steps

  def loss_fn(params, stats, rngs, mb):
    model = nnx.merge(mdef.train_graph, params, stats, rngs)
    logits = model(mb["video"])
    loss, correct = cross_entropy(logits, mb["label"], mb["mask"], label_smoothing)
    return loss, (nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)), correct)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state, batch):
    step = state["step"]
    key = jax.random.fold_in(base_key, step)
    params = state["params"]
    if acc == 1:
      rngs = fresh_rngs(mdef.abstract_rngs, key)
      (loss, (stats, correct)), grads = grad_fn(params, state["batch_stats"], rngs, batch)
    else:
      micro = jax.tree.map(
        lambda x: jnp.moveaxis(x.reshape(x.shape[0] // acc, acc, *x.shape[1:]), 1, 0), batch
      )

      def body(carry, xs):
        g_sum, stats, loss_sum, corr_sum = carry
        i, mb = xs
        rngs = fresh_rngs(mdef.abstract_rngs, jax.random.fold_in(key, i))
        (loss, (stats, correct)), g = grad_fn(params, stats, rngs, mb)
        g_sum = jax.tree.map(jnp.add, g_sum, g)
        return (g_sum, stats, loss_sum + loss, corr_sum + correct), None

      zeros = jax.tree.map(jnp.zeros_like, params)
      init = (zeros, state["batch_stats"], jnp.zeros(()), jnp.zeros(()))
      (grads, stats, loss, correct), _ = jax.lax.scan(body, init, (jnp.arange(acc), micro))
      grads = jax.tree.map(lambda g: g / acc, grads)
      loss = loss / acc
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    n = jnp.maximum(jnp.sum(batch["mask"].astype(jnp.float32)), 1.0)
    metrics = {
      "loss": loss,
      "accuracy": correct / n,
      "grad_norm": optax.tree.norm(grads),
      "param_norm": optax.tree.norm(new_params),
      "learning_rate": jnp.asarray(schedule(step), jnp.float32),
    }
    new_state = {
      "params": new_params,
      "batch_stats": stats,
      "opt_state": opt_state,
      "step": step + 1,
    }
    return new_state, metrics

  return train_step


def model_state(state: State, mdef: ModelDef, seed: int = 0) -> tuple[Any, Any, Any]:
  """(params, batch_stats, rngs) for `nnx.merge(mdef.eval_graph, *...)`."""
  return state["params"], state["batch_stats"], fresh_rngs(mdef.abstract_rngs, jax.random.key(seed))


class _Preemption:
  """Records SIGTERM (pre-emption); `requested()` agrees across processes."""

  def __init__(self):
    self.flag = False
    self._old = None
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    logging.warning("SIGTERM received: saving a checkpoint and exiting")
    self.flag = True

  def requested(self) -> bool:
    if jax.process_count() == 1:
      return self.flag
    flags = multihost_utils.process_allgather(np.array([self.flag], np.int32))
    return bool(np.any(flags))

  def restore(self):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


class NonFiniteLossError(FloatingPointError):
  pass


def _check_finite(step: int, metrics: dict[str, float]) -> None:
  bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
  if bad:
    raise NonFiniteLossError(
      f"non-finite training metrics at step {step}: {bad}; stopping without saving this state "
      "(the last good checkpoint is kept). Lower config.train.base_lr or check the data."
    )


def _log_banner(config, mesh, workdir: str) -> None:
  import flax
  import orbax.checkpoint

  logging.info(
    "versions: jax %s, flax %s, optax %s, orbax-checkpoint %s",
    jax.__version__,
    flax.__version__,
    optax.__version__,
    orbax.checkpoint.__version__,
  )
  logging.info(
    "process %d of %d; %d local / %d global devices (%s); mesh %s",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices()[0].platform,
    dict(mesh.shape),
  )
  logging.info("workdir %s\nconfig:\n%s", workdir, config)


def _build_fn(model_cfg: ml_collections.ConfigDict, seed: int) -> Callable[[], nnx.Module]:
  from dsanet_jax.models import build_model

  return lambda: build_model(model_cfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1))


def _model_info(config: ml_collections.ConfigDict, params: Any) -> dict[str, float]:
  """Parameter count and GMACs per view (the models' `flops.count_gmacs`), for the step-0 log."""
  info = {"num_params": float(count_params(params))}
  if not config.train.log_gmacs:
    return info
  try:
    from dsanet_jax.models import flops

    g = flops.count_gmacs(
      config.model, num_frames=config.data.num_frames, crop_size=config.data.crop_size
    )
    info["gmacs_per_view"] = float(g["gmacs_per_view"])
  except Exception as e:
    logging.warning("could not compute GMACs: %s", e)
  logging.info("model: %s", info)
  return info


def _steps(config: ml_collections.ConfigDict, num_train: int) -> tuple[float, int]:
  steps_per_epoch = num_train / config.train.global_batch_size
  if config.train.num_steps:
    return steps_per_epoch, int(config.train.num_steps)
  return steps_per_epoch, max(1, math.ceil(config.train.num_epochs * steps_per_epoch))


def _eval_views(config, final: bool) -> tuple[int, int]:
  if final:
    return config.eval.num_segments, config.eval.num_crops
  return config.eval.val_num_segments, config.eval.val_num_crops


def _num_views(config, final: bool) -> tuple[str, int, int]:
  u, c = _eval_views(config, final)
  return f"{u}x{c}", u, c


def run_evaluation(
  config: ml_collections.ConfigDict,
  mesh,
  mdef: ModelDef,
  state: State,
  *,
  final: bool,
  class_names: list[str] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Multi-view evaluation of `state` on `config.data.eval_split` (test or validation views)."""
  from dsanet_jax.data import pipeline

  name, u_test, crops = _num_views(config, final)
  pc, pi = jax.process_count(), jax.process_index()
  sharding_lib.check_batch_layout(
    mesh, config.eval.batch_size, 0, process_count=pc, what="eval.batch_size"
  )
  ev = eval_lib.Evaluator(
    mdef.eval_graph,
    mesh,
    model_segments=config.model.num_segments,
    num_segments=u_test,
    num_crops=crops,
    num_classes=config.model.num_classes,
    aggregate=config.eval.aggregate,
    grouping=config.eval.grouping,
  )
  it = pipeline.make_eval_iterator(
    config,
    split=config.data.eval_split,
    local_batch_size=config.eval.batch_size // pc,
    process_index=pi,
    process_count=pc,
    num_segments=u_test,
    num_crops=crops,
    crop_size=None if final else min(config.data.crop_size, config.eval.short_side),
  )
  t0 = time.time()
  metrics, predictions = ev.run(
    model_state(state, mdef),
    it,
    expected_videos=pipeline.num_examples(config, config.data.eval_split),
  )
  metrics["views"] = name
  metrics["eval_seconds"] = time.time() - t0
  logging.info(
    "eval (%s views, %d videos): top1 %.4f top5 %.4f mAP %.4f in %.1fs",
    name,
    metrics["num_videos"],
    metrics["top1"],
    metrics["top5"],
    metrics["mAP"],
    metrics["eval_seconds"],
  )
  return metrics, predictions


def _load_converted(config, state: State, shardings, tx, class_names) -> tuple[State, Any]:
  """Puts the model of a converted checkpoint (`config.init_from`) into `state`; fresh optimiser.

  Returns (state, the checkpoint's class names or None). Fails if they differ from `class_names`.
  """
  from dsanet_jax.convert import checkpoint_io

  loaded, meta = checkpoint_io.load_model(config.init_from, config.model)
  names = (meta or {}).get("class_names")
  if class_names is not None and names is not None and list(names) != list(class_names):
    raise ValueError(
      f"config.init_from={config.init_from}: its {len(names)} class_names differ from the "
      f"dataset's {len(class_names)} (label order mismatch gives chance accuracy)"
    )
  _, params, stats, _ = split_model(loaded)
  put = lambda new, old: jax.device_put(jnp.asarray(new, old.dtype), old.sharding)
  state = dict(state)
  state["params"] = jax.tree.map(put, params, state["params"])
  state["batch_stats"] = jax.tree.map(put, stats, state["batch_stats"])
  state["opt_state"] = jax.jit(tx.init, out_shardings=shardings["opt_state"])(state["params"])
  logging.info("initialised from converted checkpoint %s", config.init_from)
  return state, names


def _restore_or_init(config, mngr, abstract_state, shardings, build, tx, class_names):
  """Resume from the workdir, else `config.init_from`, else from scratch. Returns (state, how)."""
  if mngr.latest_step() is not None:
    target = sharding_lib.with_shardings(abstract_state, shardings)
    state, meta = ckpt_lib.restore(mngr, target)
    logging.info("resumed from %s at step %d", mngr.directory, int(meta["step"]))
    return state, f"resumed@{int(meta['step'])}"
  state = jax.jit(lambda: init_state(build, tx)[0], out_shardings=shardings)()
  if config.init_from:
    state, _ = _load_converted(config, state, shardings, tx, class_names)
    return state, "init_from"
  return state, "scratch"


def _stored_results(path: str, step: int) -> dict[str, Any] | None:
  """The final results of a finished run at `step` (read by process 0, agreed by all), or None."""
  res = None
  if jax.process_index() == 0 and os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
    res = stored if stored.get("step") == step else None
  if jax.process_count() > 1:
    found = bool(multihost_utils.broadcast_one_to_all(np.int32(res is not None)))
    res = (res or {"step": step, "results": path}) if found else None
  return res


def _meta(config, step: int, class_names, extra: dict[str, Any] | None = None) -> dict[str, Any]:
  m = {"step": int(step), "config": json.loads(config.to_json_best_effort())}
  if class_names is not None:
    m["class_names"] = list(class_names)
  m.update(extra or {})
  return m


# ===================================================================================== the loop


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains with periodic validation, checkpoints, then runs the final multi-view evaluation.

  Returns a summary: `{"step", "start", "train": last logged metrics, "eval": final metrics}`.
  Raises NonFiniteLossError on a non-finite loss (after waiting for pending good saves).
  """
  from dsanet_jax.data import pipeline

  # ----------------------------------------------------------------------- set-up
  workdir = os.path.abspath(workdir)
  is_main = jax.process_index() == 0
  pc, pi = jax.process_count(), jax.process_index()
  if is_main:
    os.makedirs(workdir, exist_ok=True)
  writer = log_lib.create_writer(workdir, is_main=is_main)

  # ----------------------------------------------------------------------- mesh
  mesh = sharding_lib.make_mesh(config.mesh)
  _log_banner(config, mesh, workdir)

  # ----------------------------------------------------------------------- input
  gbs = config.train.global_batch_size
  acc = config.train.grad_accum_steps
  if gbs % acc:
    raise ValueError(f"train.global_batch_size={gbs} not divisible by grad_accum_steps={acc}")
  sharding_lib.check_batch_layout(
    mesh, gbs // acc, config.model.bn_group_size, process_count=pc, what="train micro-batch"
  )
  pipeline.check_frame_rate(config)
  num_train = config.train.num_train_examples or pipeline.num_examples(
    config, config.data.train_split
  )
  steps_per_epoch, total_steps = _steps(config, num_train)
  try:
    class_names = list(pipeline.class_names(config))
  except Exception as e:
    logging.warning("no class names: %s", e)
    class_names = None
  logging.info(
    "%d training videos, global batch %d (%d per process, %d per device), %.2f steps/epoch, "
    "%d steps",
    num_train,
    gbs,
    gbs // pc,
    gbs // mesh.devices.size,
    steps_per_epoch,
    total_steps,
  )

  # ----------------------------------------------------------------------- model
  schedule = optim.make_schedule(config.train, steps_per_epoch, total_steps)
  tx = optim.make_optimizer(config.train, schedule)
  build = _build_fn(config.model, config.seed)
  abstract_state = jax.eval_shape(lambda: init_state(build, tx)[0])
  mdef = model_def(nnx.eval_shape(build))

  # ----------------------------------------------------------------------- sharding
  shardings = sharding_lib.state_shardings(abstract_state, mesh, config.mesh.fsdp_min_size)
  data_sharding = sharding_lib.batch_sharding(mesh)
  repl = sharding_lib.replicated(mesh)

  # ----------------------------------------------------------------------- update
  train_step = jax.jit(
    make_train_step(
      mdef,
      tx,
      schedule,
      seed=config.seed,
      grad_accum_steps=acc,
      label_smoothing=config.train.label_smoothing,
    ),
    in_shardings=(shardings, data_sharding),
    out_shardings=(shardings, repl),
    donate_argnums=(0,),
  )

  # ----------------------------------------------------------------------- checkpoint
  mngr = ckpt_lib.make_manager(workdir, config.checkpoint)
  state, start = _restore_or_init(config, mngr, abstract_state, shardings, build, tx, class_names)
  step = int(jax.device_get(state["step"]))
  results_path = os.path.join(workdir, "eval", "results.json")

  # ----------------------------------------------------------------------- evaluation
  def evaluate(final: bool) -> dict[str, Any]:
    metrics, predictions = run_evaluation(
      config, mesh, mdef, state, final=final, class_names=class_names
    )
    prefix = "test" if final else "val"
    writer.write_scalars(
      step,
      {
        f"{prefix}/top1@{metrics['views']}": metrics["top1"],
        f"{prefix}/top5@{metrics['views']}": metrics["top5"],
        f"{prefix}/mAP@{metrics['views']}": metrics["mAP"],
        f"{prefix}/mean_class_accuracy@{metrics['views']}": metrics["mean_class_accuracy"],
      },
    )
    if final:
      eval_lib.write_results(
        os.path.dirname(results_path),
        metrics,
        predictions,
        class_names,
        extra={"step": step, "split": config.data.eval_split},
      )
    return metrics

  # ----------------------------------------------------------------------- loop
  if step >= total_steps:
    mngr.wait_until_finished()
    res = _stored_results(results_path, step)
    if res is not None:
      logging.info("training already finished at step %d; results in %s", step, results_path)
      return {"step": step, "start": start, "train": {}, "eval": res}
    final_metrics = evaluate(final=True)
    mngr.close()
    return {"step": step, "start": start, "train": {}, "eval": final_metrics}

  if step == 0 and is_main:
    info = _model_info(config, state["params"])
    writer.write_scalars(0, info)
    writer.write_hparams({"config": config.to_json_best_effort()})
  # tf.data prefetches in its own threads; a Python prefetch thread calling into the iterator
  # can deadlock with the iterator's destruction (seen with several processes), so none here.
  train_iter = pipeline.make_train_iterator(
    config, local_batch_size=gbs // pc, process_index=pi, process_count=pc, start_step=step
  )
  preempt = _Preemption()
  pending: list[tuple[int, dict[str, jax.Array]]] = []
  last: dict[str, float] = {}
  t_log, wait_s, first_step = time.time(), 0.0, step
  steps_since_log = 0
  every = config.train.log_every_steps
  eval_every = config.train.eval_every_steps
  ckpt_every = config.checkpoint.every_steps

  def flush_metrics() -> dict[str, float]:
    """Fetches pending per-step metrics, checks them finite, returns their mean."""
    nonlocal pending
    if not pending:
      return {}
    fetched = jax.device_get([m for _, m in pending])
    for (s, _), m in zip(pending, fetched):
      _check_finite(s, {k: float(v) for k, v in m.items()})
    pending = []
    return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}

  def save(val_top1: float | None = None) -> None:
    flush_metrics()  # never save a state that follows a non-finite step
    extra = {} if val_top1 is None else {ckpt_lib.BEST_METRIC: val_top1}
    ckpt_lib.save(
      mngr,
      step,
      state,
      _meta(config, step, class_names, extra),
      metrics=extra or None,
    )

  try:
    while step < total_steps:
      if preempt.requested():
        save()
        mngr.wait_until_finished()
        logging.warning("pre-empted: checkpoint saved at step %d; exiting", step)
        writer.flush()
        return {"step": step, "start": start, "train": last, "eval": None, "preempted": True}
      t0 = time.time()
      local = next(train_iter)
      wait_s += time.time() - t0
      batch = {
        "video": jax.make_array_from_process_local_data(data_sharding, local["video"]),
        "label": jax.make_array_from_process_local_data(
          data_sharding, np.asarray(local["label"], np.int32)
        ),
        "mask": jax.make_array_from_process_local_data(
          data_sharding, np.asarray(local.get("mask", np.ones(len(local["label"]), bool)))
        ),
      }
      state, metrics = train_step(state, batch)
      pending.append((step, metrics))
      step += 1
      steps_since_log += 1

      if step % every == 0 or step == total_steps or step == first_step + 1:
        means = flush_metrics()
        dt = time.time() - t_log
        rate = steps_since_log / max(dt, 1e-9)
        means.update(
          steps_per_sec=rate,
          videos_per_sec=rate * gbs,
          clips_per_sec=rate * gbs * config.model.num_segments,
          data_wait_fraction=wait_s / max(dt, 1e-9),
          epoch=step / steps_per_epoch,
          eta_minutes=(total_steps - step) / max(rate, 1e-9) / 60,
        )
        writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})
        logging.info(
          "step %d/%d loss %.4f acc %.3f lr %.4g |g| %.3g  %.1f clips/s  wait %.0f%%  ETA %.1f min",
          step,
          total_steps,
          means["loss"],
          means["accuracy"],
          means["learning_rate"],
          means["grad_norm"],
          means["clips_per_sec"],
          100 * means["data_wait_fraction"],
          means["eta_minutes"],
        )
        last = means
        t_log, wait_s, steps_since_log = time.time(), 0.0, 0

      val_top1 = None
      if eval_every and step % eval_every == 0 and step < total_steps:
        val_top1 = evaluate(final=False)["top1"]
      if val_top1 is not None or step == total_steps or (ckpt_every and step % ckpt_every == 0):
        save(val_top1)
  except NonFiniteLossError:
    mngr.wait_until_finished()
    raise
  finally:
    del train_iter
    preempt.restore()

  # ----------------------------------------------------------------------- final evaluation
  mngr.wait_until_finished()
  final_metrics = evaluate(final=True)
  writer.flush()
  mngr.close()
  return {"step": step, "start": start, "train": last, "eval": final_metrics}


def restore_for_eval(
  config: ml_collections.ConfigDict, workdir: str | None, *, devices: list[Any] | None = None
) -> tuple[Any, ModelDef, State, str, list[str] | None]:
  """(mesh, model definition, state, source, class names) for evaluation or prediction.

  The state comes from the workdir's latest checkpoint, else from `config.init_from` (a converted
  checkpoint); class names from the checkpoint's metadata where it has them.
  """
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  tx = optim.make_optimizer(config.train, optim.make_schedule(config.train, 1.0, 1))
  build = _build_fn(config.model, config.seed)
  abstract_state = jax.eval_shape(lambda: init_state(build, tx)[0])
  mdef = model_def(nnx.eval_shape(build))
  shardings = sharding_lib.state_shardings(abstract_state, mesh, config.mesh.fsdp_min_size)
  if workdir and os.path.isdir(os.path.join(workdir, "checkpoints")):
    mngr = ckpt_lib.make_manager(workdir, config.checkpoint)
    if mngr.latest_step() is not None:
      target = sharding_lib.with_shardings(abstract_state, shardings)
      state, meta = ckpt_lib.restore(mngr, target)
      mngr.close()
      source = f"{mngr.directory}@{meta['step']}"
      return mesh, mdef, state, source, meta.get("class_names")
  if not config.init_from:
    raise FileNotFoundError(
      f"nothing to evaluate: no checkpoint under {workdir}/checkpoints and no config.init_from"
    )
  state = jax.jit(lambda: init_state(build, tx)[0], out_shardings=shardings)()
  state, names = _load_converted(config, state, shardings, tx, None)
  return mesh, mdef, state, str(config.init_from), names


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Eval-only mode: the final multi-view evaluation of the latest checkpoint (or init_from)."""
  from dsanet_jax.data import pipeline

  mesh, mdef, state, source, class_names = restore_for_eval(config, workdir)
  _log_banner(config, mesh, workdir)
  data_names = list(pipeline.class_names(config))
  if class_names is not None and list(class_names) != data_names:
    raise ValueError(f"{source}: the checkpoint's class names differ from {config.data.name}'s")
  class_names = data_names
  metrics, predictions = run_evaluation(
    config, mesh, mdef, state, final=True, class_names=class_names
  )
  eval_lib.write_results(
    os.path.join(workdir, "eval"),
    metrics,
    predictions,
    class_names,
    extra={"step": int(jax.device_get(state["step"])), "source": source},
  )
  return metrics


def export_model(config: ml_collections.ConfigDict, workdir: str, out_dir: str) -> str:
  """Writes the workdir's latest model in the converted-checkpoint format (`config.init_from`).

  The result is read by `convert.checkpoint_io.load_model`, `--config.init_from=out_dir` and
  `python -m dsanet_jax.predict --checkpoint=out_dir`. Returns `out_dir`.
  """
  from dsanet_jax.convert import checkpoint_io

  _, _, state, source, class_names = restore_for_eval(config, workdir, devices=jax.devices()[:1])
  model = _build_fn(config.model, config.seed)()
  graph, _, _, rngs = split_model(model)
  params, stats = jax.device_get((state["params"], state["batch_stats"]))
  model = nnx.merge(graph, params, stats, rngs)
  meta = {"config": config.model.to_dict(), "class_names": class_names, "source": source}
  checkpoint_io.save_model(out_dir, model, meta)
  return out_dir
