"""Which frames a config's pipeline reads from a video of N frames: one training clip and the test
views.

  python -m dsanet_jax.tools.sample_frames --config=configs/something_something_v2/dsa_i3d_r50.py \
      --num_video_frames=32 [--seed=S] [--epoch=E] [--index=I] [--json]

Prints the 0-based frame indices of the training clip of example `index` in epoch `epoch` under
config seed `seed` (default: the config's), [U][T], and of the test views, [U_test][T] (one crop;
every crop reads the same frames), with the snippets' coverage. The indices come from the
pipeline's own functions (`pipeline.train_seeds`, `train_frame_indices`, `eval_frame_indices`),
the ones its tf.data maps run. `--json` prints one object:
  {"num_video_frames", "train": [[...] x U], "test": [[...] x U_test], "train_distinct",
   "test_distinct", "train_span", "test_span"}
where *_distinct says whether the snippets are pairwise different as frame sets and *_span is
max - min + 1 of the frames they read together.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
from absl import app, flags
from ml_collections import config_flags

from dsanet_jax.common import data_spec
from dsanet_jax.common.data_spec import DataSpec
from dsanet_jax.data import pipeline


def define_flags() -> None:
  """The command line (defined only when run as a program, so that the module imports freely)."""
  config_flags.DEFINE_config_file("config", None, "A config file.", lock_config=True)
  flags.DEFINE_integer("num_video_frames", None, "Frames in the video (N).")
  flags.DEFINE_integer("seed", None, "Config seed (default: the config's `seed`).")
  flags.DEFINE_integer("epoch", 0, "Training epoch of the clip.")
  flags.DEFINE_integer("index", 0, "Example index (position in the split) of the clip.")
  flags.DEFINE_bool("json", False, "Print one JSON object.")
  flags.mark_flags_as_required(["config", "num_video_frames"])


def _distinct(snippets: list[list[int]]) -> bool:
  sets = [frozenset(s) for s in snippets]
  return len(set(sets)) == len(sets)


def _span(snippets: list[list[int]]) -> int:
  flat = [i for s in snippets for i in s]
  return max(flat) - min(flat) + 1


def sample_frames(spec: DataSpec, num_video_frames: int, *, epoch: int = 0, index: int = 0) -> dict:
  """The tool's result (module docstring) for a video of `num_video_frames` frames."""
  if num_video_frames < 1:
    raise ValueError(f"--num_video_frames must be >= 1, got {num_video_frames}")
  n = tf.constant(num_video_frames, tf.int32)
  s_time, _ = pipeline.train_seeds(spec, tf.constant(epoch, tf.int64), tf.constant(index))
  train = pipeline.train_frame_indices(spec, n, s_time).numpy().tolist()
  test = pipeline.eval_frame_indices(spec, n, spec.eval_num_segments).numpy().tolist()
  return {
    "num_video_frames": num_video_frames,
    "train": train,
    "test": test,
    "train_distinct": _distinct(train),
    "test_distinct": _distinct(test),
    "train_span": _span(train),
    "test_span": _span(test),
  }


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  spec = data_spec.from_config(f.config)
  if f.seed is not None:
    spec = spec.replace(seed=f.seed)
  out = sample_frames(spec, f.num_video_frames, epoch=f.epoch, index=f.index)
  if f.json:
    print(json.dumps(out))
    return
  n = out["num_video_frames"]
  for name in ("train", "test"):
    snippets = out[name]
    print(
      f"{name}: {len(snippets)} snippets x {len(snippets[0])} frames, distinct "
      f"{out[f'{name}_distinct']}, span {out[f'{name}_span']} of {n} frames"
    )
    for u, s in enumerate(snippets):
      print(f"  {u}: {s}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
