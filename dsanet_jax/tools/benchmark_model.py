"""Train-step benchmark of DSA+I3D R18/R50 in JAX beside the original network in PyTorch.

  python -m dsanet_jax.tools.benchmark_model [--models=dsa_r18,dsa_r50] [--json]
      [--batch=2 --frames=4 --size=112 --steps=5] [--dtype=bfloat16] [--conv_impl=frames2d]

Each step: forward + cross-entropy on the snippet-averaged logits + backward + SGD (Nesterov
momentum) update, train mode (BatchNorm batch statistics, dropout 0.5). JAX: one jitted function
with donated state. PyTorch: the reference network (`dsanet_jax.convert.torch_reference`, the
original's modules) with `torch.set_num_threads(cpu count)`. Timings are medians over `--steps`
after warm-up (and the best step, `*_min_s`, `ratio_min`), JAX and PyTorch steps interleaved so
that machine-speed phases hit both alike. On a shared machine PyTorch's step time is bimodal (its
OpenMP threads stall when another job holds a core), so compare `ratio_min` as well.
Throughput: the step's conv+matmul FLOPs by the usual convention (3 x the forward's, the forward's
counted from its compiled HLO as `model_info` does) per second, against a jitted 2048^2 float32
matmul timed in the same run (the machine's practical ceiling). `hlo_step_gflop` is what the
compiled JAX train step's convolutions and dots count (a little more: transposed convolutions of
strided layers multiply zeros).
This is a benchmark, not a test: it prints numbers and asserts nothing.
"""

import json
import os
import statistics
import time

from absl import app, flags

_MODELS = flags.DEFINE_list("models", ["dsa_r18", "dsa_r50"], "Models: dsa_r18, dsa_r50, ...")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object per model.")
_BATCH = flags.DEFINE_integer("batch", 2, "Videos per step.")
_SEGMENTS = flags.DEFINE_integer("segments", 4, "U snippets per video.")
_FRAMES = flags.DEFINE_integer("frames", 4, "T frames per snippet.")
_SIZE = flags.DEFINE_integer("size", 112, "Crop size.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_DTYPE = flags.DEFINE_string("dtype", "float32", "JAX compute dtype (float32 | bfloat16).")
_CONV = flags.DEFINE_string("conv_impl", "auto", "JAX conv formulation (auto|conv3d|frames2d).")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch reference.")

# name -> (depth, aggregation, insert_freq)
MODELS = {
  "dsa_r18": (18, "dsa", (0, (0, 1), (0, 1), 0)),
  "dsa_r50": (50, "dsa", (0, (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), 0)),
  "tsn_r18": (18, "tsn", (0, 0, 0, 0)),
  "tsn_r50": (50, "tsn", (0, 0, 0, 0)),
  "v4d_r18": (18, "v4d", (0, (0, 1), (0, 1), 0)),
}


def _model_cfg(name: str):
  from configs.base import get_base_config

  if name not in MODELS:
    raise ValueError(f"--models: unknown model {name!r}; choose from {sorted(MODELS)}")
  depth, agg, freq = MODELS[name]
  c = get_base_config().model
  c.depth, c.aggregation, c.insert_freq = depth, agg, freq
  c.num_segments = _SEGMENTS.value
  c.dtype = _DTYPE.value
  c.conv_impl = _CONV.value
  return c


def _jax_step(model_cfg, video, labels):
  """Returns (step(state) -> state, state, train-step conv+matmul GFLOP)."""
  import jax
  import optax
  from flax import nnx

  from dsanet_jax.models import build_model
  from dsanet_jax.models.flops import count_gmacs, hlo_macs

  model = build_model(model_cfg, rngs=nnx.Rngs(params=0, dropout=1))
  model.train()
  tx = optax.sgd(0.01, momentum=0.9, nesterov=True)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  opt_state = tx.init(params)

  def step(params, rest, opt_state, video, labels):
    model = nnx.merge(graphdef, params, rest)

    def loss_fn(m):
      logits = m(video)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, loss

  jitted = jax.jit(step, donate_argnums=(0, 1, 2))
  compiled = jitted.lower(params, rest, opt_state, video, labels).compile()
  hlo_gflop = 2 * sum(hlo_macs(compiled.as_text()).values()) / 1e9
  fwd = count_gmacs(model_cfg, num_frames=video.shape[2], crop_size=video.shape[3])
  gflop = 3 * 2 * fwd["gmacs_per_view"] * video.shape[0]
  state = [params, rest, opt_state]

  def run():
    state[0], state[1], state[2], loss = compiled(*state, video, labels)
    jax.block_until_ready(loss)

  return run, gflop, hlo_gflop


def _torch_step(model_cfg, video_np, labels_np):
  import torch

  from dsanet_jax.convert.torch_reference import build_reference

  depth, agg, freq = model_cfg.depth, model_cfg.aggregation, model_cfg.insert_freq
  net = build_reference(depth, 400, model_cfg.num_segments, agg, freq)
  net.train()
  opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
  video = torch.from_numpy(video_np.transpose(0, 1, 5, 2, 3, 4).copy())  # [N, U, 3, T, H, W]
  labels = torch.from_numpy(labels_np.astype("int64"))

  def run():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(net(video), labels)
    loss.backward()
    opt.step()

  return run


def _matmul():
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (2048, 2048), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))

  def run():
    jax.block_until_ready(f(a))

  return run, 2 * 2048**3 / 1e9


def _time(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def benchmark(name: str) -> dict:
  import numpy as np
  import torch

  threads = os.cpu_count() or 1
  torch.set_num_threads(threads)
  cfg = _model_cfg(name)
  rng = np.random.RandomState(0)
  shape = (_BATCH.value, cfg.num_segments, _FRAMES.value, _SIZE.value, _SIZE.value, 3)
  video_np = rng.randn(*shape).astype(np.float32)
  labels_np = rng.randint(0, 400, size=(_BATCH.value,)).astype(np.int32)
  t0 = time.perf_counter()
  jax_run, step_gflop, hlo_gflop = _jax_step(cfg, video_np, labels_np)
  compile_s = time.perf_counter() - t0
  torch_run = _torch_step(cfg, video_np, labels_np) if _TORCH.value else None
  mm_run, mm_gflop = _matmul()
  for _ in range(_WARMUP.value):
    jax_run()
    if torch_run:
      torch_run()
  tj, tt, tm = [], [], []
  for _ in range(_STEPS.value):  # interleaved
    tm.append(_time(mm_run))
    tj.append(_time(jax_run))
    if torch_run:
      tt.append(_time(torch_run))
  jax_s = statistics.median(tj)
  torch_s = statistics.median(tt) if tt else float("nan")
  mm_s = statistics.median(tm)
  return {
    "model": name,
    "input": list(shape),
    "dtype": _DTYPE.value,
    "conv_impl": cfg.conv_impl,
    "threads": threads,
    "jax_step_s": jax_s,
    "torch_step_s": torch_s,
    "ratio": jax_s / torch_s,
    # Best-of-steps: closer to what a quiet machine gives when other jobs share the cores.
    "jax_min_s": min(tj),
    "torch_min_s": min(tt) if tt else float("nan"),
    "ratio_min": min(tj) / min(tt) if tt else float("nan"),
    "step_gflop": step_gflop,
    "hlo_step_gflop": hlo_gflop,
    "gflops": step_gflop / jax_s,
    "torch_gflops": step_gflop / torch_s,
    "matmul_gflops": mm_gflop / mm_s,
    "jax_compile_s": compile_s,
    "jax_steps_s": tj,
    "torch_steps_s": tt,
  }


def main(argv) -> None:
  del argv
  for name in _MODELS.value:
    r = benchmark(name)
    if _JSON.value:
      print(json.dumps(r), flush=True)
    else:
      print(
        f"{r['model']}: input {r['input']} {r['dtype']} {r['conv_impl']}, {r['threads']} threads\n"
        f"  jax   {r['jax_step_s']:.3f} s/step  ({r['gflops']:.1f} GFLOP/s of "
        f"{r['step_gflop']:.1f} GFLOP conv+matmul per step)\n"
        f"  torch {r['torch_step_s']:.3f} s/step  ({r['torch_gflops']:.1f} GFLOP/s)\n"
        f"  ratio jax/torch {r['ratio']:.2f} (medians), {r['ratio_min']:.2f} (best of each);  "
        f"matmul 2048^2 {r['matmul_gflops']:.1f} GFLOP/s",
        flush=True,
      )


if __name__ == "__main__":
  app.run(main)
