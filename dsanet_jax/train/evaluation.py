"""A run's evaluations: the test/validation views, the Evaluator of each, periodic validation and
the final test of a training run (`Evaluations`), and the eval-only mode (`evaluate`, --mode=eval).
"""

import json
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from dsanet_jax.common import data_spec, paths
from dsanet_jax.train import checkpoint as ckpt_lib
from dsanet_jax.train import evaluator as eval_lib
from dsanet_jax.train import logging as log_lib
from dsanet_jax.train import restore
from dsanet_jax.train import sharding as sharding_lib
from dsanet_jax.train import state as state_lib
from dsanet_jax.train.state import ModelDef, model_state

State = dict[str, Any]


def _eval_views(config: ml_collections.ConfigDict, final: bool) -> tuple[int, int]:
  if final:
    return config.eval.num_segments, config.eval.num_crops
  return config.eval.val_num_segments, config.eval.val_num_crops


def _num_views(config: ml_collections.ConfigDict, final: bool) -> tuple[str, int, int]:
  u, c = _eval_views(config, final)
  return f"{u}x{c}", u, c


def _eval_crop_size(config: ml_collections.ConfigDict, final: bool) -> int | None:
  return None if final else min(config.data.crop_size, config.eval.short_side)


def make_evaluator(
  config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, mdef: ModelDef, *, final: bool
) -> eval_lib.Evaluator:
  """The Evaluator of the final test (`final`) or of periodic validation; keep it to reuse."""
  _, u_test, crops = _num_views(config, final)
  return eval_lib.Evaluator(
    mdef.eval_graph,
    mesh,
    model_segments=config.model.num_segments,
    num_segments=u_test,
    num_crops=crops,
    num_classes=config.model.num_classes,
    aggregate=config.eval.aggregate,
    grouping=config.eval.grouping,
    data=data_spec.from_config(config),
  )


def split_note(config: ml_collections.ConfigDict, split: str, present: int) -> str | None:
  """'2 of 19,906 listed videos present; 19,904 skipped {reasons}' if the prepared split lacks
  videos (the builders' `info.metadata['skipped']`), else None."""
  from dsanet_jax.data import pipeline

  meta = pipeline.load_builder(data_spec.from_config(config)).info.metadata or {}
  rec = (meta.get("skipped") or {}).get(split) or {}
  if not rec.get("total"):
    return None
  listed = int(rec.get("listed", present + rec["total"]))
  return (
    f"{present:,} of {listed:,} listed videos present; {int(rec['total']):,} skipped "
    f"{rec.get('by_reason', {})}"
  )


def run_evaluation(
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  mdef: ModelDef,
  state: State,
  *,
  final: bool,
  class_names: list[str] | None,
  evaluator: eval_lib.Evaluator | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Multi-view evaluation of `state` on `config.data.eval_split` (test or validation views).

  `evaluator` (from `make_evaluator`) is reused across calls, so that it compiles once.
  """
  from dsanet_jax.data import pipeline

  name, u_test, crops = _num_views(config, final)
  pc, pi = jax.process_count(), jax.process_index()
  split = config.data.eval_split
  sharding_lib.check_batch_layout(
    mesh, config.eval.batch_size, 0, process_count=pc, what="eval.batch_size"
  )
  ev = evaluator or make_evaluator(config, mesh, mdef, final=final)
  spec = data_spec.from_config(config)
  it = pipeline.make_eval_iterator(
    spec,
    split=split,
    local_batch_size=config.eval.batch_size // pc,
    process_index=pi,
    process_count=pc,
    num_segments=u_test,
    num_crops=crops,
    crop_size=_eval_crop_size(config, final),
  )
  expected = pipeline.num_examples(spec, split)
  note = split_note(config, split, expected)
  if note:
    logging.warning("eval split %r is incomplete: %s", split, note)
  t0 = time.time()
  metrics, predictions = ev.run(model_state(state, mdef), it, expected_videos=expected)
  metrics["views"] = name
  metrics["eval_seconds"] = time.time() - t0
  logging.info(
    "eval %s (%s views, %d videos): top1 %.4f top5 %.4f mAP %.4f in %.1fs",
    split,
    name,
    metrics["num_videos"],
    metrics["top1"],
    metrics["top5"],
    metrics["mAP"],
    metrics["eval_seconds"],
  )
  return metrics, predictions


def stored_results(path: str, step: int) -> dict[str, Any] | None:
  """The final results of a finished run at `step` (read by process 0, agreed by all), or None."""
  res = None
  if jax.process_index() == 0 and paths.resolve(path).exists():
    stored = json.loads(paths.resolve(path).read_text())
    res = stored if stored.get("step") == step else None
  if jax.process_count() > 1:
    found = bool(multihost_utils.broadcast_one_to_all(np.int32(res is not None)))
    res = (res or {"step": step, "results": path}) if found else None
  return res


class Evaluations:
  """Periodic validation and the final test of a run: each Evaluator is made (and compiled) once.

  The final test's step compiles in a background thread while training runs (without it, the run
  sat silent for ~7 s of compilation between the last save and the test result).
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh,
    mdef: ModelDef,
    writer: Any,
    class_names: list[str] | None,
    workdir: str,
  ) -> None:
    self.config, self.mesh, self.mdef, self.writer = config, mesh, mdef, writer
    self.class_names = class_names
    self.results_path = str(paths.resolve(workdir) / "eval" / "results.json")
    self.checkpoints = ckpt_lib.checkpoint_dir(workdir)
    self._evaluators: dict[bool, eval_lib.Evaluator] = {}
    self._compiling: threading.Thread | None = None

  def evaluator(self, final: bool) -> eval_lib.Evaluator:
    if final not in self._evaluators:
      self._evaluators[final] = make_evaluator(self.config, self.mesh, self.mdef, final=final)
    return self._evaluators[final]

  def precompile_final(self, state: State) -> None:
    """Starts compiling the final test's step (shapes and shardings of `state`) in a thread."""
    c = self.config
    _, u_test, crops = _num_views(c, True)
    s = c.eval.crop_size
    local = jax.ShapeDtypeStruct(
      (c.eval.batch_size // jax.process_count(), crops, u_test, c.data.num_frames, s, s, 3),
      jnp.uint8,  # the eval pipeline's video (normalised in the step)
    )
    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=x.sharding if x.committed else None
      ),
      model_state(state, self.mdef),
    )
    ev = self.evaluator(True)
    self._compiling = threading.Thread(
      target=ev.compile, args=(abstract, local), name="compile_final_eval", daemon=True
    )
    self._compiling.start()

  def periodic(self, state: State, step: int, total_steps: int) -> float | None:
    """Validation top-1 at `train.eval_every_steps` (not at the last step), else None."""
    every = self.config.train.eval_every_steps
    if every and step % every == 0 and step < total_steps:
      return self(state, step, final=False)["top1"]
    return None

  def __call__(self, state: State, step: int, *, final: bool) -> dict[str, Any]:
    if final and self._compiling is not None:
      self._compiling.join()
    metrics, predictions = run_evaluation(
      self.config,
      self.mesh,
      self.mdef,
      state,
      final=final,
      class_names=self.class_names,
      evaluator=self.evaluator(final),
    )
    prefix, v = ("test" if final else "val"), metrics["views"]
    keys = ("top1", "top5", "mAP", "mean_class_accuracy")
    self.writer.write_scalars(step, {f"{prefix}/{k}@{v}": metrics[k] for k in keys})
    if final:
      path = eval_lib.write_results(
        str(paths.resolve(self.results_path).parent),
        metrics,
        predictions,
        self.class_names,
        extra={
          "step": step,
          "split": self.config.data.eval_split,
          "checkpoint": f"{self.checkpoints}@{step}",
        },
      )
      logging.info("results: %s", path)
    return metrics


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Eval-only mode: the test views of the latest checkpoint (or init_from) on
  `config.data.eval_split`, written to `WORKDIR/eval/<split>_<U>x<C>_step<N>/` (the final test of
  a training run, `eval/results.json`, is left alone). Returns the metrics with `results` (path)."""
  mesh = sharding_lib.make_mesh(config.mesh)
  loaded = state_lib.load(config, mesh, purpose="eval", workdir=workdir)
  config = loaded.config
  log_lib.log_banner(config, mesh, workdir)
  class_names = restore.dataset_class_names(config)
  restore.check_class_names(loaded.class_names, class_names, loaded.source)
  metrics, predictions = run_evaluation(
    config, mesh, loaded.mdef, loaded.state, final=True, class_names=class_names
  )
  split, step = config.data.eval_split, loaded.step
  out_dir = str(paths.resolve(workdir) / "eval" / f"{split}_{metrics['views']}_step{step}")
  metrics["results"] = eval_lib.write_results(
    out_dir,
    metrics,
    predictions,
    class_names,
    extra={"step": step, "split": split, "checkpoint": loaded.source},
  )
  return metrics
