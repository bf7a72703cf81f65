r"""Eval-mode predictions from a training workdir or a converted model directory.

  python -m dsanet_jax.predict --config=CONFIG --checkpoint=RUN_OR_DIR \
    --input_npy=X.npy --output_npy=LOGITS.npy [--batch_size=4]

`X.npy`: float32 [N, U, T, H, W, 3], already normalised (ImageNet mean/std on the 0-255 scale, RGB),
U = model.num_segments, any T, H, W the network accepts. Writes logits float32 [N, K] (averaged over
the U snippets, no softmax) and prints the top-1 class of each video.

  python -m dsanet_jax.predict --config=CONFIG --checkpoint=RUN_OR_DIR --video=clip.mp4|FRAMES_DIR

`--video` takes a video file or a folder of frames (what the dataset builders read), takes the
config's test views (eval.num_segments snippets x eval.num_crops crops, grouped per crop) and prints
the top-5 classes with probabilities: the same function as `main.py --mode=predict`
(`dsanet_jax.train.inference.predict`); with --output_npy it also saves the view logits [V, K].

`--checkpoint`: a training workdir (its latest checkpoint) or a converted model directory. Class
names: the checkpoint's, else `--class_names` (a text file, one per line, or a JSON list), else the
prepared dataset's, else by index (with a warning).
"""

import io
import sys

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from dsanet_jax.common import paths


def define_flags() -> None:
  """The command line's flags (defined when run as a program, so the module imports cleanly)."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("checkpoint", None, "A training workdir or a converted model directory.")
  flags.DEFINE_string("input_npy", None, "float32 [N, U, T, H, W, 3], normalised.")
  flags.DEFINE_string("output_npy", None, "Where to write the logits [N, K].")
  flags.DEFINE_string("video", None, "A video file or frame folder: prints the top-k classes.")
  flags.DEFINE_integer("top_k", 5, "Classes printed for --video.")
  flags.DEFINE_string(
    "class_names",
    None,
    "Class names (text file, one per line, or JSON list) if the checkpoint has none.",
  )
  flags.DEFINE_integer("batch_size", 4, "Videos per forward pass.")


def check_input(x: np.ndarray, num_segments: int, where: str = "input") -> np.ndarray:
  """Validates a [N, U, T, H, W, 3] array and returns it as float32."""
  if x.ndim != 6 or x.shape[-1] != 3:
    raise ValueError(f"{where}: shape {x.shape}, expected [N, U, T, H, W, 3] (channels last)")
  if x.shape[1] != num_segments:
    raise ValueError(
      f"{where}: U={x.shape[1]} snippets, the model takes model.num_segments={num_segments}"
    )
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{where}: dtype {x.dtype}; expected float32 already normalised")
  return x.astype(np.float32, copy=False)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if not f["verbosity"].present:  # Orbax's INFO lines unless -v is asked for
    logging.set_verbosity(logging.WARNING)
  if f.config is None or f.checkpoint is None:
    raise app.UsageError("--config and --checkpoint are required")
  if (f.input_npy is None) == (f.video is None):
    raise app.UsageError("give exactly one of --input_npy and --video")
  if f.output_npy is None and f.video is None:
    raise app.UsageError("--output_npy is required")
  from dsanet_jax.train import inference, state

  try:
    pred = inference.load_predictor(
      f.config, checkpoint=f.checkpoint, class_names_file=f.class_names
    )
  except state.StateError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if f.video is not None:
    p = inference.predict(pred, f.video, top_k=f.top_k)
    print(inference.format_top_k(f.video, p.top))
    if f.output_npy is None:
      return
    logits = p.view_logits
  else:
    x = np.load(io.BytesIO(paths.resolve(f.input_npy).read_bytes()), allow_pickle=False)
    x = check_input(x, pred.config.model.num_segments, f.input_npy)
    logits = pred.logits(x, f.batch_size)
    for i, row in enumerate(logits):
      top = int(np.argmax(row))
      print(f"video {i}: top-1 {pred.class_names[top]} (logit {row[top]:.3f})")
  out = paths.resolve(f.output_npy)
  out.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  np.save(buf, logits)
  paths.write_whole(out, buf.getvalue())
  print(f"wrote {out}: logits {logits.shape}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
