r"""Training curves of one or more runs, one panel per metric, one line per run (a PNG).

  python -m dsanet_jax.tools.plot_runs RUN [RUN ...] --out=curves.png \
      [--metrics=train/loss,val/top1@4x1] [--x=step|epoch]

RUN: a training workdir (or its `metrics.jsonl`). Each metric is drawn against the step (or the
epoch, from the run's logged `train/epoch`). A metric name without "@VIEWS" takes the run's first
key that starts with NAME@ (e.g. `val/top1` -> `val/top1@4x1`). A resumed run logs some steps
twice; the last record of each step is kept. The legend names each run by its workdir's basename
and the model its recorded config describes (the trainer records the config, not its file name).
Uses matplotlib's Agg backend (no display needed).
"""

import dataclasses
import io
import json
import math
import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # clu (the metric writers) imports TensorFlow

import numpy as np
from absl import app, flags

from dsanet_jax.common import paths
from dsanet_jax.train.logging import read_jsonl

DEFAULT_METRICS = (
  "train/loss",
  "train/accuracy",
  "val/top1",
  "train/learning_rate",
  "train/clips_per_sec",
  "train/data_wait_fraction",
)


@dataclasses.dataclass(frozen=True)
class Run:
  """A run's metric records (in file order) and its recorded config (None if not recorded)."""

  path: str  # the workdir
  records: list[dict[str, Any]]
  config: dict[str, Any] | None


def metrics_path(run: str) -> str:
  """A workdir or a metrics.jsonl path -> the metrics.jsonl path (FileNotFoundError if absent)."""
  path = paths.resolve(run)
  path = path if run.endswith(".jsonl") else path / "metrics.jsonl"
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no metrics.jsonl (is {run} a training workdir?)")
  return str(path)


def load_run(run: str) -> Run:
  """Reads a run's `metrics.jsonl`; its config from the trainer's `hparams` record."""
  path = metrics_path(run)
  records = read_jsonl(path)
  config = None
  for rec in records:
    if rec.get("kind") == "hparams" and "config" in rec:
      config = json.loads(rec["config"])  # the last one (a resumed run may change nothing else)
  return Run(str(paths.resolve(path).parent), records, config)


def run_label(run: Run) -> str:
  """The workdir's basename and, where recorded, the model: 'viz_dsa (dsa i3d_resnet18 w8)'."""
  name = paths.resolve(run.path).name
  m = (run.config or {}).get("model")
  if not m:
    return name
  width = f" w{m['base_width']}" if m.get("base_width", 64) != 64 else ""
  return f"{name} ({m['aggregation']} {m['backbone']}{m['depth']}{width})"


def load_series(run: Run) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Every scalar metric of a run -> (steps int64 [S], values float64 [S]), steps increasing.

  Records with a "kind" (hparams, texts) are skipped; of a step logged twice (a resumed run), the
  last value wins. This is what `plot_runs` draws.
  """
  by_key: dict[str, dict[int, float]] = {}
  for rec in run.records:
    if "kind" in rec or "step" not in rec:
      continue
    for k, v in rec.items():
      if k in ("step", "time") or not isinstance(v, (int, float)):
        continue
      by_key.setdefault(k, {})[int(rec["step"])] = float(v)
  out = {}
  for k, d in by_key.items():
    steps = np.array(sorted(d), np.int64)
    out[k] = (steps, np.array([d[s] for s in steps], np.float64))
  return out


def resolve_metric(name: str, keys: list[str]) -> str | None:
  """`name` itself if logged, else the first logged key `name@...` (views suffix), else None."""
  if name in keys:
    return name
  matches = sorted(k for k in keys if k.startswith(name + "@"))
  return matches[0] if matches else None


def epochs_per_step(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> float:
  """From the logged `train/epoch` (epoch = step / steps_per_epoch)."""
  if "train/epoch" not in series:
    raise ValueError("--x=epoch needs train/epoch in metrics.jsonl; this run did not log it")
  steps, epochs = series["train/epoch"]
  ok = steps > 0
  return float(np.median(epochs[ok] / steps[ok]))


def plot_runs(runs: list[str], out: str, metrics: list[str], x: str = "step") -> dict[str, Any]:
  """Draws the curves into `out` (PNG). Returns {run label: {panel metric: (x, y) drawn}}."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  loaded = [load_run(r) for r in runs]
  cols = min(3, len(metrics))
  rows = math.ceil(len(metrics) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
  drawn: dict[str, Any] = {}
  resolved: dict[str, set[str]] = {m: set() for m in metrics}
  for run in loaded:
    series = load_series(run)
    label = run_label(run)
    scale = epochs_per_step(series) if x == "epoch" else 1.0
    drawn[label] = {}
    for ax, metric in zip(axes.flat, metrics):
      key = resolve_metric(metric, list(series))
      if key is None:
        continue
      steps, values = series[key]
      xs = steps * scale
      marker = "o" if len(steps) < 20 else None
      ax.plot(xs, values, label=label, marker=marker, markersize=4, linewidth=1.5)
      drawn[label][metric] = (xs, values)
      resolved[metric].add(key)
  for ax, metric in zip(axes.flat, metrics):
    ax.set_title(", ".join(sorted(resolved[metric])) or metric, fontsize=11)
    ax.set_xlabel(x)
    ax.grid(alpha=0.3)
    if not ax.lines:
      msg = f"no {metric} records" + ("\n(train.eval_every_steps=0?)" if "val/" in metric else "")
      ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes)
    elif metric.endswith("learning_rate"):
      ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
  for ax in list(axes.flat)[len(metrics) :]:
    ax.axis("off")
  handles, labels = axes.flat[0].get_legend_handles_labels()
  if not handles:  # the first panel may be empty: take the legend from any panel
    for ax in axes.flat:
      handles, labels = ax.get_legend_handles_labels()
      if handles:
        break
  fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 3), frameon=False)
  fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.6 * rows)))
  out_path = paths.resolve(out)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  fig.savefig(buf, dpi=110, format=out_path.suffix.lstrip(".") or "png")
  out_path.write_bytes(buf.getvalue())
  plt.close(fig)
  return drawn


def define_flags() -> None:
  """The command line's flags (defined when run as a program, so the module imports cleanly)."""
  flags.DEFINE_string("out", "curves.png", "Where to write the PNG.")
  flags.DEFINE_list("metrics", list(DEFAULT_METRICS), "Metrics, one panel each.")
  flags.DEFINE_enum("x", "step", ["step", "epoch"], "The x axis.")


def main(argv: list[str]) -> None:
  runs = argv[1:]
  if not runs:
    raise app.UsageError("give one or more RUN directories (training workdirs)")
  f = flags.FLAGS
  plot_runs(runs, f.out, list(f.metrics), f.x)
  print(f"wrote {f.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
