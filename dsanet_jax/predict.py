r"""Eval-mode predictions from a model checkpoint directory.

  python -m dsanet_jax.predict --config=CONFIG --checkpoint=DIR \
    --input_npy=X.npy --output_npy=LOGITS.npy [--batch_size=4]

`X.npy`: float32 [N, U, T, H, W, 3], already normalised (ImageNet mean/std on the 0-255 scale, RGB),
U = model.num_segments, any T, H, W the network accepts. Writes logits float32 [N, K] (averaged over
the U snippets, no softmax) and prints the top-1 class of each video when the checkpoint has names.

  python -m dsanet_jax.predict --config=CONFIG --checkpoint=DIR --video=clip.mp4

`--video=FILE` decodes the file (PyAV), takes the config's test views (eval.num_segments snippets x
eval.num_crops crops, grouped per crop) and prints the top-5 classes with probabilities
(`dsanet_jax.train.inference`); with --output_npy it also saves the view-averaged logits [1, K].
"""

import pathlib

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from dsanet_jax.convert import checkpoint_io

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file.", lock_config=True
)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Model checkpoint directory.")
_INPUT_NPY = flags.DEFINE_string("input_npy", None, "float32 [N, U, T, H, W, 3], normalised.")
_OUTPUT_NPY = flags.DEFINE_string("output_npy", None, "Where to write the logits [N, K].")
_VIDEO = flags.DEFINE_string("video", None, "A video file: prints the top-5 classes.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Videos per forward pass.")


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


def predict_logits(model: nnx.Module, video: np.ndarray, batch_size: int = 4) -> np.ndarray:
  """Eval-mode logits f32 [N, K] for video [N, U, T, H, W, 3]; batches padded to `batch_size`."""
  model.eval()
  forward = nnx.jit(lambda m, x: m(x))
  n = video.shape[0]
  out = []
  for i in range(0, n, batch_size):
    chunk = video[i : i + batch_size]
    pad = batch_size - chunk.shape[0]
    if pad:  # eval mode: padding rows do not affect the others (running BN statistics)
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    out.append(np.asarray(jax.device_get(forward(model, chunk)))[: batch_size - pad])
  return np.concatenate(out).astype(np.float32)


def predict_video(model: nnx.Module, cfg: ml_collections.ConfigDict, path: str) -> np.ndarray:
  """Decodes `path`, runs the cfg.eval test views; returns the view-averaged logits f32 [1, K]."""
  from dsanet_jax.train import inference

  return inference.view_logits(model, cfg, path).mean(0, keepdims=True)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # Orbax's INFO lines unless -v is asked for
    logging.set_verbosity(logging.WARNING)
  if _CONFIG.value is None or _CHECKPOINT.value is None:
    raise app.UsageError("--config and --checkpoint are required")
  if (_INPUT_NPY.value is None) == (_VIDEO.value is None):
    raise app.UsageError("give exactly one of --input_npy and --video")
  if _OUTPUT_NPY.value is None and _VIDEO.value is None:
    raise app.UsageError("--output_npy is required")
  cfg = _CONFIG.value
  model, meta = checkpoint_io.load_model(_CHECKPOINT.value, cfg.model)
  if _VIDEO.value is not None:
    from dsanet_jax.train import inference

    views = inference.view_logits(model, cfg, _VIDEO.value)  # [V, K]
    probs = inference.aggregate_probs(views, cfg.eval.aggregate)
    names = meta.get("class_names") or [str(i) for i in range(len(probs))]
    top = [(names[i], float(probs[i])) for i in np.argsort(-probs)[:5]]
    print(inference.format_top_k(_VIDEO.value, top))
    if _OUTPUT_NPY.value is None:
      return
    logits = views.mean(0, keepdims=True)
  else:
    x = check_input(np.load(_INPUT_NPY.value), cfg.model.num_segments, _INPUT_NPY.value)
    logits = predict_logits(model, x, _BATCH_SIZE.value)
  out = pathlib.Path(_OUTPUT_NPY.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  np.save(out, logits)
  names = meta.get("class_names")
  for i, row in enumerate(logits):
    top = int(np.argmax(row))
    label = names[top] if names else str(top)
    print(f"video {i}: top-1 {label} (logit {row[top]:.3f})")
  print(f"wrote {out}: logits {logits.shape}")


if __name__ == "__main__":
  app.run(main)
