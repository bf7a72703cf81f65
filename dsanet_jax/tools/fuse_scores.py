"""Score fusion of finished runs: the paper's (4+8)x8x3 K400 row averages two models' scores.

  python -m dsanet_jax.tools.fuse_scores RUN_A RUN_B [RUN_C ...] [--weights=1,1] [--softmax] \
      [--json]

Each RUN is a workdir (its `eval/predictions.npz`), an `eval/` directory or the .npz itself, as
`evaluator.write_results` writes it: `video_id` [N], `label` [N], `scores` [N, K] (the video's
view-averaged scores). Videos are aligned by id; runs with different video sets, labels or class
lists (`class_names` in the .npz or in `results.json` beside it, else the class count) are refused
with the differences listed. The fused score of a video is the weighted mean of the runs' scores
(`--softmax`: of their softmax probabilities). Prints top-1 and top-5; `--json` one object
{"top1", "top5", "mean_class_accuracy", "num_videos", "num_classes", "runs", "weights"}.
"""

import io
import json
import os
from collections.abc import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from absl import app, flags

from dsanet_jax.common import paths
from dsanet_jax.train import evaluator


def define_flags() -> None:
  """The command line (defined only when run as a program, so that the module imports freely)."""
  flags.DEFINE_list("weights", None, "One weight per run (default: equal).")
  flags.DEFINE_bool("softmax", False, "Average softmax probabilities, not raw scores.")
  flags.DEFINE_bool("json", False, "Print one JSON object.")


def predictions_path(run: str) -> str:
  """The predictions file of a run given as a workdir, its eval/ dir or the .npz path."""
  root = paths.resolve(run)
  for path in (root, root / "predictions.npz", root / "eval" / "predictions.npz"):
    if path.is_file():
      return str(path)
  raise FileNotFoundError(
    f"{run}: no predictions file (looked for {run}, {run}/predictions.npz and "
    f"{run}/eval/predictions.npz; a run writes them at its final evaluation)"
  )


def load_run(run: str) -> dict:
  """{'path', 'ids' [N] str, 'label' int64 [N], 'scores' f64 [N, K], 'class_names' list|None}."""
  path = predictions_path(run)
  with np.load(io.BytesIO(paths.resolve(path).read_bytes()), allow_pickle=False) as f:
    missing = {"video_id", "label", "scores"} - set(f.files)
    if missing:
      raise ValueError(f"{path}: missing arrays {sorted(missing)} (has {sorted(f.files)})")
    ids = [str(v) for v in f["video_id"]]
    label = np.asarray(f["label"], np.int64)
    scores = np.asarray(f["scores"], np.float64)
    names = [str(n) for n in f["class_names"]] if "class_names" in f.files else None
  if names is None:
    results = paths.resolve(path).parent / "results.json"
    if results.is_file():
      names = json.loads(results.read_text()).get("class_names")
  if len(set(ids)) != len(ids):
    raise ValueError(f"{path}: video ids repeat ({len(ids) - len(set(ids))} duplicates)")
  if scores.ndim != 2 or scores.shape[0] != len(ids) or label.shape != (len(ids),):
    raise ValueError(
      f"{path}: scores {scores.shape}, label {label.shape} and video_id [{len(ids)}] disagree"
    )
  return {"path": path, "ids": ids, "label": label, "scores": scores, "class_names": names}


def _listed(items: Sequence[str], limit: int = 10) -> str:
  items = sorted(items)
  more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
  return ", ".join(repr(i) for i in items[:limit]) + more


def check_compatible(a: dict, b: dict) -> None:
  """Raises ValueError listing what differs between two loaded runs (videos, classes, labels)."""
  only_a, only_b = set(a["ids"]) - set(b["ids"]), set(b["ids"]) - set(a["ids"])
  if only_a or only_b:
    raise ValueError(
      f"different video sets: {len(only_a)} only in {a['path']}: [{_listed(only_a)}]; "
      f"{len(only_b)} only in {b['path']}: [{_listed(only_b)}]"
    )
  ka, kb = a["scores"].shape[1], b["scores"].shape[1]
  na, nb = a["class_names"], b["class_names"]
  if na is not None and nb is not None and list(na) != list(nb):
    diff = [f"{i}: {x!r} vs {y!r}" for i, (x, y) in enumerate(zip(na, nb)) if x != y]
    raise ValueError(
      f"different class lists ({len(na)} in {a['path']}, {len(nb)} in {b['path']}); "
      f"differing positions: {diff[:10]}"
      + (f"; only in the first: {_listed(set(na) - set(nb))}" if set(na) - set(nb) else "")
      + (f"; only in the second: {_listed(set(nb) - set(na))}" if set(nb) - set(na) else "")
    )
  if ka != kb:
    raise ValueError(f"different class counts: {ka} in {a['path']}, {kb} in {b['path']}")
  lb = dict(zip(b["ids"], b["label"].tolist()))
  bad = [v for v, y in zip(a["ids"], a["label"].tolist()) if lb[v] != y]
  if bad:
    raise ValueError(f"{len(bad)} videos have different labels in the two runs: [{_listed(bad)}]")


def fuse(
  runs: Sequence[str], weights: Sequence[float] | None = None, softmax: bool = False
) -> dict:
  """Fused metrics of `runs` (module docstring); raises ValueError on incompatible runs."""
  if len(runs) < 2:
    raise ValueError(f"fuse_scores needs at least two runs, got {list(runs)}")
  weights = [1.0] * len(runs) if weights is None else [float(w) for w in weights]
  if len(weights) != len(runs) or sum(weights) <= 0 or min(weights) < 0:
    raise ValueError(f"--weights={weights}: need {len(runs)} non-negative weights, sum > 0")
  loaded = [load_run(r) for r in runs]
  for other in loaded[1:]:
    check_compatible(loaded[0], other)
  ids = sorted(loaded[0]["ids"])
  total = 0.0
  for run, w in zip(loaded, weights):
    order = {v: i for i, v in enumerate(run["ids"])}
    scores = run["scores"][[order[v] for v in ids]]
    total = total + w * (evaluator.softmax(scores) if softmax else scores)
  fused = total / sum(weights)
  order = {v: i for i, v in enumerate(loaded[0]["ids"])}
  labels = loaded[0]["label"][[order[v] for v in ids]]
  num_classes = fused.shape[1]
  m = evaluator.classification_metrics(
    fused, labels, num_classes, aggregate="probs" if softmax else "logits"
  )
  return {
    "top1": m["top1"],
    "top5": m["top5"],
    "mean_class_accuracy": m["mean_class_accuracy"],
    "num_videos": len(ids),
    "num_classes": num_classes,
    "runs": [r["path"] for r in loaded],
    "weights": weights,
  }


def main(argv: list[str]) -> None:
  runs = argv[1:]
  f = flags.FLAGS
  weights = None if f.weights is None else [float(w) for w in f.weights]
  out = fuse(runs, weights, softmax=f.softmax)
  if f.json:
    print(json.dumps(out))
    return
  for path, w in zip(out["runs"], out["weights"]):
    print(f"run {path} weight {w:g}")
  print(
    f"fused {out['num_videos']} videos, {out['num_classes']} classes: top1 {out['top1']:.4f} "
    f"top5 {out['top5']:.4f}"
  )


if __name__ == "__main__":
  define_flags()
  app.run(main)
