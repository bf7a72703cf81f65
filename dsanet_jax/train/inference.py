"""One predictor: a video file or frame folder -> test views -> view logits -> top-k classes.

`main.py --mode=predict` and `python -m dsanet_jax.predict --video` both call `predict(...)`;
`python -m dsanet_jax.predict --input_npy` and `main.py --mode=export` use the same eval-mode
forward (`inference.forward`). The model and state come from `state.load(purpose='eval')`: a
training workdir, a converted model directory or `config.init_from`.

Test views are the eval pipeline's (`pipeline.eval_views`): `config.eval.num_segments` snippets x
`config.eval.num_crops` crops, cut into passes of `model.num_segments` snippets as
`config.eval.grouping` says (`evaluator.interleave_views`), and averaged as `config.eval.aggregate`
(`evaluator.average_views`).

Class names: the checkpoint's; else a `class_names_file`; else the prepared dataset's; else
"class_<i>" with a warning.
"""

import dataclasses
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from dsanet_jax.common import data_spec
from dsanet_jax.train import evaluator as eval_lib
from dsanet_jax.train import sharding as sharding_lib
from dsanet_jax.train import state as state_lib


@nnx.jit(static_argnums=2)
def _forward(model: nnx.Module, x: jax.Array, data: data_spec.DataSpec | None) -> jax.Array:
  return model(data_spec.input_fn(data)(x)).astype(jnp.float32)


def forward(
  model: nnx.Module,
  video: np.ndarray,
  batch_size: int = 4,
  data: data_spec.DataSpec | None = None,
) -> np.ndarray:
  """Eval-mode logits f32 [N, K] of video [N, U, T, H, W, 3], in batches of `batch_size` (the
  last one zero-padded: in eval mode the rows are independent). A uint8 video (the pipeline's
  views, 0-255 RGB) is normalised on the device by `data.model_input`; a float32 one must be
  normalised already (`data` then only casts it to data.dtype)."""
  model.eval()
  n, out = video.shape[0], []
  video = np.asarray(video)
  if video.dtype != np.uint8:
    video = video.astype(np.float32, copy=False)
  for i in range(0, n, batch_size):
    chunk = video[i : i + batch_size]
    pad = batch_size - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    out.append(np.asarray(jax.device_get(_forward(model, chunk, data)))[: batch_size - pad])
  return np.concatenate(out).astype(np.float32)


@dataclasses.dataclass
class Predictor:
  """A loaded model, in eval mode on one device, with its config and class names."""

  config: ml_collections.ConfigDict  # with the checkpoint's model section where it differs
  loaded: state_lib.Loaded
  class_names: list[str]
  model: nnx.Module  # eval mode

  def logits(self, video: np.ndarray, batch_size: int = 4) -> np.ndarray:
    """Eval-mode logits f32 [N, K] of video [N, U, T, H, W, 3]: uint8 0-255 RGB, or float32
    already normalised (see `forward`)."""
    return forward(self.model, video, batch_size, data_spec.from_config(self.config))


def resolve_class_names(
  config: ml_collections.ConfigDict, stored: Sequence[str] | None, class_names_file: str | None
) -> list[str]:
  """The checkpoint's names, else the file's, else the prepared dataset's, else 'class_<i>'."""
  from dsanet_jax.convert import checkpoint_io

  k = int(config.model.num_classes)
  if stored is not None:
    return list(stored)
  if class_names_file:
    return checkpoint_io.read_class_names(class_names_file, k)
  from dsanet_jax.data import pipeline

  try:
    names = pipeline.class_names(data_spec.from_config(config))
  except (ValueError, FileNotFoundError, KeyError) as e:  # not prepared / no such dataset
    logging.warning(
      "no class names: none in the checkpoint, no --class_names file, and the dataset %r cannot "
      "be opened (%s); classes are named by index",
      config.data.name,
      str(e).splitlines()[0],
    )
    return [f"class_{i}" for i in range(k)]
  if len(names) != k:
    raise ValueError(
      f"dataset {config.data.name!r} has {len(names)} classes, model.num_classes={k}: "
      "pass --class_names"
    )
  return list(names)


def load_predictor(
  config: ml_collections.ConfigDict,
  *,
  checkpoint: str | None = None,
  workdir: str | None = None,
  class_names_file: str | None = None,
) -> Predictor:
  """Loads the model (see `state.load`) onto the first device with a jitted eval forward."""
  mesh = sharding_lib.make_mesh(
    ml_collections.ConfigDict({"data": 1, "fsdp": 1}), jax.devices()[:1]
  )
  loaded = state_lib.load(config, mesh, purpose="eval", workdir=workdir, checkpoint=checkpoint)
  names = resolve_class_names(loaded.config, loaded.class_names, class_names_file)
  return Predictor(loaded.config, loaded, names, state_lib.eval_model(loaded))


def read_clip(config: ml_collections.ConfigDict, path: str) -> list[bytes]:
  """JPEG frames of a video file or a frame folder at `config.eval.short_side`, as the builders
  read them (`data.decode`): files resampled to `config.data.fps` when set."""
  from dsanet_jax.data import decode

  if os.path.isdir(path):
    return decode.read_frame_dir(path, fps=1.0, short_side=config.eval.short_side).frames
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such video file or frame folder")
  return decode.read_video(
    path, short_side=config.eval.short_side, target_fps=config.data.get("fps")
  ).frames


def video_views(config: ml_collections.ConfigDict, path: str) -> np.ndarray:
  """A video file or frame folder -> its test views uint8 [1, crops, U_test, T, S, S, 3]."""
  import tensorflow as tf

  from dsanet_jax.data import pipeline

  ex = {
    "video": tf.constant(read_clip(config, path)),
    "label": tf.constant(0, tf.int64),
    "video_id": tf.constant(os.path.basename(os.path.normpath(path)).encode()),
  }
  spec = data_spec.from_config(config)
  out = pipeline.eval_views(
    spec, spec.eval_num_segments, spec.eval_num_crops, spec.eval_crop_size, ex
  )
  return out["video"].numpy()[None]


def view_logits(model: nnx.Module, config: ml_collections.ConfigDict, path: str) -> np.ndarray:
  """Eval-mode view logits f32 [V, K] (V = crops x passes) of a video file or frame folder."""
  views = video_views(config, path)
  per_view = eval_lib.interleave_views(
    jnp.asarray(views), config.model.num_segments, config.eval.grouping
  )
  return forward(
    model,
    np.asarray(per_view[:, 0]),
    batch_size=per_view.shape[0],
    data=data_spec.from_config(config),
  )


def aggregate_probs(view_logits: np.ndarray, aggregate: str) -> np.ndarray:
  """[V, K] view logits -> f64 [K] class probabilities: the softmax of the averaged logits, or
  the average of the views' probabilities (`eval.aggregate`, `evaluator.average_views`)."""
  scores = eval_lib.average_views(view_logits, aggregate)
  return scores if aggregate == "probs" else eval_lib.softmax(scores)


@dataclasses.dataclass
class Prediction:
  top: list[tuple[str, float]]  # (class name, probability), best first
  probs: np.ndarray  # f64 [K]
  view_logits: np.ndarray  # f32 [V, K]


def predict(pred: Predictor, path: str, top_k: int = 5) -> Prediction:
  """Top-k classes of the video file or frame folder at `path`."""
  logits = view_logits(pred.model, pred.config, path)
  probs = aggregate_probs(logits, pred.config.eval.aggregate)
  order = np.argsort(-probs, kind="stable")[:top_k]
  top = [(pred.class_names[i], float(probs[i])) for i in order]
  return Prediction(top, probs, logits)


def format_top_k(path: str, top: list[tuple[str, float]]) -> str:
  lines = [f"{os.path.basename(os.path.normpath(path))}:"]
  lines += [f"  {p:6.2%}  {name}" for name, p in top]
  return "\n".join(lines)
