"""Orbax checkpoints of the train state: async saves, keep last k + best by val top-1, restore.

A checkpoint `WORKDIR/checkpoints/<step>/` holds two items:
  state: `{"params", "batch_stats", "opt_state", "step"}` (nnx.State / optax pytrees of arrays);
  meta:  JSON, a `CheckpointMeta` (`step`, `config`, `class_names`, `data_layout`, `val_top1`
         where evaluated).
The data position is the step: the pipeline's `start_step` reproduces the order from there.
Restores always go through an abstract target with shardings, so a checkpoint written on one device
count restores onto another. Readers (eval, predict, export, and resume's restore) open the
directory read-only: no temp-directory clean-up, no deletions, so an evaluation beside a running
training cannot remove its in-flight save.

Storage faults: the storage clients retry (TensorStore for the arrays, gcsfs for the small files on
`gs://`), and a save may take up to `checkpoint.save_timeout_s` to finish. A save that has not
finished by then is never marked finished (no `commit_success.txt`, or no rename locally), so no
reader lists it; the run stops with a `CheckpointWriteError` naming it and the last finished one.
"""

import dataclasses
import json
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as cm

from dsanet_jax.common import paths

BEST_METRIC = "val_top1"
# The exit status of a run stopped because a checkpoint could not be written (main.py).
WRITE_ERROR_EXIT = 5


ITEM_HANDLERS = {"state": ocp.PyTreeCheckpointHandler, "meta": ocp.JsonCheckpointHandler}


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
  """A checkpoint's `meta` item: its step and what made it (checked when it is read back)."""

  step: int
  config: dict[str, Any]  # the full config of the run that wrote it, as JSON
  class_names: list[str] | None = None
  data_layout: dict[str, Any] | None = None  # `restore.data_layout` of the run
  val_top1: float | None = None  # the validation top-1 at this step, where evaluated

  @classmethod
  def of(
    cls,
    config: ml_collections.ConfigDict,
    step: int,
    class_names: list[str] | None,
    data_layout: dict[str, Any] | None,
    val_top1: float | None = None,
  ) -> "CheckpointMeta":
    """The meta of a checkpoint the run of `config` writes at `step`."""
    names = None if class_names is None else list(class_names)
    layout = None if data_layout is None else dict(data_layout)
    cfg = json.loads(config.to_json_best_effort())
    return cls(int(step), cfg, names, layout, None if val_top1 is None else float(val_top1))

  def to_json(self) -> dict[str, Any]:
    """The stored JSON (fields that are None are left out)."""
    out: dict[str, Any] = {"step": self.step, "config": self.config}
    if self.class_names is not None:
      out["class_names"] = self.class_names
    if self.data_layout is not None:
      out["data_layout"] = self.data_layout
    if self.val_top1 is not None:
      out[BEST_METRIC] = self.val_top1
    return out

  @classmethod
  def from_json(cls, d: Any) -> "CheckpointMeta":
    """The meta of stored JSON; ValueError if it is not one (unknown keys are ignored)."""
    if not isinstance(d, dict) or "step" not in d:
      raise ValueError("no 'step' entry")
    return cls(
      int(d["step"]), d.get("config") or {}, d.get("class_names"), d.get("data_layout"),
      d.get(BEST_METRIC),
    )  # fmt: skip


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (storage unreachable or too slow): one line naming it, the
  last finished checkpoint and what to run next."""

  def __init__(self, step_dir: str, last_step: int | None, detail: str) -> None:
    last = (
      f"the last finished checkpoint is step {last_step}; rerun the same command to resume from it"
      if last_step is not None
      else "there is no finished checkpoint; rerun the same command to start again"
    )
    super().__init__(f"checkpoint {step_dir} was not written ({detail}); {last}")
    self.step_dir, self.last_step = step_dir, last_step


def storage_errors() -> tuple[type[BaseException], ...]:
  """What a failed save raises from the storage clients: Orbax's timeout (TimeoutError), gcsfs
  (aiohttp's connection errors are OSErrors; its HTTP errors), TensorStore (ValueError)."""
  from gcsfs.retry import HttpError

  return (OSError, ValueError, RuntimeError, HttpError)


def checkpoint_dir(workdir: str) -> str:
  return str(paths.resolve(workdir) / "checkpoints")


def checkpoint_steps(workdir: str | None) -> list[int]:
  """Steps of the workdir's finished checkpoints (`checkpoints/<step>/`), ascending.

  Finished as Orbax commits them: locally a save is written under a temporary name and renamed;
  on object storage it is written in place and `commit_success.txt` marks it finished, so a save
  cut off half-way is not listed.
  """
  if not workdir:
    return []
  d = epath.Path(checkpoint_dir(workdir))
  if not d.is_dir():
    return []
  return sorted(
    int(p.name)
    for p in d.iterdir()
    if p.name.isdigit() and p.is_dir() and ocp.path.step.is_path_finalized(p)
  )


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
    # A save not finished within this (storage stalled) fails and is never marked finished.
    async_options=ocp.AsyncOptions(timeout_secs=int(ckpt_cfg.save_timeout_s)),
  )
  return ocp.CheckpointManager(
    checkpoint_dir(workdir),
    options=options,
    item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
  )


def save(
  mngr: ocp.CheckpointManager,
  state: Any,
  meta: CheckpointMeta,
) -> None:
  """Starts an (async) save of `state` and `meta` at `meta.step`; no-op if that step exists."""
  if meta.step in mngr.all_steps():
    return
  metrics = None if meta.val_top1 is None else {BEST_METRIC: meta.val_top1}
  mngr.save(
    meta.step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta.to_json())
    ),
    metrics=metrics,
    force=True,
  )


def restore(
  mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None
) -> tuple[Any, CheckpointMeta]:
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
  return r.state, CheckpointMeta.from_json(dict(r.meta))
