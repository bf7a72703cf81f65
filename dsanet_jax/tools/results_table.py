r"""A markdown table of finished runs, in the form of mmaction2's model-zoo tables.

  python -m dsanet_jax.tools.results_table RUN [RUN ...]

RUN: a training workdir with `metrics.jsonl` (the trainer's logs) and `eval/results.json` (its
final multi-view evaluation). Columns:
- config: the run's label (`plot_runs.run_label`: workdir basename and the recorded model);
- U x T: snippets x frames per snippet of one training view (model.num_segments, data.num_frames);
- views: test snippets x crops of the final evaluation (results.json "views");
- top-1, top-5, mean-class accuracy (%): results.json;
- GMACs x views: GMACs of one view (logged at step 0, `gmacs_per_view`) x the number of model
  forward passes per video (results.json "passes_per_video" = crops x eval.num_segments / U);
- params: `num_params` logged at step 0;
- steps: the evaluated checkpoint's step (results.json "step");
- train time: the sum over the logged intervals of steps / `train/steps_per_sec` (compilation,
  checkpoints and periodic validation included; start-up before the first step and the time lost
  to an interrupted attempt of a resumed run are not).
"""

import json
import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # clu (the metric writers) imports TensorFlow

from absl import app

from dsanet_jax.common import paths
from dsanet_jax.tools.plot_runs import Run, load_run, load_series, run_label

COLUMNS = (
  "config",
  "U x T",
  "views",
  "top-1",
  "top-5",
  "mean-class acc.",
  "GMACs x views",
  "params",
  "steps",
  "train time",
)


def read_results(run: Run) -> dict[str, Any]:
  """The run's `eval/results.json` (FileNotFoundError naming the file if it is missing)."""
  path = paths.resolve(run.path) / "eval" / "results.json"
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no final evaluation (has the run finished?)")
  return json.loads(path.read_text())


def train_seconds(run: Run) -> float | None:
  """Training wall-time (see the module docstring); None if the run logged no steps_per_sec."""
  series = load_series(run)
  if "train/steps_per_sec" not in series:
    return None
  steps, rates = series["train/steps_per_sec"]
  prev = 0
  total = 0.0
  for s, r in zip(steps, rates):
    total += (int(s) - prev) / max(float(r), 1e-12)
    prev = int(s)
  return total


def _pct(x: float | None) -> str:
  return "-" if x is None else f"{100 * x:.1f}"


def _duration(seconds: float | None) -> str:
  if seconds is None:
    return "-"
  m, s = divmod(round(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def table_row(run_dir: str) -> dict[str, str]:
  """One run -> the table's cells by column name."""
  run = load_run(run_dir)
  res = read_results(run)
  first = {}
  for k, (_, values) in load_series(run).items():
    if k in ("num_params", "gmacs_per_view"):
      first[k] = float(values[0])
  cfg = run.config or {}
  ut = "-"
  if cfg:
    ut = f"{cfg['model']['num_segments']}x{cfg['data']['num_frames']}"
  gmacs = first.get("gmacs_per_view")
  params = first.get("num_params")
  return {
    "config": run_label(run),
    "U x T": ut,
    "views": str(res.get("views", "-")),
    "top-1": _pct(res.get("top1")),
    "top-5": _pct(res.get("top5")),
    "mean-class acc.": _pct(res.get("mean_class_accuracy")),
    "GMACs x views": "-" if gmacs is None else f"{gmacs:.4g} x {res.get('passes_per_video', '?')}",
    "params": "-" if params is None else f"{params / 1e6:.2f}M",
    "steps": str(res.get("step", "-")),
    "train time": _duration(train_seconds(run)),
  }


def results_table(runs: list[str]) -> str:
  """The markdown table (header, separator, one row per run)."""
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  for r in runs:
    row = table_row(r)
    lines.append("| " + " | ".join(row[c] for c in COLUMNS) + " |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  runs = argv[1:]
  if not runs:
    raise app.UsageError("give one or more RUN directories (finished training workdirs)")
  print(results_table(runs))


if __name__ == "__main__":
  app.run(main)
