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

from dsanet_jax.train import checkpoint as ckpt_lib
from dsanet_jax.train import evaluator as eval_lib
from dsanet_jax.train import logging as log_lib
from dsanet_jax.train import optim
from dsanet_jax.train import sharding as sharding_lib
from dsanet_jax.train import state as state_lib
from dsanet_jax.train.state import ModelDef, fresh_rngs, model_state

State = dict[str, Any]


# ===================================================================================== pieces


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


def count_params(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


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


def _meta(
  config: ml_collections.ConfigDict,
  step: int,
  class_names: list[str] | None,
  extra: dict[str, Any] | None = None,
  layout: dict[str, Any] | None = None,
) -> dict[str, Any]:
  """A checkpoint's `meta` item: step, the full config, class names, the data layout, extras."""
  m = {"step": int(step), "config": json.loads(config.to_json_best_effort())}
  if class_names is not None:
    m["class_names"] = list(class_names)
  if layout is not None:
    m["data_layout"] = dict(layout)
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
  class_names = state_lib.dataset_class_names(config)
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
  mdef, _, shardings = state_lib.abstract_state(config, mesh, tx)

  # ----------------------------------------------------------------------- sharding
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
  loaded = state_lib.load(
    config,
    mesh,
    purpose="train",
    workdir=workdir,
    tx=tx,
    class_names=class_names,
    layout=state_lib.data_layout(config, num_train),
  )
  state, start, class_names = loaded.state, loaded.start, loaded.class_names
  mngr = ckpt_lib.make_manager(workdir, config.checkpoint)  # after the (read-only) restore
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
        extra={
          "step": step,
          "split": config.data.eval_split,
          "checkpoint": f"{mngr.directory}@{step}",
        },
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
      _meta(config, step, class_names, extra, loaded.data_layout),
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
  config: ml_collections.ConfigDict,
  workdir: str | None,
  *,
  devices: list[Any] | None = None,
  checkpoint: str | None = None,
) -> tuple[Any, ModelDef, State, str, list[str] | None]:
  """(mesh, model definition, eval state, source, class names): `state.load(purpose='eval')`."""
  mesh = sharding_lib.make_mesh(config.mesh, devices)
  loaded = state_lib.load(config, mesh, purpose="eval", workdir=workdir, checkpoint=checkpoint)
  return mesh, loaded.mdef, loaded.state, loaded.source, loaded.class_names


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Eval-only mode: the test views of the latest checkpoint (or init_from) on
  `config.data.eval_split`, written to `WORKDIR/eval/<split>_<U>x<C>_step<N>/` (the final test of
  a training run, `eval/results.json`, is left alone). Returns the metrics with `results` (path)."""
  mesh = sharding_lib.make_mesh(config.mesh)
  loaded = state_lib.load(config, mesh, purpose="eval", workdir=workdir)
  config = loaded.config
  _log_banner(config, mesh, workdir)
  class_names = state_lib.dataset_class_names(config)
  if None not in (loaded.class_names, class_names) and loaded.class_names != class_names:
    raise state_lib.StateError(
      f"{loaded.source}: the checkpoint's class names differ from {config.data.name}'s "
      "(a label order mismatch gives chance accuracy)"
    )
  metrics, predictions = run_evaluation(
    config, mesh, loaded.mdef, loaded.state, final=True, class_names=class_names
  )
  split, step = config.data.eval_split, loaded.step
  out_dir = os.path.join(workdir, "eval", f"{split}_{metrics['views']}_step{step}")
  metrics["results"] = eval_lib.write_results(
    out_dir,
    metrics,
    predictions,
    class_names,
    extra={"step": step, "split": split, "checkpoint": loaded.source},
  )
  return metrics
