"""Orbax checkpoints of the train state: async saves, keep last k + best by val top-1, restore.

A checkpoint `WORKDIR/checkpoints/<step>/` holds two items:
  state: `{"params", "batch_stats", "opt_state", "step"}` (nnx.State / optax pytrees of arrays);
  meta:  JSON (`step`, `config`, `class_names`, `val_top1` where evaluated).
The data position is the step: the pipeline's `start_step` reproduces the order from there.
Restores always go through an abstract target with shardings, so a checkpoint written on one device
count restores onto another. Readers (eval, predict, export, and resume's restore) open the
directory read-only: no temp-directory clean-up, no deletions, so an evaluation beside a running
training cannot remove its in-flight save.
"""

import os
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

BEST_METRIC = "val_top1"


ITEM_HANDLERS = {"state": ocp.PyTreeCheckpointHandler, "meta": ocp.JsonCheckpointHandler}


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def open_read_only(workdir: str) -> ocp.CheckpointManager:
  """A read-only CheckpointManager over `WORKDIR/checkpoints` (saves, deletions, clean-up off)."""
  return ocp.CheckpointManager(
    checkpoint_dir(workdir),
    options=ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0),
    item_handlers={k: h() for k, h in ITEM_HANDLERS.items()},
  )


def make_manager(workdir: str, ckpt_cfg: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """The writer: CheckpointManager over `WORKDIR/checkpoints` keeping the last k and the best by
  val top-1 (it removes leftover temp directories of interrupted saves when created)."""
  policies = [cm.LatestN(n=max(int(ckpt_cfg.keep), 1))]
  if ckpt_cfg.keep_best:
    policies.append(
      cm.BestN(
        get_metric_fn=lambda m: m[BEST_METRIC],
        n=int(ckpt_cfg.keep_best),
        keep_checkpoints_without_metrics=False,
      )
    )
  options = ocp.CheckpointManagerOptions(
    enable_async_checkpointing=bool(ckpt_cfg.async_save),
    preservation_policy=cm.AnyPreservationPolicy(policies),
    # The trainer decides when to save (every N steps, evaluations, the end, SIGTERM).
    save_decision_policy=cm.FixedIntervalPolicy(1),
    cleanup_tmp_directories=True,
  )
  return ocp.CheckpointManager(
    checkpoint_dir(workdir),
    options=options,
    item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
  )


def save(
  mngr: ocp.CheckpointManager,
  step: int,
  state: Any,
  meta: dict[str, Any],
  *,
  metrics: dict[str, float] | None = None,
) -> None:
  """Starts an (async) save of `state` and `meta` at `step`; no-op if that step exists."""
  if step in mngr.all_steps():
    return
  mngr.save(
    step,
    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    metrics=metrics,
    force=True,
  )


def restore(
  mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None
) -> tuple[Any, dict[str, Any]]:
  """Restores (state, meta) at `step` (default latest) onto `abstract_state`'s shardings.

  `abstract_state` may hold only some of the stored items (e.g. params, batch_stats and step for
  evaluation): the rest is not read.
  """
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {mngr.directory}")
  r = mngr.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(
        abstract_state,
        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
        partial_restore=True,
      ),
      meta=ocp.args.JsonRestore(),
    ),
  )
  return r.state, dict(r.meta)
