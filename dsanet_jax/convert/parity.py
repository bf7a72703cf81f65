r"""Prints how closely a converted model reproduces the PyTorch reference of the original code.

  python -m dsanet_jax.convert.parity --config=configs/kinetics400/dsa_i3d_r18.py \
    [--base_width=8] [--size=32] [--frames=4] [--videos=2] [--config.model.conv_impl=frames2d]

The network is the config's model (`--config.model.x=...` overrides), at `--base_width` and
`--num_classes` (small by default: the real widths are `--base_width=64`): the reference with random
weights and random BatchNorm statistics -> state_dict -> conversion -> eval-mode logits and
train-mode backbone features (batch statistics), as max|diff| / max|reference|. The table of
docs/porting.md runs it for `dsa_i3d_r18`, `dsa_i3d_r50`, `i3d_r50` and `v4d_i3d_r18`.
"""

import numpy as np
import torch
from absl import app, flags
from flax import nnx
from ml_collections import ConfigDict, config_flags

from dsanet_jax.convert import checkpoint_io, port, torch_checkpoint
from dsanet_jax.convert import torch_reference as tr


def rel(got: np.ndarray, want: np.ndarray) -> float:
  """max|got - want| / max|want|."""
  got, want = np.asarray(got), np.asarray(want)
  return float(np.abs(got - want).max() / np.abs(want).max())


def measure(cfg: ConfigDict, x: np.ndarray) -> tuple[float, float]:
  """(eval logits rel. error, train features rel. error) of the network `cfg` (a `model`
  section) on `x`
  (float32 [N, U, T, H, W, 3])."""
  ref = tr.randomize_(tr.build_reference_from_config(cfg), seed=1).eval()
  sd = {k: torch_checkpoint.to_numpy(v) for k, v in ref.state_dict().items()}
  model = checkpoint_io.abstract_model(cfg)
  port.convert_state_dict(sd, model, cfg)
  xt = torch.from_numpy(x).permute(0, 1, 5, 2, 3, 4).contiguous()
  with torch.no_grad():
    want = ref(xt).numpy()
    ref.train()
    want_f = ref.features(xt).permute(0, 2, 3, 4, 1).numpy()
  model.eval()
  got = nnx.jit(lambda m, v: m(v))(model, x)
  model.train()
  got_f = nnx.jit(lambda m, v: m.features(v))(model, x)
  return rel(got, want), rel(got_f, want_f)


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so that others can import it)."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file.")
  flags.DEFINE_integer("base_width", 8, "model.base_width (64 = the real networks).")
  flags.DEFINE_integer("size", 32, "Input height and width.")
  flags.DEFINE_integer("frames", 4, "T, frames per snippet.")
  flags.DEFINE_integer("videos", 2, "N, videos in the batch.")
  flags.DEFINE_integer("num_classes", 7, "model.num_classes.")
  flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  cfg = f.config.model
  cfg.base_width, cfg.num_classes = f.base_width, f.num_classes
  cfg.bn_group_size = 0  # the reference's train-mode BatchNorm normalises over the whole batch
  s, t, n, u = f.size, f.frames, f.videos, cfg.num_segments
  x = np.random.RandomState(0).randn(n, u, t, s, s, 3).astype(np.float32)
  e, f = measure(cfg, x)
  print(
    f"depth {cfg.depth} {cfg.aggregation} insert_freq={cfg.insert_freq}, base_width="
    f"{cfg.base_width}, input [N={n}, U={u}, T={t}, {s}x{s}], K={cfg.num_classes}, "
    f"conv_impl={cfg.conv_impl}\n  eval logits {e:.2e}   train features {f:.2e}"
  )


if __name__ == "__main__":
  define_flags()
  app.run(main)
