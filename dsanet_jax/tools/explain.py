r"""What DSA does on a video: its prediction beside the snippets' average, and its kernels.

  python -m dsanet_jax.tools.explain --config=CFG --checkpoint=DIR --video=clip.mp4[,b.mp4] \
      --out=explain.png [--json]

DIR: a training workdir (its latest checkpoint) or a converted checkpoint (`config.init_from`).
The video goes through the evaluation's test views (eval.num_segments = U_test snippets x
eval.num_crops crops, cut into V = crops x U_test/U passes of the model's U snippets). Shown:
- the video-level top-5 of the network (views aggregated as `config.eval.aggregate`);
- the top-5 of each of the U_test snippets alone (time order, crops aggregated), by the same network
  with every DSA module replaced by the identity, and their average (the paper's "average
  prediction": the mean of the U snippets' logits per view, then the views aggregated);
- for each DSA module, its generated kernels (one per view and channel, softmax over the L=3 taps
  previous / current / next snippet): mean and standard deviation over channels and crops, per
  snippet (a tap that would read past the first or last snippet of a pass reads zero padding and
  counts 0 there), over all views, the mean weight left at a pass's first and last snippet, and the
  off-centre weight (k_prev + k_next, mean over views and channels). The video's `off_centre` is
  the mean over the modules; with several videos, `off_centre` is their mean.
`--json` prints these numbers as one JSON object instead of the text summary.
"""

import io
import json
import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from dsanet_jax.common import data_spec, paths
from dsanet_jax.models.dsa import DSA
from dsanet_jax.train import evaluator as eval_lib
from dsanet_jax.train import inference

TOP_K = 5


def tap_names(num_taps: int) -> list[str]:
  """Tap j reads snippet u + j - L//2: ['prev', 'current', 'next'] for L = 3."""
  if num_taps == 3:
    return ["prev", "current", "next"]
  return [f"{j - num_taps // 2:+d}" for j in range(num_taps)]


def load_eval_model(
  config: ml_collections.ConfigDict, checkpoint: str
) -> tuple[nnx.Module, list[str], str]:
  """(eval-mode model, class names, source) from a training workdir or a converted checkpoint
  (the predictor's loader, `inference.load_predictor`)."""
  pred = inference.load_predictor(config, checkpoint=checkpoint)
  return pred.model, list(pred.class_names), pred.loaded.source


def module_name(path: tuple[Any, ...]) -> str:
  """('backbone', 'layer2', 1, 'dsa') -> 'backbone.layer2[1].dsa'."""
  out = ""
  for p in path:
    out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
  return out


@nnx.jit
def _forward_with_kernels(model: nnx.Module, x: jax.Array) -> tuple[jax.Array, Any]:
  return nnx.capture(model, nnx.Intermediate)(x)


@nnx.jit
def _snippet_logits(model: nnx.Module, x: jax.Array) -> jax.Array:
  return model.cls_head(model.features(x))


def run_network(model: nnx.Module, views: jax.Array) -> dict[str, Any]:
  """Eval-mode forward passes on views f32 [V, U, T, H, W, 3].

  Returns `logits` f32 [V, K] (the network), `snippet_logits` f32 [V, U, K] (every DSA module the
  identity) and `kernels` {module name: f32 [V, C', L]} (the network's generated kernels).
  """
  v, u = views.shape[:2]
  recording = nnx.view(model, only=DSA, record_kernels=True, raise_if_not_found=False)
  logits, inter = _forward_with_kernels(recording, views)
  kernels = {}
  for path, var in nnx.to_flat_state(inter):
    (k,) = var.get_value()  # one call per forward
    kernels[module_name(path[:-1])] = np.asarray(k, np.float32)
  identity = nnx.view(model, only=DSA, aggregate=False, raise_if_not_found=False)
  snippets = _snippet_logits(identity, views).reshape(v, u, -1)
  return {
    "logits": np.asarray(logits, np.float32),
    "snippet_logits": np.asarray(snippets, np.float32),
    "kernels": kernels,
  }


def _top(probs: np.ndarray, names: list[str]) -> list[list[Any]]:
  order = np.argsort(-probs)[:TOP_K]
  return [[names[i], float(probs[i])] for i in order]


def kernel_stats(k4: np.ndarray, num_segments: int) -> dict[str, Any]:
  """One module's kernels f32 [crops, P, C', L] (view = crop * P + pass) -> its statistics."""
  taps = k4.shape[-1]
  names = tap_names(taps)
  flat = k4.reshape(-1, taps)  # (view, channel) rows
  centre = taps // 2
  return {
    "channels": int(k4.shape[2]),
    "mean": dict(zip(names, flat.mean(0).tolist())),
    "std": dict(zip(names, flat.std(0).tolist())),
    "off_centre": float((flat.sum(-1) - flat[:, centre]).mean()),
    "end_weight": {
      "first": float((1.0 - flat[:, 0]).mean()),
      "last": float((1.0 - flat[:, -1]).mean()),
    },
    "per_snippet": snippet_kernels(k4, num_segments),
  }


def snippet_kernels(k4: np.ndarray, num_segments: int) -> list[dict[str, Any]]:
  """Per snippet (time order) the taps acting on it: mean / std over crops and channels.

  k4: f32 [crops, P, C', L]; snippet s = u * P + p is at position u of pass p. A tap reading past
  the pass's first or last snippet reads the zero padding, so it counts 0 there.
  """
  _, passes, _, taps = k4.shape
  names = tap_names(taps)
  out = []
  for s in range(num_segments * passes):
    u, p = divmod(s, passes)
    k = k4[:, p].copy()  # [crops, C', L]
    for j in range(taps):
      if not 0 <= u + j - taps // 2 < num_segments:
        k[..., j] = 0.0
    out.append(
      {
        "snippet": s,
        "mean": dict(zip(names, k.mean((0, 1)).tolist())),
        "std": dict(zip(names, k.std((0, 1)).tolist())),
      }
    )
  return out


def explain_views(
  model: nnx.Module, config: ml_collections.ConfigDict, video: np.ndarray, names: list[str]
) -> dict[str, Any]:
  """The numbers for one video's test views uint8 [1, crops, U_test, T, S, S, 3] (module
  docstring)."""
  u = config.model.num_segments
  crops, u_test = video.shape[1:3]
  video = data_spec.from_config(config).model_input(jnp.asarray(video))  # normalised
  views = eval_lib.interleave_views(video, u)[:, 0]  # [V, U, T, S, S, 3]
  out = run_network(model, views)
  agg = config.eval.aggregate
  passes = u_test // u
  snip = out["snippet_logits"].reshape(crops, passes, u, -1).transpose(0, 2, 1, 3)
  snip = snip.reshape(crops, u_test, -1)  # snippet s = u * P + p, time order
  modules = [
    {"module": name, **kernel_stats(k.reshape(crops, passes, *k.shape[1:]), u)}
    for name, k in out["kernels"].items()
  ]
  return {
    "views": f"{u_test}x{crops}",
    "num_views": int(views.shape[0]),
    "top5": _top(inference.aggregate_probs(out["logits"], agg), names),
    "average_top5": _top(inference.aggregate_probs(out["snippet_logits"].mean(1), agg), names),
    "snippets": [
      {"snippet": s, "top5": _top(inference.aggregate_probs(snip[:, s], agg), names)}
      for s in range(u_test)
    ],
    "snippet_probs": [inference.aggregate_probs(snip[:, s], agg).tolist() for s in range(u_test)],
    "dsa": modules,
    "off_centre": float(np.mean([m["off_centre"] for m in modules])) if modules else None,
  }


def explain(
  config: ml_collections.ConfigDict, checkpoint: str, videos: list[str]
) -> dict[str, Any]:
  """The tool's numbers (as `--json` prints them) for the video files `videos`."""
  model, names, source = load_eval_model(config, checkpoint)
  results = []
  for path in videos:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"--video={path}: no such file")
    res = explain_views(model, config, inference.video_views(config, path), names)
    results.append({"video": path, **res})
  off = [r["off_centre"] for r in results if r["off_centre"] is not None]
  return {
    "checkpoint": checkpoint,
    "source": source,
    "model": f"{config.model.aggregation}+{config.model.backbone}{config.model.depth}",
    "class_names": names,
    "videos": results,
    "off_centre": float(np.mean(off)) if off else None,
  }


# ------------------------------------------------------------------------------------- figure


def _short(name: str, n: int = 28) -> str:
  return name if len(name) <= n else name[: n - 1] + "…"


def _draw_top5(ax: Any, res: dict[str, Any]) -> None:
  y, labels, colours = [], [], []
  pos = 0.0
  for top, colour in ((res["top5"], "tab:blue"), (res["average_top5"], "tab:orange")):
    for name, p in top:
      y.append((pos, p))
      labels.append(f"{_short(name)}")
      colours.append(colour)
      pos += 1
    pos += 0.6
  ax.barh([a for a, _ in y], [b for _, b in y], color=colours)
  ax.set_yticks([a for a, _ in y], labels, fontsize=8)
  ax.invert_yaxis()
  ax.set_xlim(0, 1)
  ax.set_xlabel("probability")


def _draw_snippets(ax: Any, res: dict[str, Any], names: list[str]) -> None:
  classes = []
  for name, _ in res["top5"][:3] + res["average_top5"][:3]:
    if name not in classes:
      classes.append(name)
  idx = [names.index(c) for c in classes]
  probs = np.asarray(res["snippet_probs"])[:, idx].T  # [classes, U_test]
  im = ax.imshow(probs, vmin=0, vmax=1, cmap="viridis", aspect="auto")
  ax.set_yticks(range(len(classes)), [_short(c, 22) for c in classes], fontsize=8)
  ax.set_xticks(range(probs.shape[1]))
  ax.set_xlabel("snippet (time order)")
  ax.set_title("each snippet alone (DSA = identity)", fontsize=9)
  if probs.shape[1] <= 12:
    for (i, j), p in np.ndenumerate(probs):
      ax.text(j, i, f"{p:.2f}", ha="center", va="center", fontsize=7, color="w" if p < 0.6 else "k")
  ax.figure.colorbar(im, ax=ax, fraction=0.05, pad=0.02)


def _draw_kernels(ax: Any, mod: dict[str, Any]) -> None:
  per = mod["per_snippet"]
  s = np.arange(len(per))
  for tap, colour in zip(per[0]["mean"], ("tab:red", "tab:gray", "tab:green", "tab:purple")):
    m = np.array([p["mean"][tap] for p in per])
    sd = np.array([p["std"][tap] for p in per])
    ax.errorbar(s, m, yerr=sd, label=tap, color=colour, marker="o", markersize=3, capsize=2)
  ax.set_ylim(-0.05, 1.05)
  ax.set_xticks(s)
  ax.set_xlabel("snippet (time order)")
  ax.set_title(
    f"{mod['module']} (C'={mod['channels']})\noff-centre {mod['off_centre']:.3f}", fontsize=9
  )
  ax.legend(fontsize=7, loc="upper right")
  ax.grid(alpha=0.3)


def draw(result: dict[str, Any], out: str) -> None:
  """One row per video: top-5s, the snippets' class probabilities, one panel per DSA module."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  videos = result["videos"]
  cols = 2 + max(len(v["dsa"]) for v in videos)
  fig, axes = plt.subplots(
    len(videos),
    cols,
    figsize=(4.4 * cols, 3.9 * len(videos)),
    squeeze=False,
    layout="constrained",
    gridspec_kw={"width_ratios": [1.0, 1.3] + [1.0] * (cols - 2)},
  )
  for row, res in zip(axes, videos):
    _draw_top5(row[0], res)
    _draw_snippets(row[1], res, result["class_names"])
    for ax, mod in zip(row[2:], res["dsa"]):
      _draw_kernels(ax, mod)
    for ax in row[2 + len(res["dsa"]) :]:
      ax.axis("off")
    off = "-" if res["off_centre"] is None else f"{res['off_centre']:.3f}"
    row[0].set_title(
      f"{os.path.basename(res['video'])} ({res['views']} views), mean off-centre weight {off}\n"
      "top-5: DSA (blue) vs average of snippets (orange)",
      fontsize=9,
      loc="left",
    )
  out_path = paths.resolve(out)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  fig.savefig(buf, dpi=110, format="png")
  paths.write_whole(out_path, buf.getvalue())
  plt.close(fig)


def summary(result: dict[str, Any]) -> str:
  """The text report (the JSON's main numbers)."""
  fmt = lambda top: ", ".join(f"{n} {p:.1%}" for n, p in top)
  lines = [f"{result['model']} from {result['source']}"]
  for res in result["videos"]:
    lines.append(f"{res['video']} ({res['views']} views)")
    lines.append(f"  DSA top-5:     {fmt(res['top5'])}")
    lines.append(f"  average top-5: {fmt(res['average_top5'])}")
    for s in res["snippets"]:
      lines.append(f"  snippet {s['snippet']}: {fmt(s['top5'][:2])}")
    for m in res["dsa"]:
      taps = "  ".join(f"{t} {m['mean'][t]:.3f}±{m['std'][t]:.3f}" for t in m["mean"])
      lines.append(f"  {m['module']}: {taps}  off-centre {m['off_centre']:.3f}")
  if result["off_centre"] is not None:
    lines.append(f"mean off-centre tap weight: {result['off_centre']:.4f}")
  return "\n".join(lines)


def define_flags() -> None:
  """The command line's flags (defined when run as a program, so the module imports cleanly)."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("checkpoint", None, "A training workdir or a converted checkpoint directory.")
  flags.DEFINE_list("video", None, "Video file(s), comma separated.")
  flags.DEFINE_string("out", "explain.png", "Where to write the figure (PNG).")
  flags.DEFINE_bool("json", False, "Print one JSON object instead of the text summary.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f["verbosity"].present:  # Orbax's INFO lines unless -v is asked for
    logging.set_verbosity(logging.WARNING)
  if f.config is None or f.checkpoint is None or not f.video:
    raise app.UsageError("--config, --checkpoint and --video are required")
  result = explain(f.config, f.checkpoint, list(f.video))
  draw(result, f.out)
  if f.json:
    print(json.dumps(result))
  else:
    print(summary(result))
    print(f"wrote {f.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
