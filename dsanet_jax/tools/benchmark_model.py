r"""The trainer's step on JAX's device beside the same update of the original network in PyTorch.

  python -m dsanet_jax.tools.benchmark_model --config=configs/kinetics400/dsa_i3d_r18.py \
      [--batch=2 --frames=4 --size=112 --steps=7] [--json] [--config.model.conv_impl=frames2d]
      [--torch_device=cpu|cuda]

The model and the optimiser are the config's (`--config.x=` overrides); the input is `--batch`
videos x U (`model.num_segments`) x `--frames` x `--size`^2, random uint8 as the pipeline's batches
(JAX normalises them in the step, as in training; PyTorch gets the same normalised float32 video),
one process, whole-batch BatchNorm statistics (`model.bn_group_size` is set to 0). Two things are
timed, each against PyTorch doing the same work on the reference network
(`dsanet_jax.convert.torch_reference`, the original's modules), in train mode (BatchNorm batch
statistics, dropout), in the same process:

  step:     what training runs. JAX: `step.make_train_step` with `optim.make_optimizer` and
            `optim.make_schedule` of the config (clip by global norm, coupled weight decay, SGD
            Nesterov momentum, the learning-rate schedule, per-step RNG re-seeding, the step's
            metrics), jitted with the state donated, as the trainer does. PyTorch: forward,
            cross-entropy, backward, `clip_grad_norm_`, `torch.optim.SGD(momentum, nesterov,
            weight_decay)` with the config's values.
  fwd+bwd:  forward + backward alone. JAX: `jax.value_and_grad` of the trainer's loss (jitted);
            PyTorch: `loss.backward()`.

`torch.set_num_threads(cpu count)`; XLA:CPU uses every core too. Timings are medians over `--steps`
after warm-up, with the best step beside them (`*_min_s`, `ratio_min`); all four timed functions
and a jitted 2048^2 float32 matmul (the machine's practical ceiling) run interleaved, one each per
round, so that the speed phases of a shared machine hit them alike. Throughput: the step's
conv+matmul FLOPs by the usual convention (3 x the forward's, the forward's counted from its
compiled HLO as `model_info` does) per second; `hlo_step_gflop` is what the compiled train step's
convolutions and dots count. This is a benchmark, not a test: it prints numbers and asserts nothing.
"""

import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

Run = Callable[[], None]


def schedule_of(config: ConfigDict) -> Any:
  """The config's learning-rate schedule (at 100 steps per epoch; the rate does not change the
  work of a step)."""
  from dsanet_jax.train import optim

  return optim.make_schedule(config.train, steps_per_epoch=100.0, total_steps=10_000)


def jax_runs(config: ConfigDict, video: Any, labels: Any, model: Any = None) -> dict[str, Any]:
  """The trainer's jitted step and the jitted value_and_grad of its loss, ready to call.

  video [N, U, T, H, W, 3] (uint8 0-255, normalised in the step as in training, or float32
  already normalised), labels int32 [N]; `model`: the initial weights (default: the
  config's init). Returns `step`, `fwd_bwd` (callables), `step_on` (the step on another batch of
  the same shapes and dtypes: a dict of video, label, mask arrays, host or device), `state`
  (() -> the current train state), `step_gflop` and `hlo_step_gflop`.
  """
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from dsanet_jax.common import data_spec
  from dsanet_jax.models.flops import count_gmacs, hlo_macs
  from dsanet_jax.train import optim
  from dsanet_jax.train import state as state_lib
  from dsanet_jax.train import step as step_lib

  seed = config.seed
  schedule = schedule_of(config)
  tx = optim.make_optimizer(config.train, schedule)
  build = state_lib.build_fn(config.model, seed)
  state, _ = state_lib.init_state(build if model is None else (lambda: model), tx)
  mdef = state_lib.model_def(nnx.eval_shape(build))
  batch = {
    "video": jnp.asarray(video),
    "label": jnp.asarray(labels),
    "mask": jnp.ones(labels.shape, bool),
  }
  data = data_spec.from_config(config)
  step_fn = step_lib.make_train_step(
    mdef, tx, schedule, seed=seed, label_smoothing=config.train.label_smoothing, data=data
  )
  compiled = jax.jit(step_fn, donate_argnums=(0,)).lower(state, batch).compile()

  def loss_fn(params: Any, stats: Any, rngs: Any) -> tuple[jax.Array, Any]:
    model = nnx.merge(mdef.train_graph, params, stats, rngs)
    loss, _ = step_lib.cross_entropy(
      model(data.model_input(batch["video"])),
      batch["label"],
      batch["mask"],
      config.train.label_smoothing,
    )
    return loss, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

  fwd_bwd = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  rngs = state_lib.fresh_rngs(mdef.abstract_rngs, jax.random.key(seed))
  holder = [state]

  def step_on(b: dict[str, Any]) -> None:
    holder[0], metrics = compiled(holder[0], b)
    jax.block_until_ready(metrics)

  def step() -> None:
    step_on(batch)

  def grads() -> None:
    jax.block_until_ready(fwd_bwd(holder[0]["params"], holder[0]["batch_stats"], rngs))

  fwd = count_gmacs(
    config.model, num_frames=video.shape[2], crop_size=video.shape[3], xla_cost=False
  )
  return {
    "step": step,
    "fwd_bwd": grads,
    "step_on": step_on,
    "state": lambda: holder[0],
    "step_gflop": 3 * 2 * fwd["gmacs_per_view"] * video.shape[0],
    "hlo_step_gflop": 2 * sum(hlo_macs(compiled.as_text()).values()) / 1e9,
  }


def torch_runs(
  config: ConfigDict, video: Any, labels: Any, net: Any = None, device: str = "cpu"
) -> dict[str, Any]:
  """The same update in PyTorch: SGD (Nesterov, coupled weight decay, the learning rate of the
  config's schedule at each step) after `clip_grad_norm_`. `net`: the reference network (default:
  built from the config). `device`: the torch device ('cpu', 'cuda'); each call waits for it.
  `config.model.dtype == 'bfloat16'` runs the forward under `torch.autocast(bfloat16)` (the
  weights and the update stay float32, as in JAX). Returns `step`, `fwd_bwd` (callables), `net`."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch

  from dsanet_jax.convert.torch_reference import build_reference_from_config

  tc = config.train
  if tc.optimizer != "sgd":
    raise ValueError(f"config.train.optimizer={tc.optimizer!r}: the PyTorch side has only 'sgd'")
  if net is None:
    torch.manual_seed(config.seed)
    net = build_reference_from_config(config.model)
  net.to(device).train()
  lrs = np.asarray(jax.jit(jax.vmap(schedule_of(config)))(jnp.arange(4096)), np.float64)
  count = [0]
  opt = torch.optim.SGD(
    net.parameters(),
    lr=float(lrs[0]),
    momentum=tc.momentum,
    nesterov=tc.nesterov,
    weight_decay=tc.weight_decay,
  )
  x = torch.from_numpy(video.transpose(0, 1, 5, 2, 3, 4).copy()).to(device)  # [N, U, 3, T, H, W]
  y = torch.from_numpy(labels.astype("int64")).to(device)
  smoothing = float(tc.label_smoothing)
  autocast = config.model.dtype == "bfloat16"
  sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

  def loss_backward() -> None:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=autocast):
      logits = net(x)
    torch.nn.functional.cross_entropy(logits.float(), y, label_smoothing=smoothing).backward()

  def fwd_bwd() -> None:
    loss_backward()
    sync()

  def step() -> None:
    loss_backward()
    if tc.grad_clip_norm:
      torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip_norm)
    for group in opt.param_groups:
      group["lr"] = float(lrs[min(count[0], len(lrs) - 1)])
    opt.step()
    count[0] += 1
    sync()

  return {"step": step, "fwd_bwd": fwd_bwd, "net": net}


def jax_device_kind() -> str:
  """The device kind of JAX's first device (e.g. 'cpu', 'NVIDIA H200', 'TPU v5p')."""
  import jax

  return jax.devices()[0].device_kind


def _matmul() -> tuple[Run, float]:
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (2048, 2048), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  return (lambda: jax.block_until_ready(f(a))), 2 * 2048**3 / 1e9


def _time(fn: Run) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def _benchmark_config(config: ConfigDict) -> ConfigDict:
  config = ConfigDict(config.to_dict())  # unlocked copy
  config.model.bn_group_size = 0
  return config


def benchmark(
  config: ConfigDict,
  *,
  batch: int = 2,
  frames: int = 4,
  size: int = 112,
  steps: int = 7,
  warmup: int = 2,
  with_torch: bool = True,
  torch_device: str = "cpu",
  with_fwd_bwd: bool = True,
  keep_runs: bool = False,
) -> dict[str, Any]:
  """Times the four functions and the matmul over `steps` interleaved rounds (after `warmup`) at
  input [batch, U, frames, size, size, 3], PyTorch on `torch_device`; returns medians, best-ofs,
  ratios and FLOP rates. `with_fwd_bwd=False` times the steps alone (fwd_bwd figures: NaN).
  `keep_runs=True` also returns `runs`, the JAX side's `jax_runs` dict (not JSON), so that a
  caller can feed the compiled step other batches of the same shapes."""
  import numpy as np
  import torch

  from dsanet_jax.common import data_spec

  config = _benchmark_config(config)
  threads = os.cpu_count() or 1
  torch.set_num_threads(threads)
  u = config.model.num_segments
  rng = np.random.RandomState(0)
  shape = (batch, u, frames, size, size, 3)
  video = rng.randint(0, 256, size=shape).astype(np.uint8)  # as the pipeline's batches
  labels = rng.randint(0, config.model.num_classes, size=(batch,)).astype(np.int32)
  t0 = time.perf_counter()
  jx = jax_runs(config, video, labels)
  compile_s = time.perf_counter() - t0
  runs = {"jax_step": jx["step"]}
  if with_fwd_bwd:
    runs["jax_fwd_bwd"] = jx["fwd_bwd"]
  if with_torch:
    spec = data_spec.from_config(config).replace(dtype="float32")
    normalised = np.asarray(spec.model_input(video))  # what the JAX step computes on the device
    tr = torch_runs(config, normalised, labels, device=torch_device)
    runs["torch_step"] = tr["step"]
    if with_fwd_bwd:
      runs["torch_fwd_bwd"] = tr["fwd_bwd"]
  mm_run, mm_gflop = _matmul()
  runs["matmul"] = mm_run
  for _ in range(warmup):
    for fn in runs.values():
      fn()
  times: dict[str, list[float]] = {k: [] for k in runs}
  for _ in range(steps):  # interleaved rounds
    for k, fn in runs.items():
      times[k].append(_time(fn))
  med = {k: statistics.median(v) for k, v in times.items()}
  best = {k: min(v) for k, v in times.items()}
  nan = float("nan")
  out: dict[str, Any] = {
    "config_model": f"depth {config.model.depth} {config.model.aggregation}",
    "input": list(shape),
    "dtype": config.model.dtype,
    "conv_impl": config.model.conv_impl,
    "threads": threads,
    "jax_device": str(jax_device_kind()),
    "torch_device": torch_device,
    "load_average": list(os.getloadavg()),
    "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
  }
  for k in runs:
    out[f"{k}_s"], out[f"{k}_min_s"] = med[k], best[k]
  for part in ("step", "fwd_bwd"):
    have = f"torch_{part}" in med and f"jax_{part}" in med
    out[f"ratio_{part}"] = med[f"jax_{part}"] / med[f"torch_{part}"] if have else nan
    out[f"ratio_{part}_min"] = best[f"jax_{part}"] / best[f"torch_{part}"] if have else nan
  out.update(
    step_gflop=jx["step_gflop"],
    hlo_step_gflop=jx["hlo_step_gflop"],
    jax_gflops=jx["step_gflop"] / med["jax_step"],
    torch_gflops=jx["step_gflop"] / med["torch_step"] if "torch_step" in med else nan,
    matmul_gflops=mm_gflop / med["matmul"],
    jax_compile_s=compile_s,
    times_s=times,
  )
  if keep_runs:
    out["runs"] = jx
  return out


def _print(r: dict[str, Any]) -> None:
  print(
    f"{r['config_model']}: input {r['input']} {r['dtype']} {r['conv_impl']}, "
    f"{r['threads']} threads, load {r['load_average'][0]:.1f}, {r['time_utc']} UTC"
  )
  for part in ("step", "fwd_bwd"):
    print(
      f"  {part:8s} jax {r[f'jax_{part}_s']:.3f} s (best {r[f'jax_{part}_min_s']:.3f})  "
      f"torch {r.get(f'torch_{part}_s', float('nan')):.3f} s "
      f"(best {r.get(f'torch_{part}_min_s', float('nan')):.3f})  "
      f"jax/torch {r[f'ratio_{part}']:.2f} (medians), {r[f'ratio_{part}_min']:.2f} (best of each)"
    )
  print(
    f"  step GFLOP/s: jax {r['jax_gflops']:.1f}, torch {r['torch_gflops']:.1f}, matmul 2048^2 "
    f"{r['matmul_gflops']:.1f} ({r['step_gflop']:.1f} GFLOP conv+matmul per step)",
    flush=True,
  )


def default_torch_device() -> str:
  """'cuda' where PyTorch sees a GPU, else 'cpu' (the reference runs beside JAX's device)."""
  import torch

  return "cuda" if torch.cuda.is_available() else "cpu"


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so that tests can import it)."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file.")
  flags.DEFINE_bool("json", False, "Print one JSON object.")
  flags.DEFINE_integer("batch", 2, "Videos per step.")
  flags.DEFINE_integer("frames", 4, "T frames per snippet.")
  flags.DEFINE_integer("size", 112, "Crop size.")
  flags.DEFINE_integer("steps", 7, "Timed rounds (median and best reported).")
  flags.DEFINE_integer("warmup", 2, "Untimed rounds after compilation.")
  flags.DEFINE_bool("torch", True, "Also time the PyTorch reference.")
  flags.DEFINE_string(
    "torch_device", None, "PyTorch's device ('cpu', 'cuda'). Default: cuda where torch sees a GPU."
  )
  flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # a quiet console: JAX's backend INFO lines say nothing
  r = benchmark(
    flags.FLAGS.config,
    batch=flags.FLAGS.batch,
    frames=flags.FLAGS.frames,
    size=flags.FLAGS.size,
    steps=flags.FLAGS.steps,
    warmup=flags.FLAGS.warmup,
    with_torch=flags.FLAGS.torch,
    torch_device=flags.FLAGS.torch_device or default_torch_device(),
  )
  if flags.FLAGS.json:
    print(json.dumps(r), flush=True)
  else:
    _print(r)


if __name__ == "__main__":
  define_flags()
  app.run(main)
