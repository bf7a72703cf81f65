"""Orbax checkpoints of the train state: async saves, keep last k + best by val top-1, restore.

A checkpoint `WORKDIR/checkpoints/<step>/` holds two items:
  state: `{"params", "batch_stats", "opt_state", "step"}` (nnx.State / optax pytrees of arrays);
  meta:  JSON (`step`, `config`, `class_names`, `val_top1` where evaluated).
The data position is the step: the pipeline's `start_step` reproduces the order from there.
Restores always go through an abstract target with shardings, so a checkpoint written on one device
count restores onto another.
"""

import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

BEST_METRIC = "val_top1"


def make_manager(workdir: str, ckpt_cfg: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  """CheckpointManager over `WORKDIR/checkpoints` keeping the last k and the best by val top-1."""
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
    os.path.join(os.path.abspath(workdir), "checkpoints"),
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
  """Restores (state, meta) at `step` (default latest) onto `abstract_state`'s shardings."""
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {mngr.directory}")
  r = mngr.restore(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
    ),
  )
  return r.state, dict(r.meta)


def abstract_like(state: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a concrete state."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
