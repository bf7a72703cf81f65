"""Multi-view evaluation: views grouped into passes of U, scores aggregated per video id, metrics.

A test batch holds `video` [B, crops, U_test, T, H, W, 3]. The model sees U = model.num_segments
snippets per pass, so each video is run as V = crops * P passes, P = U_test / U (`interleave_views`,
`eval.grouping`):
  'per_crop' (default): each crop is run as P interleaved passes; pass p takes snippets
    {p, p + P, ..., p + (U - 1) P} of one crop (U_test=8, U=4: {0,2,4,6} and {1,3,5,7}).
  'original': the original's grouping (spec §4.4), which reads its crop-major views as if they
    were clip-major and so mixes crops and snippets inside a pass; with 8 clips x 3 crops, labelled
    100 * crop + clip, the passes are [0,1,2,6] [7,100,104,105] [106,202,203,204] [3,4,5,101]
    [102,103,107,200] [201,205,206,207]. With one crop both groupings are the same.
Either way every view is used once. The V view logits of a video are averaged (as logits or as
softmax probabilities, `eval.aggregate`) per video id on the host, where every video must arrive
exactly once with all its views, and the number of videos must equal the dataset size.
"""

import io
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from dsanet_jax.common import data_spec, paths
from dsanet_jax.common.data_spec import DataSpec
from dsanet_jax.train import sharding as sharding_lib

ID_BYTES = 256  # video ids travel through the device step as fixed-width uint8 rows


GROUPINGS = ("per_crop", "original")


def interleave_views(
  video: jax.Array, model_segments: int, grouping: str = "per_crop"
) -> jax.Array:
  """[B, C, U_test, T, H, W, 3] -> [C * P, B, U, T, H, W, 3]: the passes of U snippets.

  'per_crop': view = crop * P + pass, snippets {pass + P * j}. 'original': view = pass * C + g,
  the g-th run of U in the row-major flattening of the original's [clip rows {pass + P * j},
  C columns] selection of its crop-major views read as [U_test, C] (module docstring).
  """
  b, c, u_test = video.shape[:3]
  rest = video.shape[3:]
  u = model_segments
  if u_test % u:
    raise ValueError(
      f"config.eval.num_segments={u_test} must be a multiple of model.num_segments={u}"
    )
  if grouping not in GROUPINGS:
    raise ValueError(f"config.eval.grouping={grouping!r}: expected one of {GROUPINGS}")
  p = u_test // u
  if grouping == "original":
    x = video.reshape(b, u, p, c, *rest)  # crop-major views read as rows (j * P + pass, column)
    x = jnp.moveaxis(x, 2, 1)  # [B, P, U rows, C columns, ...]
    x = x.reshape(b, p * c, u, *rest)  # each pass's U*C views regrouped as C runs of U
    return jnp.moveaxis(x, 1, 0)
  x = video.reshape(b, c, u, p, *rest)  # snippet j * P + pass
  x = jnp.moveaxis(x, 3, 2)  # [B, C, P, U, ...]
  x = x.reshape(b, c * p, u, *rest)
  return jnp.moveaxis(x, 1, 0)


def encode_ids(ids: Sequence[bytes | str]) -> np.ndarray:
  """Video ids -> uint8 [B, ID_BYTES] (zero padded)."""
  out = np.zeros((len(ids), ID_BYTES), np.uint8)
  for i, v in enumerate(ids):
    b = v.encode() if isinstance(v, str) else bytes(v)
    if len(b) > ID_BYTES:
      raise ValueError(f"video id longer than {ID_BYTES} bytes: {b[:80]!r}...")
    out[i, : len(b)] = np.frombuffer(b, np.uint8)
  return out


def decode_ids(rows: np.ndarray) -> list[str]:
  return [bytes(r).rstrip(b"\0").decode("utf-8", "replace") for r in np.asarray(rows)]


def view_scores(view_logits: np.ndarray, aggregate: str) -> np.ndarray:
  """[..., K] view logits -> the per-view scores that are averaged: logits, or probabilities."""
  if aggregate not in ("logits", "probs"):
    raise ValueError(f"config.eval.aggregate={aggregate!r}: expected 'logits' or 'probs'")
  return softmax(view_logits) if aggregate == "probs" else np.asarray(view_logits, np.float64)


def average_views(view_logits: np.ndarray, aggregate: str) -> np.ndarray:
  """[..., V, K] view logits -> [..., K] video scores: mean logits or mean softmax probabilities."""
  return view_scores(view_logits, aggregate).mean(-2)


class ViewAggregator:
  """Accumulates per-view scores by video id; checks that every video comes once, complete."""

  def __init__(self, num_classes: int, views_per_video: int, aggregate: str = "logits") -> None:
    if aggregate not in ("logits", "probs"):
      raise ValueError(f"config.eval.aggregate={aggregate!r}: expected 'logits' or 'probs'")
    self.num_classes, self.views, self.aggregate = num_classes, views_per_video, aggregate
    self._sum: dict[str, np.ndarray] = {}
    self._count: dict[str, int] = {}
    self._label: dict[str, int] = {}

  def add(
    self, ids: Sequence[str], scores: np.ndarray, labels: np.ndarray, mask: np.ndarray
  ) -> None:
    """ids [B]; scores f32 [B, V, K] view logits; labels int [B]; mask bool [B] (False = pad)."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim == 2:
      scores = scores[:, None]
    scores = view_scores(scores, self.aggregate)
    for vid, s, y, m in zip(ids, scores, np.asarray(labels), np.asarray(mask)):
      if not m:
        continue
      if vid in self._label and self._label[vid] != int(y):
        raise ValueError(f"video {vid!r} arrived with labels {self._label[vid]} and {int(y)}")
      self._sum[vid] = self._sum.get(vid, 0.0) + s.sum(0)
      self._count[vid] = self._count.get(vid, 0) + s.shape[0]
      self._label[vid] = int(y)

  def finalize(self, expected_videos: int | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Returns (ids sorted, scores f64 [N, K] mean over views, labels int64 [N]); checks counts."""
    bad = {v: c for v, c in self._count.items() if c != self.views}
    if bad:
      some = dict(list(bad.items())[:5])
      raise RuntimeError(
        f"{len(bad)} videos were not seen exactly once with all {self.views} views "
        f"(views counted per video: {some}); the eval iterator repeats or drops examples"
      )
    ids = sorted(self._sum)
    if expected_videos is not None and len(ids) != expected_videos:
      raise RuntimeError(
        f"evaluated {len(ids)} distinct videos but the split has {expected_videos}; the eval "
        "iterator must yield every example exactly once over all processes"
      )
    scores = np.stack([self._sum[v] / self._count[v] for v in ids]) if ids else np.zeros((0, 0))
    labels = np.array([self._label[v] for v in ids], np.int64)
    return ids, scores, labels


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
  """ActivityNet-style (interpolated) average precision of one class; nan if no positives."""
  npos = int(positives.sum())
  if npos == 0:
    return float("nan")
  order = np.argsort(-scores, kind="stable")
  tp = positives[order].astype(np.float64)
  tp_c, fp_c = np.cumsum(tp), np.cumsum(1 - tp)
  rec = tp_c / npos
  prec = tp_c / (tp_c + fp_c)
  mprec = np.concatenate([[0.0], prec, [0.0]])
  mrec = np.concatenate([[0.0], rec, [1.0]])
  for i in range(len(mprec) - 2, -1, -1):
    mprec[i] = max(mprec[i], mprec[i + 1])
  idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
  return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def softmax(scores: np.ndarray) -> np.ndarray:
  """Softmax over the last axis, float64."""
  z = np.asarray(scores, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def classification_metrics(
  scores: np.ndarray, labels: np.ndarray, num_classes: int, *, aggregate: str = "logits"
) -> dict[str, Any]:
  """Metrics of video scores f [N, K] ('logits' or softmax 'probs', `eval.aggregate`), labels [N].

  top1 / top5: fraction of videos whose label is the first / among the first five classes.
  per_class_accuracy [K]: for each class, the fraction of ITS videos predicted as it (recall;
  nan for a class without videos). mean_class_accuracy: the unweighted mean of per_class_accuracy
  over the classes that have videos. mAP: the mean over those classes of the average precision of
  ranking all videos by their softmax PROBABILITY of the class (logits are turned into
  probabilities first: a video's logit offset would otherwise reorder the ranking).
  confusion_matrix [K, K]: counts [true, predicted].
  """
  n = len(labels)
  pred = scores.argmax(-1)
  k5 = min(5, num_classes)
  top5 = np.argsort(-scores, axis=-1, kind="stable")[:, :k5]
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, pred), 1)
  support = confusion.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
  probs = softmax(scores) if aggregate == "logits" else np.asarray(scores, np.float64)
  aps = np.array([average_precision(probs[:, k], labels == k) for k in range(num_classes)])
  present = support > 0
  return {
    "top1": float((pred == labels).mean()) if n else float("nan"),
    "top5": float((top5 == labels[:, None]).any(-1).mean()) if n else float("nan"),
    "mean_class_accuracy": float(np.nanmean(per_class[present])) if present.any() else float("nan"),
    "mAP": float(np.nanmean(aps[present])) if present.any() else float("nan"),
    "per_class_accuracy": per_class,
    "confusion_matrix": confusion,
  }


class Evaluator:
  """Runs the multi-view eval step over a finite iterator of local batches.

  Args:
    graphdef: the model's graph in eval mode (`model.eval(); nnx.split(model, ...)`).
    mesh: the device mesh; batches are sharded over ('data', 'fsdp'), outputs replicated.
    model_segments: U of the model; num_segments/num_crops: the views of each test video.
    data: normalises the batches' uint8 video on the device (`DataSpec.model_input`); None: the
      video arrives normalised.
  """

  def __init__(
    self,
    graphdef: Any,
    mesh: jax.sharding.Mesh,
    *,
    model_segments: int,
    num_segments: int,
    num_crops: int,
    num_classes: int,
    aggregate: str = "logits",
    grouping: str = "per_crop",
    data: DataSpec | None = None,
  ) -> None:
    self.mesh, self.num_classes, self.aggregate = mesh, num_classes, aggregate
    self.num_segments, self.num_crops = num_segments, num_crops
    self.views = num_crops * (num_segments // model_segments)
    repl = sharding_lib.replicated(mesh)
    model_input = data_spec.input_fn(data)

    def eval_step(model_state: tuple[Any, ...], batch: dict[str, jax.Array]) -> dict[str, Any]:
      model = nnx.merge(graphdef, *model_state)
      video = model_input(batch["video"])
      views = interleave_views(video, model_segments, grouping)  # [V, B, U, T, H, W, 3]
      logits = jax.lax.map(lambda v: model(v).astype(jnp.float32), views)  # [V, B, K]
      return {
        "scores": jnp.moveaxis(logits, 0, 1),
        "label": batch["label"],
        "mask": batch["mask"],
        "id": batch["id"],
      }

    # One jit (one compilation per input layout) for the Evaluator's lifetime: keep the
    # Evaluator to evaluate again without recompiling.
    self._step = jax.jit(eval_step, out_shardings=repl)

  def _global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    if local["video"].shape[1:3] != (self.num_crops, self.num_segments):
      raise ValueError(
        f"eval batch video {local['video'].shape} does not have [B, {self.num_crops} crops, "
        f"{self.num_segments} snippets, ...]"
      )
    host = {
      "video": local["video"],
      "label": np.asarray(local["label"], np.int32),
      "mask": np.asarray(local["mask"], bool),
      "id": encode_ids(local["video_id"]),
    }
    data_sharding = sharding_lib.batch_sharding(self.mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(data_sharding, x), host)

  def compile(self, model_state: tuple[Any, ...], local_video: jax.ShapeDtypeStruct) -> None:
    """Compiles the eval step ahead of its first batch (safe in a background thread).

    model_state: arrays or ShapeDtypeStructs with the shardings the later calls will have;
    local_video: the process-local video batch [B, crops, U_test, T, H, W, 3].
    """
    b = local_video.shape[0] * jax.process_count()
    data = sharding_lib.batch_sharding(self.mesh)
    sds = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=data)
    batch = {
      "video": sds((b, *local_video.shape[1:]), local_video.dtype),
      "label": sds((b,), np.int32),
      "mask": sds((b,), np.bool_),
      "id": sds((b, ID_BYTES), np.uint8),
    }
    committed = lambda x: getattr(x, "committed", True)  # uncommitted arrays: no sharding
    state = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(
        x.shape, x.dtype, sharding=x.sharding if committed(x) else None
      ),
      model_state,
    )
    self._step.lower(state, batch).compile()

  def scores(self, model_state: tuple[Any, ...], local: dict[str, np.ndarray]) -> dict[str, Any]:
    """One process-local batch -> the global batch's view logits on the host.

    Returns `scores` f32 [B_global, V, K], `label`, `mask` and `video_id` (list of str), the same
    on every process.
    """
    batch = self._global_batch(local)
    out = jax.device_get(self._step(model_state, batch))
    out["video_id"] = decode_ids(out.pop("id"))
    return out

  def run(
    self,
    model_state: tuple[Any, ...],
    batches: Iterable[dict[str, np.ndarray]],
    *,
    expected_videos: int | None,
    progress_every_s: float = 30.0,
  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluates; returns (metrics, predictions) with predictions per video id.

    Logs progress (videos done, ETA from `expected_videos`) at most every `progress_every_s`.
    """
    agg = ViewAggregator(self.num_classes, self.views, self.aggregate)
    t0 = t_log = time.time()
    done = 0
    for local in batches:
      out = self.scores(model_state, local)
      agg.add(out["video_id"], out["scores"], out["label"], out["mask"])
      done += int(np.sum(out["mask"]))
      now = time.time()
      if expected_videos and now - t_log >= progress_every_s and done < expected_videos:
        eta = (now - t0) / done * (expected_videos - done)
        logging.info("eval: %d of %d videos, ETA %.0f s", done, expected_videos, eta)
        t_log = now
    ids, scores, labels = agg.finalize(expected_videos)
    metrics = classification_metrics(scores, labels, self.num_classes, aggregate=self.aggregate)
    metrics.update(num_videos=len(ids), num_classes=self.num_classes, num_views=self.views)
    predictions = {"video_id": ids, "scores": scores, "label": labels}
    return metrics, predictions


RESULT_KEYS = ("split", "step", "views", "checkpoint")


def write_results(
  out_dir: str,
  metrics: dict[str, Any],
  predictions: dict[str, Any],
  class_names: Sequence[str] | None = None,
  extra: dict[str, Any] | None = None,
) -> str:
  """Writes `out_dir/results.json` and `out_dir/predictions.npz` (process 0 only); returns path.

  Every results file records where it came from: `extra` (or `metrics`) must give `split`,
  `step`, `views` ("8x3": test snippets x crops) and `checkpoint`. `passes_per_video` is the
  number of model passes averaged per video (crops x test snippets / model.num_segments).
  """
  res = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in metrics.items()}
  res.update(extra or {})
  if "num_views" in res:  # the evaluator's name; ambiguous beside "views"
    res["passes_per_video"] = res.pop("num_views")
  missing = [k for k in RESULT_KEYS if res.get(k) is None]
  if missing:
    raise ValueError(f"write_results({out_dir}): the results need {missing} (where they came from)")
  out = paths.resolve(out_dir)
  path = str(out / "results.json")
  if jax.process_index() != 0:
    return path
  out.mkdir(parents=True, exist_ok=True)
  res = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in res.items()}
  res["per_class_accuracy"] = [None if np.isnan(a) else a for a in metrics["per_class_accuracy"]]
  if class_names is not None:
    res["class_names"] = list(class_names)
  paths.write_whole(out / "results.json", json.dumps(res, indent=1))
  scores = predictions["scores"]
  buf = io.BytesIO()
  np.savez(
    buf,
    video_id=np.array(predictions["video_id"]),
    label=predictions["label"],
    scores=scores,
    predicted=scores.argmax(-1) if len(scores) else np.zeros(0, np.int64),
  )
  (out / "predictions.npz").write_bytes(buf.getvalue())
  return path
