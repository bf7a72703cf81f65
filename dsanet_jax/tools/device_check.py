r"""One check of an accelerator (GPU or TPU host): speed against PyTorch, parity, export, input.

  python -m dsanet_jax.tools.device_check --out=DIR [--config=configs/kinetics400/dsa_i3d_r50.py]
      [--reduced] [--data_dir=DIR]

Writes DIR/device_check.json (every figure with its unit and what it compares) and
DIR/device_check.txt (the same as a table). Four parts, each run by the project's own code; a part
that fails is recorded with its error and the others still run (the exit status is then 1):

  benchmark  `tools.benchmark_model.benchmark` at float32 and bfloat16 (`model.dtype`): the
             `step.make_train_step` (the trainer's), on JAX's first device, against the update of
             the PyTorch reference network (`convert.torch_reference`) on CUDA when torch sees a
             GPU (else on CPU); seconds per step (median) and their ratio jax/torch.
  parity     `convert.parity.measure` under `jax.default_matmul_precision('highest')`: a random
             reference network converted, max|diff| / max|reference| of eval logits and train
             features (PyTorch on CPU is the reference). Passes below PARITY_TOL.
  export     `train.export.export_model` of a random converted checkpoint; the deserialised
             `model.jax` called on the device against `train.inference.load_predictor(...).logits`
             on the same input. Passes below EXPORT_TOL.
  input      is the step input-bound? Seconds per step of the same jitted train step with one
             device-resident uint8 batch reused, against `device_put` of that batch from host
             memory + step, and the transfer alone (GB/s). Then the config's prepared dataset
             (`--data_dir`) through `data.pipeline.make_train_iterator` feeding the step
             (`next` + transfer + step); `data_wait_share` = time waiting for the next host batch
             / total. TensorFlow is not on the lent GPU image, and a tensorflow-cpu wheel (>200
             MB) is over the 64 MiB a run may carry, so there the tf.data half is recorded as
             skipped with that reason (run it on a TPU host or any machine with the set-up).

Sizes: the full form is the config's network at U x T x 224^2 (batch 8; parity at the real widths
on 64^2 frames). `--reduced` (the default on a CPU-only host) shrinks the network to R18 at base
width 4 and inputs to 32^2 with T=2, and feeds the input part from the embedded
`order_of_events` dataset (built in `--data_dir`, default DIR/tfds, on first use), with 2 timed
rounds and no warm-up, so that the whole check runs on CPU in CI (about 90 s of CPU time, most of
it XLA compiling six programs; CI sets XLA:CPU's cheapest LLVM passes): that form proves the
script, not the device. The input part feeds the benchmark's compiled step at the config's dtype
(the same program), so the train step is compiled once per dtype.
"""

import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

from dsanet_jax.common import paths
from dsanet_jax.tools import benchmark_model

PARITY_TOL = 1e-4  # max|diff| / max|reference| at 'highest' matmul precision (float32)
EXPORT_TOL = 1e-4  # the exported program against the predictor's jitted forward, same device
JSON_FILE = "device_check.json"
TEXT_FILE = "device_check.txt"
# The errors a part may raise and still let the others run: a part's own checks (ValueError,
# AssertionError), a runtime's failures (RuntimeError covers XlaRuntimeError, torch's CUDA
# errors), a missing package, files and memory.
PART_ERRORS = (
  ValueError,
  AssertionError,
  RuntimeError,
  ImportError,
  OSError,
  MemoryError,
  TypeError,
  KeyError,
)


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Input and network sizes of one form (full or reduced)."""

  batch: int
  frames: int
  size: int
  steps: int  # timed benchmark rounds (median)
  warmup: int  # untimed benchmark rounds after compilation
  base_width: int | None  # None: the config's
  parity_width: int
  parity_size: int
  parity_frames: int
  input_steps: int  # timed steps of each kind in the input part


# The R18 DSA insertion pattern of configs/base.py (the library never imports configs/).
_R18_INSERT_FREQ = (0, (0, 1), (0, 1), 0)

FULL = Sizes(
  batch=8,
  frames=8,
  size=224,
  steps=10,
  warmup=2,
  base_width=None,
  parity_width=64,
  parity_size=64,
  parity_frames=8,
  input_steps=20,
)
# CPU in CI: every part and figure, at the smallest sizes and rounds that still run each path
REDUCED = Sizes(
  batch=2,
  frames=2,
  size=32,
  steps=2,
  warmup=0,
  base_width=4,
  parity_width=4,
  parity_size=32,
  parity_frames=2,
  input_steps=3,
)


def figure(value: float, unit: str, compared: str) -> dict[str, Any]:
  """One reported number with its unit and what it compares."""
  return {"value": float(value), "unit": unit, "compared": compared}


def reduced_config(config: ConfigDict, sizes: Sizes, data_dir: str) -> ConfigDict:
  """A copy of `config` at `sizes` (the model's widths, the data's frames and crops); in the
  reduced form the data are the embedded `order_of_events` (12 fps) in `data_dir`."""
  c = ConfigDict(config.to_dict())
  if sizes.base_width is not None:
    c.model.depth, c.model.insert_freq = 18, _R18_INSERT_FREQ
    c.model.base_width = sizes.base_width
    c.model.num_classes = 4
    c.data.name, c.data.fps = "order_of_events", 12.0
    c.data.shuffle_buffer = 16
    c.eval.short_side = sizes.size
  c.data.data_dir = data_dir
  c.data.num_frames = sizes.frames
  c.data.crop_size = c.eval.crop_size = sizes.size
  c.train.optimizer = "sgd"  # the PyTorch side of benchmark_model has SGD alone
  return c


# ------------------------------------------------------------------------------------ parts


def part_benchmark(
  config: ConfigDict, sizes: Sizes, torch_device: str, runs: dict[str, Any]
) -> dict[str, Any]:
  """The benchmark's figures; `runs[dtype]` receives each dtype's JAX runs (`jax_runs`), so that
  the input part feeds the same compiled step."""
  out: dict[str, Any] = {}
  for dtype in ("float32", "bfloat16"):
    c = ConfigDict(config.to_dict())
    c.model.dtype = dtype
    r = benchmark_model.benchmark(
      c,
      batch=sizes.batch,
      frames=sizes.frames,
      size=sizes.size,
      steps=sizes.steps,
      warmup=sizes.warmup,
      torch_device=torch_device,
      with_fwd_bwd=False,
      keep_runs=True,
    )
    runs[dtype] = r.pop("runs")
    what = f"train step on input {r['input']}, {dtype}"
    out[dtype] = {
      "jax_step_s": figure(r["jax_step_s"], "s", f"JAX {what} on {r['jax_device']} (median)"),
      "torch_step_s": figure(
        r["torch_step_s"], "s", f"PyTorch reference {what} on {torch_device} (median)"
      ),
      "ratio_step": figure(r["ratio_step"], "x", "JAX / PyTorch seconds per step (medians)"),
      "jax_gflops": figure(r["jax_gflops"], "GFLOP/s", f"JAX conv+matmul FLOPs / s, {what}"),
      "jax_compile_s": figure(r["jax_compile_s"], "s", "JAX step lowering + compilation"),
    }
  return out


def part_parity(config: ConfigDict, sizes: Sizes) -> dict[str, Any]:
  from dsanet_jax.convert import parity

  cfg = ConfigDict(config.model.to_dict())
  cfg.base_width, cfg.num_classes, cfg.bn_group_size = sizes.parity_width, 7, 0
  cfg.dtype = "float32"
  s, t, u = sizes.parity_size, sizes.parity_frames, cfg.num_segments
  x = np.random.RandomState(0).randn(2, u, t, s, s, 3).astype(np.float32)
  with jax.default_matmul_precision("highest"):
    logits, features = parity.measure(cfg, x)
  what = f"base_width {cfg.base_width}, input [2, {u}, {t}, {s}, {s}, 3], precision highest"
  out = {
    "eval_logits_rel": figure(logits, "max|diff|/max|ref|", f"converted vs PyTorch, {what}"),
    "train_features_rel": figure(features, "max|diff|/max|ref|", f"converted vs PyTorch, {what}"),
    "tolerance": PARITY_TOL,
  }
  out["passed"] = bool(logits < PARITY_TOL and features < PARITY_TOL)
  return out


def part_export(config: ConfigDict, sizes: Sizes, workdir: str) -> dict[str, Any]:
  import torch

  from dsanet_jax.convert import checkpoint_io, port, torch_checkpoint
  from dsanet_jax.convert import torch_reference as tr
  from dsanet_jax.train import export, inference

  c = ConfigDict(config.to_dict())
  c.model.dtype, c.model.bn_group_size = "float32", 0
  # random weights and BatchNorm statistics through the conversion (the init has a zero head)
  ref = tr.randomize_(tr.build_reference_from_config(c.model), seed=1).eval()
  with torch.no_grad():
    sd = {k: torch_checkpoint.to_numpy(v) for k, v in ref.state_dict().items()}
  model = checkpoint_io.abstract_model(c.model)
  port.convert_state_dict(sd, model, c.model)
  names = [f"class_{i}" for i in range(int(c.model.num_classes))]
  ckpt = str(paths.resolve(workdir) / "random_model")
  checkpoint_io.save_model(ckpt, model, {"config": c.model, "class_names": names})
  c.init_from = ckpt
  out_dir = export.export_model(c, out_dir=str(paths.resolve(workdir) / "export"))
  pred = inference.load_predictor(c)
  u, t, s = int(c.model.num_segments), int(c.data.num_frames), int(c.eval.crop_size)
  x = np.random.RandomState(0).randn(2, u, t, s, s, 3).astype(np.float32)
  want = pred.logits(x, batch_size=2)
  exp = jax.export.deserialize(bytearray((paths.resolve(out_dir) / export.MODEL_FILE).read_bytes()))
  device = jax.devices()[0]
  got = np.asarray(exp.call(jax.device_put(x, device)))
  rel = float(np.abs(got - want).max() / np.abs(want).max())
  return {
    "logits_rel": figure(
      rel,
      "max|diff|/max|ref|",
      f"model.jax (platforms {list(exp.platforms)}) on {device.device_kind} vs the predictor's "
      f"logits, input [2, {u}, {t}, {s}, {s}, 3]",
    ),
    "tolerance": EXPORT_TOL,
    "passed": bool(rel < EXPORT_TOL and np.abs(want).max() > 1e-3),
  }


def part_input(config: ConfigDict, sizes: Sizes, runs: dict[str, Any]) -> dict[str, Any]:
  """Is the step input-bound? `runs`: the benchmark's JAX runs by dtype; the step at the config's
  dtype is reused when the benchmark built it (same shapes), else built here.

  Without TensorFlow (the lent GPU image) the tf.data half is recorded as skipped; the transfer
  half (a uint8 batch from host memory, `device_put` + step) needs only JAX.
  """
  c = ConfigDict(config.to_dict())
  c.model.bn_group_size = 0
  u, t, s = int(c.model.num_segments), int(c.data.num_frames), int(c.data.crop_size)
  rng = np.random.default_rng(0)
  host = {
    "video": rng.integers(0, 256, (sizes.batch, u, t, s, s, 3), dtype=np.uint8),
    "label": np.zeros((sizes.batch,), np.int32),
    "mask": np.ones((sizes.batch,), bool),
  }
  jx = runs.get(c.model.dtype) or benchmark_model.jax_runs(c, host["video"], host["label"])
  device = jax.devices()[0]
  n = sizes.input_steps

  def timed(fn: Callable[[], None]) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
      fn()
    return (time.perf_counter() - t0) / n

  resident = jax.device_put(host, device)
  synthetic = timed(lambda: jx["step_on"](resident))
  h2d = timed(lambda: jax.block_until_ready(jax.device_put(host, device)))
  from_host = timed(lambda: jx["step_on"](jax.device_put(host, device)))
  nbytes = sum(v.nbytes for v in host.values())
  what = f"train step, batch {list(host['video'].shape)} uint8"
  out: dict[str, Any] = {
    "synthetic_step_s": figure(synthetic, "s", f"{what}, one device-resident batch reused"),
    "host_fed_step_s": figure(from_host, "s", f"{what}, device_put from host memory + step"),
    "h2d_s": figure(h2d, "s", f"device_put of one batch ({nbytes / 1e6:.3g} MB) alone"),
    "h2d_gb_s": figure(nbytes / h2d / 1e9, "GB/s", "host-to-device bytes / h2d_s"),
  }
  try:
    import tensorflow  # noqa: F401  (the pipeline is tf.data)
  except ImportError as e:
    out["pipeline_skipped"] = (
      f"tensorflow does not import here ({e}); the tf.data half needs it (a TPU host, or any "
      "machine with the README's set-up)"
    )
    return out
  import tensorflow_datasets as tfds

  tfds.display_progress_bar(False)  # the embedded dataset's first build stays off the console
  from dsanet_jax.common import data_spec
  from dsanet_jax.data import pipeline

  it = pipeline.make_train_iterator(
    data_spec.from_config(c), local_batch_size=sizes.batch, process_index=0, process_count=1
  )
  keys = tuple(host)
  for _ in range(2):  # let the pipeline's buffers fill the way training would start
    jx["step_on"](jax.device_put({k: v for k, v in next(it).items() if k in keys}, device))
  wait = 0.0
  t0 = time.perf_counter()
  for _ in range(n):
    tw = time.perf_counter()
    b = {k: v for k, v in next(it).items() if k in keys}
    wait += time.perf_counter() - tw
    jx["step_on"](jax.device_put(b, device))
  fed = (time.perf_counter() - t0) / n
  share = wait / (fed * n)
  out |= {
    "fed_step_s": figure(fed, "s", f"{what}, {c.data.name} through tf.data (next+transfer+step)"),
    "fed_over_synthetic": figure(fed / synthetic, "x", "fed / synthetic seconds per step"),
    "data_wait_share": figure(share, "fraction", "time in next(iterator) / fed step time"),
    "input_bound": bool(share > 0.1),
  }
  return out


# ------------------------------------------------------------------------------------ driver


def versions() -> dict[str, str]:
  import importlib.metadata as md

  out = {"python": platform.python_version()}
  # name -> the distributions that install it (TensorFlow's CPU wheel is `tensorflow-cpu`)
  dists = {name: (name,) for name in ("jax", "jaxlib", "flax", "optax", "numpy", "torch")}
  dists["tensorflow"] = ("tensorflow", "tensorflow-cpu")
  dists["orbax-checkpoint"] = ("orbax-checkpoint",)
  for name, candidates in dists.items():
    out[name] = "absent"
    for dist in candidates:
      try:
        out[name] = md.version(dist)
        break
      except md.PackageNotFoundError:
        continue
  return out


def devices() -> dict[str, Any]:
  import torch

  d = jax.devices()[0]
  torch_device = benchmark_model.default_torch_device()
  cuda = torch_device == "cuda"
  return {
    "jax_platform": d.platform,
    "jax_device_kind": d.device_kind,
    "jax_device_count": jax.device_count(),
    "torch_device": torch_device,
    "torch_device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
    "host_cpus": os.cpu_count(),
  }


def run_part(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
  """Runs one part; a failure becomes {'error': ..., 'traceback': ...} and is printed."""
  t0 = time.perf_counter()
  print(f"device_check: {name} ...", flush=True)
  try:
    r = fn()
  except PART_ERRORS as e:
    r = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    print(f"device_check: part {name} FAILED: {r['error']}", file=sys.stderr, flush=True)
  r["wall_s"] = time.perf_counter() - t0
  print(f"device_check: {name} done in {r['wall_s']:.0f} s", flush=True)
  return r


def check(config: ConfigDict, out: str, *, reduced: bool, data_dir: str | None) -> dict[str, Any]:
  """Runs the four parts and writes JSON_FILE and TEXT_FILE into `out`; returns the report."""
  sizes = REDUCED if reduced else FULL
  out_path = paths.resolve(out)
  out_path.mkdir(parents=True, exist_ok=True)
  cfg = reduced_config(config, sizes, data_dir or str(out_path / "tfds"))
  dev = devices()
  t0 = time.perf_counter()
  report: dict[str, Any] = {
    "time_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
    "form": "reduced" if reduced else "full",
    "model": f"depth {cfg.model.depth} {cfg.model.aggregation}, base_width {cfg.model.base_width}",
    "devices": dev,
    "versions": versions(),
    "load_average": list(os.getloadavg()),
    "parts": {},
  }
  runs: dict[str, Any] = {}  # the benchmark's compiled JAX steps, by dtype
  parts = {
    "benchmark": lambda: part_benchmark(cfg, sizes, dev["torch_device"], runs),
    "parity": lambda: part_parity(cfg, sizes),
    "export": lambda: part_export(cfg, sizes, out),
    "input": lambda: part_input(cfg, sizes, runs),
  }
  for name, fn in parts.items():
    report["parts"][name] = run_part(name, fn)
    # written after every part: a run cut short (a lease's time limit) keeps the parts it finished
    report["wall_s"] = time.perf_counter() - t0
    report["failed"] = [
      k for k, p in report["parts"].items() if "error" in p or p.get("passed") is False
    ]
    report["unfinished"] = [k for k in parts if k not in report["parts"]]
    paths.write_whole(out_path / JSON_FILE, json.dumps(report, indent=1))
    paths.write_whole(out_path / TEXT_FILE, table(report))
  return report


def figures(part: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
  """The (dotted name, figure) pairs of a part, nested dicts flattened."""
  rows = []
  for k, v in part.items():
    if isinstance(v, dict) and "value" in v and "unit" in v:
      rows.append((prefix + k, v))
    elif isinstance(v, dict):
      rows += figures(v, f"{prefix}{k}.")
  return rows


def table(report: dict[str, Any]) -> str:
  d = report["devices"]
  lines = [
    f"device_check ({report['form']}), {report['time_utc']} UTC, {report['model']}",
    f"JAX on {d['jax_platform']} ({d['jax_device_kind']}), PyTorch on {d['torch_device']} "
    f"({d['torch_device_name']}), load {report['load_average'][0]:.1f}",
    "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
    "",
    f"{'part.figure':40s} {'value':>12s}  {'unit':20s} compared",
  ]
  for name, part in report["parts"].items():
    if "error" in part:
      lines.append(f"{name:40s} {'FAILED':>12s}  {part['error'][:200]}")
      continue
    if "skipped" in part:
      lines.append(f"{name:40s} {'skipped':>12s}  {part['skipped'][:200]}")
      continue
    for k, f in figures(part):
      lines.append(f"{name + '.' + k:40s} {f['value']:12.4g}  {f['unit']:20s} {f['compared']}")
    if "passed" in part:
      lines.append(f"{name + '.passed':40s} {part['passed']!s:>12s}  tolerance {part['tolerance']}")
    if "pipeline_skipped" in part:
      lines.append(f"{name + '.pipeline':40s} {'skipped':>12s}  {part['pipeline_skipped'][:200]}")
    if "input_bound" in part:
      lines.append(f"{name + '.input_bound':40s} {part['input_bound']!s:>12s}  data wait > 10%")
  unfinished = f"; not run yet: {', '.join(report['unfinished'])}" if report["unfinished"] else ""
  lines.append(
    f"total {report['wall_s']:.0f} s; failed: {', '.join(report['failed']) or 'none'}{unfinished}"
  )
  return "\n".join(lines) + "\n"


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so that tests can import it)."""
  config_flags.DEFINE_config_file(
    "config", "configs/kinetics400/dsa_i3d_r50.py", "Experiment config file."
  )
  flags.DEFINE_string("out", "device_check_out", "Folder for the JSON and the text table.")
  flags.DEFINE_bool(
    "reduced", None, "Tiny sizes (CI on CPU). Default: reduced when JAX sees no accelerator."
  )
  flags.DEFINE_string("data_dir", None, "TFDS data_dir of the config's dataset.")


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.ERROR)  # a quiet console: the parts' lines and the table only
  f = flags.FLAGS
  reduced = f.reduced if f.reduced is not None else jax.devices()[0].platform == "cpu"
  report = check(f.config, f.out, reduced=reduced, data_dir=f.data_dir)
  print(table(report), end="", flush=True)
  if report["failed"] or not all(
    math.isfinite(f["value"]) for p in report["parts"].values() for _, f in figures(p)
  ):
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
