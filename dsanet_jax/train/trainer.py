"""The training loop: one flat function in big_vision's manner, plus the pieces it is made of.

`train_and_evaluate(config, workdir)` runs, top to bottom:
  set-up -> mesh -> input -> model -> sharding -> update -> checkpoint -> evaluation -> loop.
The same code runs on one CPU and on a multi-host TPU/GPU slice: the batch is a global array
sharded over the mesh's ('data', 'fsdp') axes, parameters and optimiser state are replicated or
FSDP-sharded, and every process feeds its own shard of the data.

The train state is a dict of pytrees `{"params", "batch_stats", "opt_state", "step"}` (nnx.State and
optax state). Dropout randomness is not state: the model's RNG streams are re-seeded every step from
`fold_in(seed, step)`, so a resumed run draws the same masks as an uninterrupted one.

The jitted update is `step.make_train_step`. The loop's evaluations (periodic validation, the
final test) and --mode=eval live in `evaluation.py`; its log (step lines, banner, profile,
non-finite check) in `logging.py`, its metric writers in `writers.py`.
"""

import contextlib
import math
import queue
import signal
import threading
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils

from dsanet_jax.common import data_spec, paths
from dsanet_jax.models.flops import count_params
from dsanet_jax.train import checkpoint as ckpt_lib
from dsanet_jax.train import evaluation, optim, restore, writers
from dsanet_jax.train import logging as log_lib
from dsanet_jax.train import sharding as sharding_lib
from dsanet_jax.train import state as state_lib

# re-exported: callers catch trainer.NonFiniteLossError
from dsanet_jax.train.logging import NonFiniteLossError as NonFiniteLossError
from dsanet_jax.train.state import ModelDef, State
from dsanet_jax.train.step import make_train_step

# ===================================================================================== pieces


class _Preemption:
  """Records SIGTERM (pre-emption) and SIGINT (Ctrl-C) while the loop runs; a context manager.

  `requested(step)` agrees across processes: with several, an allgather every `every` steps (the
  same steps everywhere). A second Ctrl-C raises KeyboardInterrupt at once.

  The handler itself never logs: it may interrupt the main thread inside a log handler's write,
  and a write from the handler then fails as a reentrant call (a traceback on the console). It
  hands the signal's name to an announcer thread (`queue.SimpleQueue.put` is safe there), which
  prints the acknowledgement at once, waiting its turn for the stream.
  """

  def __init__(self, every: int) -> None:
    self.signal: str | None = None
    self.every = max(1, int(every))
    self._old: dict[int, Any] = {}
    self._names: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    self._announcer: threading.Thread | None = None

  def __enter__(self) -> "_Preemption":
    if threading.current_thread() is threading.main_thread():
      self._announcer = threading.Thread(
        target=self._announce, name="signal-announcer", daemon=True
      )
      self._announcer.start()
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._old[sig] = signal.signal(sig, self._handler)
    return self

  def __exit__(self, *exc: object) -> None:
    for sig, old in self._old.items():
      signal.signal(sig, old)
    self._old = {}
    if self._announcer is not None:
      self._names.put(None)
      self._announcer.join(timeout=10)
      self._announcer = None

  def _handler(self, signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if signum == signal.SIGINT and self.signal == "SIGINT":
      raise KeyboardInterrupt
    self.signal = name
    self._names.put(name)

  def _announce(self) -> None:
    while (name := self._names.get()) is not None:
      logging.warning(
        "%s received: saving a checkpoint at the current step (after any save in flight) and "
        "exiting%s",
        name,
        "; press Ctrl-C again to stop at once" if name == "SIGINT" else "",
      )

  def requested(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self.signal is not None
    if step % self.every:
      return False
    flags = multihost_utils.process_allgather(np.array([self.signal is not None], np.int32))
    return bool(np.any(flags))


def _model_info(config: ml_collections.ConfigDict, params: Any) -> dict[str, float]:
  """Parameter count and GMACs per view (the models' `flops.count_gmacs`), for the step-0 log."""
  info = {"num_params": float(count_params(params))}
  if not config.train.log_gmacs:
    return info
  try:
    from dsanet_jax.models import flops

    g = flops.count_gmacs(  # from the lowered HLO: no compile of a forward the run never uses
      config.model,
      num_frames=config.data.num_frames,
      crop_size=config.data.crop_size,
      xla_cost=False,
    )
    info["gmacs_per_view"] = float(g["gmacs_per_view"])
  except (KeyError, TypeError, ValueError, NotImplementedError) as e:
    logging.warning("could not compute GMACs (config.train.log_gmacs): %s", e)
  logging.info("model: %s", info)
  return info


def _steps(config: ml_collections.ConfigDict, num_train: int) -> tuple[float, int]:
  steps_per_epoch = num_train / config.train.global_batch_size
  if config.train.num_steps:
    return steps_per_epoch, int(config.train.num_steps)
  return steps_per_epoch, max(1, math.ceil(config.train.num_epochs * steps_per_epoch))


# ===================================================================================== the loop


class _Saver:
  """Checkpoints of the run (async; a state after a non-finite step is never saved).

  A save that fails (storage unreachable for longer than its clients retry, or slower than
  `checkpoint.save_timeout_s`) raises CheckpointWriteError naming it and the last finished one;
  it surfaces at the next save or wait, since saves run in the background.
  """

  def __init__(
    self,
    mngr: Any,
    config: ml_collections.ConfigDict,
    class_names: list[str] | None,
    data_layout: dict[str, Any] | None,
  ) -> None:
    self.mngr, self.config, self.class_names = mngr, config, class_names
    self.data_layout = data_layout
    self.finished: int | None = mngr.latest_step()  # the newest finished checkpoint
    self.pending: int | None = None  # the save in flight

  def due(self, step: int, total_steps: int, validated: bool) -> bool:
    every = self.config.checkpoint.every_steps
    return validated or step == total_steps or bool(every and step % every == 0)

  def save(
    self, step: int, state: State, log: log_lib.StepLog, val_top1: float | None = None
  ) -> None:
    log.flush()  # raises NonFiniteLossError before a bad state is saved
    meta = ckpt_lib.CheckpointMeta.of(
      self.config, step, self.class_names, self.data_layout, val_top1
    )
    with self._failing(step):  # Orbax first finishes the save in flight
      ckpt_lib.save(self.mngr, state, meta)
    if self.pending is not None:
      self.finished = self.pending
    self.pending = step

  def wait(self) -> None:
    """Waits for the save in flight (CheckpointWriteError if it failed)."""
    with self._failing(None):
      self.mngr.wait_until_finished()
    if self.pending is not None:
      self.finished, self.pending = self.pending, None

  @contextlib.contextmanager
  def _failing(self, step: int | None) -> Any:
    try:
      yield
    except ckpt_lib.storage_errors() as e:
      bad = self.pending if self.pending is not None else step
      step_dir = str(paths.resolve(self.mngr.directory) / str(bad))
      if type(e) is TimeoutError:  # Orbax: the save outlasted its timeout
        timeout = self.config.checkpoint.save_timeout_s
        detail = f"not finished within checkpoint.save_timeout_s={timeout} s"
      else:
        detail = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
      self.pending = None
      raise ckpt_lib.CheckpointWriteError(step_dir, self.finished, detail) from e


def _compile(train_step: Any, state: State, batch: dict[str, jax.Array]) -> float:
  """Compiles the train step for these inputs (the jit's cache keeps it); returns seconds."""
  t0 = time.time()
  train_step.lower(state, batch).compile()
  return time.time() - t0


def _finished(
  saver: _Saver, evaluate: evaluation.Evaluations, state: State, step: int, start: str
) -> dict[str, Any]:
  """The run had already reached its last step: its stored results, else the final test."""
  saver.wait()
  res = evaluation.stored_results(evaluate.results_path, step)
  if res is not None:
    logging.info("training already finished at step %d; results in %s", step, evaluate.results_path)
    return {"step": step, "start": start, "train": {}, "eval": res}
  return {"step": step, "start": start, "train": {}, "eval": evaluate(state, step, final=True)}


def _log_input(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, num_train: int, spe: float, total: int
) -> None:
  gbs, pc = config.train.global_batch_size, jax.process_count()
  logging.info(
    "%d training videos, global batch %d (%d per process, %d per device), %.2f steps/epoch, "
    "%d steps",
    num_train,
    gbs,
    gbs // pc,
    gbs // mesh.devices.size,
    spe,
    total,
  )
  if config.train.num_steps:
    sched = optim.schedule_steps_per_epoch(config.train, spe, total)
    logging.info(
      "train.num_steps=%d: the learning-rate schedule's %g epochs are rescaled to the run "
      "(%.2f steps each; the data's epoch is %.2f steps)",
      total,
      config.train.num_epochs,
      sched,
      spe,
    )


def _input_sizes(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
) -> tuple[int, float, int]:
  """Checks the train (micro-)batch layout; returns (training videos, steps/epoch, steps)."""
  from dsanet_jax.data import pipeline

  gbs, acc = config.train.global_batch_size, config.train.grad_accum_steps
  if gbs % acc:
    raise ValueError(f"train.global_batch_size={gbs} not divisible by grad_accum_steps={acc}")
  sharding_lib.check_batch_layout(
    mesh,
    gbs // acc,
    config.model.bn_group_size,
    process_count=jax.process_count(),
    what="train micro-batch",
  )
  spec = data_spec.from_config(config)
  pipeline.check_frame_rate(spec)
  num_train = config.train.num_train_examples or pipeline.num_examples(spec, spec.train_split)
  return num_train, *_steps(config, num_train)


def _model_parts(
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  steps_per_epoch: float,
  total_steps: int,
) -> tuple[optax.Schedule, optax.GradientTransformation, ModelDef, Any]:
  """(schedule, optimiser, model definition, train-state shardings on `mesh`)."""
  schedule = optim.make_schedule(config.train, steps_per_epoch, total_steps)
  tx = optim.make_optimizer(config.train, schedule)
  mdef, _, shardings = state_lib.abstract_state(config, mesh, tx)
  return schedule, tx, mdef, shardings


def _write_start(config: ml_collections.ConfigDict, writer: Any, state: State, step: int) -> None:
  """At step 0 (process 0): parameter count, GMACs and the config to the metric writers."""
  if step == 0 and jax.process_index() == 0:
    writer.write_scalars(0, _model_info(config, state["params"]))
    writer.write_hparams({"config": config.to_json_best_effort()})


def _final(
  saver: _Saver,
  evaluate: evaluation.Evaluations,
  state: State,
  step: int,
  start: str,
  last: dict[str, float],
) -> dict[str, Any]:
  """After the last step: waits for the last save, then the final test."""
  saver.wait()
  return {"step": step, "start": start, "train": last, "eval": evaluate(state, step, final=True)}


def _jit_train_step(
  config: ml_collections.ConfigDict,
  mdef: ModelDef,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  shardings: Any,
  mesh: jax.sharding.Mesh,
) -> Any:
  """The jitted train step: state sharded by `shardings` (donated), batch over the mesh."""
  return jax.jit(
    make_train_step(
      mdef,
      tx,
      schedule,
      seed=config.seed,
      grad_accum_steps=config.train.grad_accum_steps,
      label_smoothing=config.train.label_smoothing,
      data=data_spec.from_config(config),
    ),
    in_shardings=(shardings, sharding_lib.batch_sharding(mesh)),
    out_shardings=(shardings, sharding_lib.replicated(mesh)),
    donate_argnums=(0,),
  )


def _next_batch(it: Any, sharding: Any) -> tuple[dict[str, jax.Array], float]:
  """The next process-local train batch as global arrays (video, label int32, mask bool), and
  the seconds spent waiting for it."""
  t0 = time.time()
  local = next(it)
  mask = local.get("mask", np.ones(len(local["label"]), bool))
  host = {
    "video": local["video"],
    "label": np.asarray(local["label"], np.int32),
    "mask": np.asarray(mask, bool),
  }
  batch = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in host.items()}
  return batch, time.time() - t0


def _train_iterator(config: ml_collections.ConfigDict, step: int) -> Any:
  from dsanet_jax.data import pipeline

  pc = jax.process_count()
  return pipeline.make_train_iterator(
    data_spec.from_config(config),
    local_batch_size=config.train.global_batch_size // pc,
    process_index=jax.process_index(),
    process_count=pc,
    start_step=step,
  )


def _preempted(
  saver: _Saver, state: State, step: int, start: str, log: log_lib.StepLog, why: str | None
) -> dict[str, Any]:
  saver.save(step, state, log)
  saver.wait()
  why = why or "a signal to another process"
  logging.warning("pre-empted: checkpoint saved at step %d (%s); rerun to resume", step, why)
  return {"step": step, "start": start, "train": log.last, "eval": None, "preempted": why}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains with periodic validation, checkpoints, then runs the final multi-view evaluation.

  Returns a summary: `{"step", "start", "train": last logged metrics, "eval": final metrics}`,
  with `"preempted": "SIGTERM" | "SIGINT" | ...` when a signal stopped it (after saving). Raises
  NonFiniteLossError on a non-finite loss. The checkpoint manager (after its pending saves), the
  metric writers and the profiler are closed on every exit.
  """
  # ----------------------------------------------------------------------- set-up
  workdir = str(paths.resolve(workdir))
  is_main = jax.process_index() == 0
  with contextlib.ExitStack() as closing:
    # --------------------------------------------------------------------- mesh
    mesh = sharding_lib.make_mesh(config.mesh)
    log_lib.log_banner(config, mesh, workdir)

    # --------------------------------------------------------------------- input
    num_train, steps_per_epoch, total_steps = _input_sizes(config, mesh)
    class_names = restore.dataset_class_names(config)
    _log_input(config, mesh, num_train, steps_per_epoch, total_steps)

    # --------------------------------------------------------------------- model
    schedule, tx, mdef, shardings = _model_parts(config, mesh, steps_per_epoch, total_steps)

    # --------------------------------------------------------------------- sharding and update
    train_step = _jit_train_step(config, mdef, tx, schedule, shardings, mesh)

    # --------------------------------------------------------------------- checkpoint
    loaded = state_lib.load(
      config,
      mesh,
      purpose="train",
      workdir=workdir,
      tx=tx,
      class_names=class_names,
      layout=restore.data_layout(config, num_train),
    )
    state, start, class_names = loaded.state, loaded.start, loaded.class_names
    # after the (read-only) restore; closed on every exit, after any save in flight
    mngr = closing.enter_context(
      contextlib.closing(ckpt_lib.make_manager(workdir, config.checkpoint))
    )
    step = int(jax.device_get(state["step"]))
    # metrics.jsonl keeps the records up to the restored step (later ones are replayed)
    writer = writers.create_writer(workdir, is_main=is_main, resume_step=step if step else -1)
    writer = closing.enter_context(contextlib.closing(writer))
    saver = _Saver(mngr, config, class_names, loaded.data_layout)

    # --------------------------------------------------------------------- evaluation
    evaluate = evaluation.Evaluations(config, mesh, mdef, writer, class_names, workdir)
    if step >= total_steps:
      return _finished(saver, evaluate, state, step, start)

    # --------------------------------------------------------------------- loop
    _write_start(config, writer, state, step)
    # tf.data prefetches in its own threads; a Python prefetch thread calling into the iterator
    # can deadlock with the iterator's destruction (seen with several processes), so none here.
    train_iter = _train_iterator(config, step)
    log = log_lib.StepLog(config, writer, total_steps, steps_per_epoch, step)
    profile = closing.enter_context(log_lib.Profile(config.train.profile_steps, workdir))
    evaluate.precompile_final(state)
    try:
      with _Preemption(config.train.preemption_check_every_steps) as preempt:
        while step < total_steps:
          if preempt.requested(step):
            return _preempted(saver, state, step, start, log, preempt.signal)
          batch, wait_s = _next_batch(train_iter, sharding_lib.batch_sharding(mesh))
          if log.compile_s is None:
            log.compiled(_compile(train_step, state, batch))
          profile.before(step)
          with jax.profiler.StepTraceAnnotation("train", step_num=step + 1):
            state, metrics = train_step(state, batch)
          step += 1
          profile.after(step, metrics)
          log.add(step, metrics, wait_s)  # and a log line at log steps
          val_top1 = evaluate.periodic(state, step, total_steps)
          if saver.due(step, total_steps, val_top1 is not None):
            saver.save(step, state, log, val_top1)
    finally:
      del train_iter

    # --------------------------------------------------------------------- final evaluation
    return _final(saver, evaluate, state, step, start, log.last)
