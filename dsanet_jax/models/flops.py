"""Parameter and MAC counting, shared by `tools/model_info.py` and the trainer (step-0 logging).

MACs come from XLA: the eval forward of one view [1, U, T, H, W, 3] is lowered and compiled (on
abstract parameters, nothing is materialised) and the convolutions and dots of its HLO (before
backend passes, which on GPU turn them into library custom-calls) are counted,
MACs = output elements x contracted elements, per stage (the `jax.named_scope`s `stem`,
`layer1`..`layer4`, `cls_head` in the op metadata). This is the conv+matmul count that
`torch.utils.flop_counter` gives for the original (spec dsanet.md §7.3). XLA's own
`cost_analysis()['flops']` (which also counts element-wise work, and is reported beside it) is not
comparable with the literature.
"""

import math
import re
from collections import Counter
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "cls_head")

_DEF = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]\S*\s+([\w\-]+)\(([^)]*)\)")


def count_params(model_or_params: Any) -> int:
  """Trainable parameters of a model (its nnx.Param leaves; BatchNorm statistics are not counted)
  or of a params pytree (e.g. the trainer's `state["params"]`)."""
  tree = model_or_params
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree, nnx.Param)
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def hlo_macs(hlo_text: str) -> dict[str, int]:
  """Conv + dot MACs per stage of an HLO module's text.

  Accepts `lowered.as_text(dialect="hlo", debug_info=True)` or a compiled `as_text()`.

  Stages are found in each op's metadata op_name; ops outside them count as 'other'.
  """
  shapes, ops = {}, []
  for line in hlo_text.splitlines():
    m = _DEF.match(line)
    if not m:
      continue
    name, dims, op, args = m.groups()
    shapes[name] = [int(d) for d in dims.split(",") if d]
    if op in ("convolution", "dot"):
      ops.append((name, op, [a.strip().lstrip("%") for a in args.split(",")], line))
  out = Counter()
  for name, op, args, line in ops:
    meta = re.search(r'op_name="([^"]*)"', line)
    parts = meta.group(1).split("/") if meta else []
    stage = next((p for p in parts if p in STAGES), "other")
    n_out = math.prod(shapes[name])
    if op == "convolution":
      kernel = shapes[args[1]]
      labels = re.search(r"dim_labels=\w+_(\w+)->", line).group(1)
      out[stage] += n_out * math.prod(kernel) // kernel[labels.index("o")]
    else:
      lhs = shapes[args[0]]
      dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line).group(1)
      out[stage] += n_out * math.prod(lhs[int(d)] for d in dims.split(",") if d)
  return dict(out)


def count_gmacs(
  model_cfg: ml_collections.ConfigDict,
  *,
  num_frames: int,
  crop_size: int,
  num_segments: int | None = None,
  xla_cost: bool = True,
) -> dict:
  """GMACs of the eval forward of ONE view [1, U, T, crop, crop, 3] of the model `model_cfg`.

  Returns a dict: `gmacs_per_view` (conv+matmul, comparable to the literature), `per_stage`
  (GMACs by stage), `xla_gflops` (XLA cost analysis, all ops; NaN with `xla_cost=False`, which
  skips compiling the forward) and `input_shape` [U, T, H, W, 3].
  """
  # Imported here: models/__init__ imports this module's siblings, not the reverse.
  from dsanet_jax.models import build_model

  u = int(num_segments or model_cfg.num_segments)
  model = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(params=0, dropout=0)))
  model.eval()
  graphdef, state = nnx.split(model)

  def forward(state: nnx.State, video: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(video)

  shape = (u, int(num_frames), int(crop_size), int(crop_size), 3)
  video = jax.ShapeDtypeStruct((1, *shape), jnp.dtype(model_cfg.dtype))
  lowered = jax.jit(forward).lower(state, video)
  per_stage = hlo_macs(lowered.as_text(dialect="hlo", debug_info=True))
  xla_gflops = float("nan")
  if xla_cost:
    cost = lowered.compile().cost_analysis()
    if isinstance(cost, list):  # older JAX returned one dict per computation
      cost = cost[0]
    xla_gflops = float(cost.get("flops", 0.0)) / 1e9
  return {
    "gmacs_per_view": sum(per_stage.values()) / 1e9,
    "per_stage": {k: per_stage.get(k, 0) / 1e9 for k in (*STAGES, "other") if k in per_stage},
    "xla_gflops": xla_gflops,
    "input_shape": list(shape),
  }
