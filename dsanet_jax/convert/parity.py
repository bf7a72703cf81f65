r"""Prints how closely converted models reproduce the PyTorch reference of the original code.

  python -m dsanet_jax.convert.parity [--base_width=8] [--size=32] [--frames=4] [--videos=2] \
    [--conv_impl=auto|conv3d|frames2d]

For each of DSA+I3D R18, DSA+I3D R50, I3D R50 and V4D+I3D R18: the reference with random weights
and random BatchNorm statistics -> state_dict -> conversion -> eval-mode logits and train-mode
backbone features (batch statistics), as max|diff| / max|reference|.
"""

import numpy as np
import torch
from absl import app, flags
from flax import nnx

from configs.base import get_base_config
from dsanet_jax.convert import checkpoint_io, port, torch_checkpoint
from dsanet_jax.convert import torch_reference as tr

_WIDTH = flags.DEFINE_integer("base_width", 8, "model.base_width (64 = the real networks).")
_SIZE = flags.DEFINE_integer("size", 32, "Input height and width.")
_FRAMES = flags.DEFINE_integer("frames", 4, "T, frames per snippet.")
_VIDEOS = flags.DEFINE_integer("videos", 2, "N, videos in the batch.")
_CLASSES = flags.DEFINE_integer("num_classes", 7, "model.num_classes.")
_CONV_IMPL = flags.DEFINE_enum(
  "conv_impl", "auto", ["auto", "conv3d", "frames2d"], "model.conv_impl."
)

CASES = {
  "DSA+I3D R18": (18, "dsa", (0, (0, 1), (0, 1), 0)),
  "DSA+I3D R50": (50, "dsa", (0, (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), 0)),
  "I3D R50": (50, "tsn", (0, 0, 0, 0)),
  "V4D+I3D R18": (18, "v4d", (0, (0, 1), (0, 1), 0)),
}


def rel(got, want) -> float:
  got, want = np.asarray(got), np.asarray(want)
  return float(np.abs(got - want).max() / np.abs(want).max())


def measure(
  depth: int,
  aggregation: str,
  insert_freq,
  *,
  width: int,
  classes: int,
  x: np.ndarray,
  conv_impl: str = "auto",
):
  """(eval logits rel. error, train features rel. error) for one network."""
  cfg = get_base_config().model
  cfg.depth, cfg.aggregation, cfg.insert_freq = depth, aggregation, insert_freq
  cfg.base_width, cfg.num_classes, cfg.conv_impl = width, classes, conv_impl
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


def main(argv: list[str]) -> None:
  del argv
  s, t, n = _SIZE.value, _FRAMES.value, _VIDEOS.value
  x = np.random.RandomState(0).randn(n, 4, t, s, s, 3).astype(np.float32)
  print(
    f"base_width={_WIDTH.value}, input [N={n}, U=4, T={t}, {s}x{s}], K={_CLASSES.value}, "
    f"conv_impl={_CONV_IMPL.value}"
  )
  print(f"{'network':<14} {'eval logits':>12} {'train features':>15}")
  for name, (depth, agg, freq) in CASES.items():
    e, f = measure(
      depth, agg, freq, width=_WIDTH.value, classes=_CLASSES.value, x=x, conv_impl=_CONV_IMPL.value
    )
    print(f"{name:<14} {e:12.2e} {f:15.2e}", flush=True)


if __name__ == "__main__":
  app.run(main)
