"""Multi-view evaluation: view grouping per crop, per-video aggregation, exactly-once, metrics."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from dsanet_jax.train import evaluator as ev
from dsanet_jax.train import sharding as sharding_lib
from dsanet_jax.train import state as state_lib


def test_interleaved_views_are_grouped_per_crop():
  b, c, u_test, u = 2, 3, 8, 4
  # value = 1000 * video + 100 * crop + snippet
  v = np.arange(b)[:, None, None] * 1000 + np.arange(c)[None, :, None] * 100 + np.arange(u_test)
  video = jnp.asarray(v, jnp.float32).reshape(b, c, u_test, 1, 1, 1, 1)
  views = np.asarray(ev.interleave_views(video, u)).reshape(c * 2, b, u)
  for crop in range(c):
    for p, snippets in enumerate(([0, 2, 4, 6], [1, 3, 5, 7])):
      for n in range(b):
        want = [1000 * n + 100 * crop + s for s in snippets]
        np.testing.assert_array_equal(views[crop * 2 + p, n], want)
  with pytest.raises(ValueError, match=r"multiple of model\.num_segments"):
    ev.interleave_views(jnp.zeros((1, 1, 6, 1, 1, 1, 1)), 4)
  with pytest.raises(ValueError, match=r"eval\.grouping='mixed'"):
    ev.interleave_views(jnp.zeros((1, 1, 8, 1, 1, 1, 1)), 4, "mixed")


def _labelled_views(b: int, crops: int, u_test: int) -> jax.Array:
  """video [B, crops, U_test, 1, 1, 1, 1] holding 1000 * video + 100 * crop + clip."""
  v = (
    np.arange(b)[:, None, None] * 1000
    + np.arange(crops)[None, :, None] * 100
    + np.arange(u_test)[None, None, :]
  )
  return jnp.asarray(v, jnp.float32).reshape(b, crops, u_test, 1, 1, 1, 1)


def test_original_grouping_equals_the_spec_lists():
  # spec dsanet.md §4.4: 8 clips x 3 crops, labelled 100 * crop + clip.
  spec = [
    [0, 1, 2, 6],
    [7, 100, 104, 105],
    [106, 202, 203, 204],  # pass 1
    [3, 4, 5, 101],
    [102, 103, 107, 200],
    [201, 205, 206, 207],  # pass 2
  ]
  views = np.asarray(ev.interleave_views(_labelled_views(2, 3, 8), 4, "original"))
  views = views.reshape(6, 2, 4)
  for n in range(2):
    np.testing.assert_array_equal(views[:, n], np.asarray(spec) + 1000 * n)
  # Every view exactly once.
  assert sorted(views[:, 0].ravel().tolist()) == sorted(
    c * 100 + x for c in range(3) for x in range(8)
  )
  per_crop = np.asarray(ev.interleave_views(_labelled_views(2, 3, 8), 4)).reshape(6, 2, 4)
  assert not np.array_equal(per_crop, views)


def test_original_grouping_with_one_crop_is_per_crop():
  for u_test in (4, 8, 12):
    video = _labelled_views(1, 1, u_test)
    orig = np.asarray(ev.interleave_views(video, 4, "original"))
    np.testing.assert_array_equal(orig, np.asarray(ev.interleave_views(video, 4, "per_crop")))
  got = np.asarray(ev.interleave_views(_labelled_views(1, 1, 8), 4, "original")).reshape(2, 4)
  np.testing.assert_array_equal(got, [[0, 2, 4, 6], [1, 3, 5, 7]])


def test_aggregator_averages_per_video_id_and_counts_once():
  agg = ev.ViewAggregator(num_classes=3, views_per_video=2, aggregate="logits")
  s = np.array([[[1.0, 0, 0], [3.0, 0, 0]], [[0, 2.0, 0], [0, 4.0, 0]], [[9, 9, 9], [9, 9, 9]]])
  agg.add(["a", "b", "pad"], s, np.array([0, 1, 0]), np.array([True, True, False]))
  ids, scores, labels = agg.finalize(expected_videos=2)
  assert ids == ["a", "b"]
  np.testing.assert_allclose(scores, [[2.0, 0, 0], [0, 3.0, 0]])
  np.testing.assert_array_equal(labels, [0, 1])
  with pytest.raises(RuntimeError, match="split has 3"):
    agg.finalize(expected_videos=3)
  agg.add(["a"], s[:1], np.array([0]), np.array([True]))  # 'a' again: 4 views
  with pytest.raises(RuntimeError, match="not seen exactly once"):
    agg.finalize(expected_videos=2)


def test_aggregator_probs_mode_averages_softmax():
  agg = ev.ViewAggregator(num_classes=2, views_per_video=2, aggregate="probs")
  agg.add(["v"], np.array([[[0.0, 0.0], [10.0, 0.0]]]), np.array([0]), np.array([True]))
  _, scores, _ = agg.finalize(None)
  p2 = np.exp(10) / (np.exp(10) + 1)
  np.testing.assert_allclose(scores[0], [(0.5 + p2) / 2, (0.5 + 1 - p2) / 2], rtol=1e-9)
  with pytest.raises(ValueError, match=r"eval\.aggregate"):
    ev.ViewAggregator(2, 1, "mean")


def test_metrics_on_crafted_scores():
  scores = np.array(
    [[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]]
  )
  labels = np.array([0, 1, 1, 2, 2])
  m = ev.classification_metrics(scores, labels, 3)
  assert m["top1"] == pytest.approx(3 / 5)
  assert m["top5"] == pytest.approx(1.0)
  np.testing.assert_allclose(m["per_class_accuracy"], [1.0, 0.5, 0.5])
  assert m["mean_class_accuracy"] == pytest.approx(2 / 3)
  np.testing.assert_array_equal(m["confusion_matrix"], [[1, 0, 0], [1, 1, 0], [1, 0, 1]])
  # class 1 ranked by score: v1 (pos) .7, v2 (pos) .4? no: scores[:,1] = .1 .7 .3 .2 .4
  # order v1(+), v4(-), v2(+), v3(-), v0(-): precisions at positives 1/1 and 2/3 -> AP = 5/6
  assert ev.average_precision(scores[:, 1], labels == 1) == pytest.approx(5 / 6)
  assert np.isnan(ev.average_precision(scores[:, 0], np.zeros(5, bool)))


def test_map_ranks_softmax_probabilities_not_logits():
  # Class 0's logit ranks video 1 (10.0) above video 0 (2.0), but video 1's other class is even
  # larger, so its class-0 PROBABILITY is lower: AP(class 0) is 1.0 on probabilities, 0.5 on logits.
  logits = np.array([[2.0, 0.0], [10.0, 20.0]])
  labels = np.array([0, 1])
  m = ev.classification_metrics(logits, labels, 2)
  probs = ev.softmax(logits)
  assert probs[0, 0] > probs[1, 0] and logits[0, 0] < logits[1, 0]
  assert ev.average_precision(logits[:, 0], labels == 0) == pytest.approx(0.5)
  assert m["mAP"] == pytest.approx(1.0)
  # Already probabilities ('probs' aggregation): ranked as they are, not softmaxed again.
  m_probs = ev.classification_metrics(probs, labels, 2, aggregate="probs")
  assert m_probs["mAP"] == pytest.approx(1.0)


class ScoreModel(nnx.Module):
  """logits = scale * mean of the video over (U, T, H, W), channels as the 3 classes."""

  def __init__(self):
    self.scale = nnx.Param(jnp.ones(()))
    self.num_segments = 2

  def __call__(self, video):
    assert video.shape[1] == self.num_segments
    return self.scale[...] * video.mean(axis=(1, 2, 3, 4))


def _eval_batches(n_videos, local_bs, crops, u_test, start=0):
  """Video i, crop c, snippet s holds one-hot(label) * (1 + c + s) so view scores are known."""
  labels = np.arange(n_videos) % 3
  out = []
  for b0 in range(0, n_videos, local_bs):
    idx = np.arange(b0, b0 + local_bs)
    mask = idx < n_videos
    video = np.zeros((local_bs, crops, u_test, 1, 2, 2, 3), np.float32)
    for r, i in enumerate(idx):
      if mask[r]:
        for c in range(crops):
          for s in range(u_test):
            video[r, c, s, ..., labels[i]] = 1 + c + s
    out.append(
      {
        "video": video,
        "label": np.where(mask, labels[idx % n_videos], 0).astype(np.int32),
        "mask": mask,
        "video_id": [f"vid{start + i}".encode() if m else b"" for i, m in zip(idx, mask)],
      }
    )
  return out


def test_evaluator_runs_sharded_with_padding_and_counts_each_video_once():
  mesh = sharding_lib.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1)))
  model = ScoreModel()
  model.eval()
  graph, params, stats, rngs = state_lib.split_model(model)
  e = ev.Evaluator(
    graph, mesh, model_segments=2, num_segments=4, num_crops=2, num_classes=3, aggregate="logits"
  )
  batches = _eval_batches(13, 8, 2, 4)  # 2 batches of 8 = 13 videos + 3 padding rows
  metrics, pred = e.run((params, stats, rngs), batches, expected_videos=13)
  assert metrics["num_videos"] == 13 and metrics["num_views"] == 4
  assert metrics["top1"] == 1.0
  # view (crop c, pass p) of a video scores mean(1 + c + s for s in pass p) on its label
  want = np.mean([np.mean([1 + c + s for s in range(p, 4, 2)]) for c in range(2) for p in range(2)])
  i = pred["video_id"].index("vid5")
  np.testing.assert_allclose(pred["scores"][i][5 % 3], want, rtol=1e-6)
  with pytest.raises(RuntimeError, match="split has 14"):
    e.run((params, stats, rngs), _eval_batches(13, 8, 2, 4), expected_videos=14)
  dup = _eval_batches(8, 8, 2, 4) + _eval_batches(8, 8, 2, 4)
  with pytest.raises(RuntimeError, match="exactly once"):
    e.run((params, stats, rngs), dup, expected_videos=8)


def test_write_results(tmp_path):
  m = ev.classification_metrics(np.eye(3), np.arange(3), 3)
  m.update(num_videos=3, num_classes=3, num_views=6, views="8x3")
  preds = {"video_id": ["a", "b", "c"], "scores": np.eye(3), "label": np.arange(3)}
  with pytest.raises(ValueError, match=r"need \['split', 'step', 'checkpoint'\]"):
    ev.write_results(str(tmp_path), m, preds)  # a results file must say where it came from
  path = ev.write_results(
    str(tmp_path), m, preds, extra={"split": "test", "step": 5, "checkpoint": "W/checkpoints@5"}
  )
  with open(path) as f:
    res = json.load(f)
  assert res["top1"] == 1.0 and res["num_videos"] == 3 and res["num_classes"] == 3
  assert res["split"] == "test" and res["step"] == 5 and res["views"] == "8x3"
  assert res["passes_per_video"] == 6 and "num_views" not in res
  pred = np.load(tmp_path / "predictions.npz")
  np.testing.assert_array_equal(pred["predicted"], [0, 1, 2])
  assert pred["video_id"].tolist() == ["a", "b", "c"]
  np.testing.assert_array_equal(pred["scores"], np.eye(3))


def test_evaluator_compiled_ahead_runs_without_recompiling_and_reports_progress(caplog):
  """`compile()` (as the trainer runs it in a thread during training) fills the step's cache:
  the later evaluations compile nothing; a progress line with an ETA is logged."""
  import logging

  mesh = sharding_lib.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1)))
  model = ScoreModel()
  model.eval()
  graph, params, stats, rngs = state_lib.split_model(model)
  e = ev.Evaluator(graph, mesh, model_segments=2, num_segments=4, num_crops=2, num_classes=3)
  batches = _eval_batches(13, 8, 2, 4)
  e.compile((params, stats, rngs), jax.ShapeDtypeStruct(batches[0]["video"].shape, np.float32))
  caplog.set_level(logging.INFO)
  caplog.set_level(logging.INFO, logger="absl")  # other tests' CLIs may have raised absl's level
  jax.config.update("jax_log_compiles", True)
  try:
    for _ in range(2):
      metrics, _ = e.run((params, stats, rngs), batches, expected_videos=13, progress_every_s=0)
  finally:
    jax.config.update("jax_log_compiles", False)
  assert metrics["num_videos"] == 13
  compiled = [
    r.getMessage() for r in caplog.records if "Compiling jit(eval_step)" in r.getMessage()
  ]
  assert compiled == [], compiled
  progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval: ")]
  assert progress and progress[0].startswith("eval: 8 of 13 videos, ETA"), progress
