"""Parameter count and GMACs per view of a config's model.

  python -m dsanet_jax.tools.model_info --config=configs/kinetics400/dsa_i3d_r50.py
  python -m dsanet_jax.tools.model_info --config=configs/kinetics400/dsa_i3d_r50.py \
      --config.data.num_frames=4 --json

Parameters: trainable (BatchNorm statistics not counted). GMACs: conv + matmul multiply-accumulates
of the compiled eval forward of ONE view [1, U, T, crop, crop, 3] at the config's
`data.num_frames` and `data.crop_size`, read from the optimised HLO (see
`dsanet_jax.models.flops`); XLA's cost-analysis total (all ops, in GFLOPs) is printed beside it.
Nothing is materialised: the model is built abstractly.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from dsanet_jax.models import build_model
from dsanet_jax.models.flops import count_gmacs, count_params

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file.", lock_config=True)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
flags.mark_flags_as_required(["config"])


def model_info(config: ml_collections.ConfigDict) -> dict:
  """The tool's result as a dict (also used by tests)."""
  model = nnx.eval_shape(lambda: build_model(config.model, rngs=nnx.Rngs(params=0, dropout=0)))
  per_stage_params = {
    "stem": count_params(model.backbone.conv1) + count_params(model.backbone.bn1),
    **{f"layer{i + 1}": count_params(s) for i, s in enumerate(model.backbone.stages())},
    "cls_head": count_params(model.cls_head),
  }
  g = count_gmacs(config.model, num_frames=config.data.num_frames, crop_size=config.data.crop_size)
  m = config.model
  return {
    "model": f"{m.aggregation}+{m.backbone}{m.depth}",
    "params": count_params(model),
    "gmacs_per_view": g["gmacs_per_view"],
    "xla_gflops_per_view": g["xla_gflops"],
    "input_shape": g["input_shape"],
    "per_stage": {
      k: {"params": per_stage_params.get(k, 0), "gmacs": g["per_stage"].get(k, 0.0)}
      for k in (*per_stage_params, *(k for k in g["per_stage"] if k not in per_stage_params))
    },
  }


def main(argv: list[str]) -> None:
  del argv
  info = model_info(_CONFIG.value)
  if _JSON.value:
    print(json.dumps(info))
    return
  print(f"model            {info['model']}")
  print(f"input (one view) {info['input_shape']}  [U, T, H, W, 3]")
  print(f"parameters       {info['params']:,} ({info['params'] / 1e6:.2f}M)")
  print(f"GMACs per view   {info['gmacs_per_view']:.3f}  (conv + matmul)")
  print(f"XLA GFLOPs       {info['xla_gflops_per_view']:.3f}  (cost analysis, all ops)")
  print(f"{'stage':10s} {'params':>12s} {'GMACs':>10s}")
  for k, v in info["per_stage"].items():
    print(f"{k:10s} {v['params']:12,d} {v['gmacs']:10.3f}")


if __name__ == "__main__":
  app.run(main)
