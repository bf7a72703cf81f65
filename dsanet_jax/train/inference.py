"""Prediction on a video file: decode (PyAV), the pipeline's test views, the model, top-k classes.

`predict_video(config, path, workdir=None)` uses the workdir's latest checkpoint or
`config.init_from` (a converted checkpoint) and the test views of `config.eval` (U_test snippets x
crops, grouped per crop as in evaluation), and averages the views as `config.eval.aggregate`.
"""

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
from flax import nnx

from dsanet_jax.train import evaluator as eval_lib
from dsanet_jax.train import trainer


def video_views(config: ml_collections.ConfigDict, path: str) -> np.ndarray:
  """A video file -> [1, crops, U_test, T, S, S, 3] test views (the eval pipeline's transforms)."""
  from dsanet_jax.data import decode, pipeline

  enc = decode.read_video(path, short_side=config.eval.short_side)
  ex = {
    "video": tf.constant(enc.frames),
    "label": tf.constant(0, tf.int64),
    "video_id": tf.constant(os.path.basename(path).encode()),
  }
  out = pipeline._eval_prepare(  # the pipeline's test-view transform of one example
    config, config.eval.num_segments, config.eval.num_crops, config.eval.crop_size, ex
  )
  return out["video"].numpy()[None]


def view_logits(model: nnx.Module, config: ml_collections.ConfigDict, path: str) -> np.ndarray:
  """Eval-mode logits f32 [V, K] of the V = crops x (U_test / U) views of a video file."""
  video = jnp.asarray(video_views(config, path))
  views = eval_lib.interleave_views(video, config.model.num_segments)  # [V, 1, U, T, S, S, 3]
  model.eval()
  forward = nnx.jit(lambda m, x: m(x))
  return np.stack([np.asarray(forward(model, v), np.float32)[0] for v in views])


def predict_video(
  config: ml_collections.ConfigDict, path: str, *, workdir: str | None = None, top_k: int = 5
) -> list[tuple[str, float]]:
  """Returns the top-k (class name, probability) for the video file at `path`."""
  mesh, mdef, state, _, names = trainer.restore_for_eval(config, workdir, devices=jax.devices()[:1])
  if names is None:
    from dsanet_jax.data import pipeline

    names = pipeline.class_names(config)
  ev = eval_lib.Evaluator(
    mdef.eval_graph,
    mesh,
    model_segments=config.model.num_segments,
    num_segments=config.eval.num_segments,
    num_crops=config.eval.num_crops,
    num_classes=config.model.num_classes,
    aggregate=config.eval.aggregate,
  )
  video = video_views(config, path)
  batch = {"video": video, "label": [0], "mask": [True], "video_id": [b"x"]}
  scores = ev.scores(trainer.model_state(state, mdef), batch)["scores"][0]  # [V, K]
  probs = aggregate_probs(scores, config.eval.aggregate)
  order = np.argsort(-probs)[:top_k]
  return [(str(names[i]), float(probs[i])) for i in order]


def aggregate_probs(view_logits: np.ndarray, aggregate: str) -> np.ndarray:
  """[V, K] view logits -> [K] class probabilities (softmax of mean logits, or mean of softmax)."""
  x = np.asarray(view_logits, np.float64)
  sm = lambda z: (
    np.exp(z - z.max(-1, keepdims=True))
    / np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)
  )
  return sm(x.mean(0)) if aggregate == "logits" else sm(x).mean(0)


def format_top_k(path: str, top: list[tuple[str, float]]) -> str:
  lines = [f"{os.path.basename(path)}:"]
  lines += [f"  {p:6.2%}  {name}" for name, p in top]
  return "\n".join(lines)


__all__: list[Any] = [
  "aggregate_probs",
  "format_top_k",
  "predict_video",
  "video_views",
  "view_logits",
]
