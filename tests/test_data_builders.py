"""Builders: the feature spec, the embedded `order_of_events` set, the registry."""

import json
import os

import jax
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from dsanet_jax.data import builders
from dsanet_jax.data.builders import base
from dsanet_jax.data.builders import order_of_events as oe

TINY = dict(num_train=8, num_validation=4)


@pytest.fixture(scope="module")
def tiny_oe(tmp_path_factory) -> tfds.core.DatasetBuilder:
  data_dir = str(tmp_path_factory.mktemp("oe"))
  return builders.ensure_prepared("order_of_events", data_dir, num_workers=2, **TINY)


def test_order_of_events_feature_spec(tiny_oe):
  info = tiny_oe.info
  assert info.splits["train"].num_examples == 8
  assert info.splits["validation"].num_examples == 4
  assert info.features["label"].names == [oe.class_name(o) for o in oe.ROTATIONS]
  assert isinstance(info.features["video"], tfds.features.Video)
  assert info.features["video"].feature.encoding_format == "jpeg"
  assert info.metadata["skipped"]["train"] == {"total": 0, "by_reason": {}, "listed": 8}
  for ex in tfds.as_numpy(tiny_oe.as_dataset(split="validation")):
    video = ex["video"]
    assert video.dtype == np.uint8 and video.shape[1:] == (32, 43, 3)
    assert video.shape[0] == ex["num_frames"]
    assert 40 <= ex["num_frames"] <= 56
    assert ex["fps"] == pytest.approx(12.0)
    assert ex["video_id"].decode().startswith("validation_")
  with open(os.path.join(tiny_oe.data_dir, "skipped_train.json")) as f:
    assert json.load(f) == []
  # A second call finds it prepared and does not rebuild.
  mtime = os.path.getmtime(os.path.join(tiny_oe.data_dir, "dataset_info.json"))
  again = builders.ensure_prepared(
    "order_of_events", tiny_oe.data_dir.split("/order_of_events")[0], **TINY
  )
  assert again.data_dir == tiny_oe.data_dir
  assert os.path.getmtime(os.path.join(tiny_oe.data_dir, "dataset_info.json")) == mtime


def test_order_of_events_stored_frames_match_render(tiny_oe):
  cfg = tiny_oe.builder_config
  labels = oe.split_labels(cfg, "validation", 4)
  ex = next(iter(tfds.as_numpy(tiny_oe.as_dataset(split="validation").filter(
    lambda e: e["video_id"] == "validation_00002"))))  # fmt: skip
  frames, _ = oe.render_video(cfg, "validation", 2, int(labels[2]))
  assert ex["label"] == labels[2]
  # JPEG at quality 90 on noisy 32px frames: close, not equal.
  assert np.abs(ex["video"].astype(float) - frames).mean() < 6.0


def test_order_of_events_is_deterministic_and_balanced():
  cfg = oe.OrderOfEventsConfig(name="t")
  a, _ = oe.render_video(cfg, "train", 5, 1)
  b, _ = oe.render_video(cfg, "train", 5, 1)
  c, _ = oe.render_video(cfg, "train", 6, 1)
  np.testing.assert_array_equal(a, b)
  assert a.shape != c.shape or np.any(a != c)
  labels = oe.split_labels(cfg, "train", 512)
  assert np.bincount(labels).tolist() == [128] * 4
  assert not np.array_equal(labels, np.arange(512) % 4)  # shuffled, not cyclic


def _dominant_event(frame: np.ndarray) -> int:
  """The event whose colour is nearest to the mean of the 2% most saturated pixels."""
  f = frame.reshape(-1, 3).astype(float)
  sat = f.max(1) - f.min(1)
  fg = f[sat >= np.quantile(sat, 0.98)].mean(0)
  return int(np.argmin([np.linalg.norm(fg - np.asarray(c)) for c in oe.EVENT_COLOURS]))


def test_order_of_events_classes_differ_only_in_order():
  """Each class shows all 4 events in its order; over the classes each event fills each quarter
  once, so a position-blind per-snippet classifier has nothing to go on."""
  cfg = oe.OrderOfEventsConfig(name="t")
  per_quarter = np.zeros((4, 4), int)  # [quarter, event]
  for label, order in enumerate(cfg.orderings):
    frames, events, _ = oe.render_video_and_events(cfg, "train", label, label)
    seq = [int(e) for i, e in enumerate(events) if e >= 0 and (i == 0 or events[i - 1] != e)]
    assert seq == list(order)
    for e in order:  # the pixels show the event the track says
      idx = np.flatnonzero(events == e)
      assert _dominant_event(frames[idx[len(idx) // 2]]) == e
    for q, part in enumerate(np.array_split(events, 4)):
      per_quarter[q, np.bincount(part[part >= 0], minlength=4).argmax()] += 1
  np.testing.assert_array_equal(per_quarter, np.ones((4, 4), int))


def test_order_of_events_no_short_snippet_sees_two_events():
  """The gaps hide the order: any 4 consecutive frames show exactly one event, and every event
  has blank frames on both sides, in every class, so TSN cannot learn the order from snippets."""
  cfg = oe.OrderOfEventsConfig(name="t")
  for i in range(40):
    _, events, _ = oe.render_video_and_events(cfg, "validation", i, i % 4)
    windows = np.lib.stride_tricks.sliding_window_view(events, 4)
    for w in windows:
      assert len(set(w[w >= 0].tolist())) == 1, (i, w)
    # Every event has >= 3 blank frames on both sides, the first and last included.
    padded = np.concatenate([[-2], events, [-2]])
    starts = np.flatnonzero((padded[1:-1] >= 0) & (padded[:-2] != padded[1:-1]))
    ends = np.flatnonzero((padded[1:-1] >= 0) & (padded[2:] != padded[1:-1]))
    assert len(starts) == len(ends) == 4
    assert all(s >= 3 and np.all(events[s - 3 : s] == -1) for s in starts)
    assert all(e + 3 < len(events) and np.all(events[e + 1 : e + 4] == -1) for e in ends)
    # A 5-frame window can see two: the documented limit.
  assert any(
    len(set(w[w >= 0].tolist())) == 2 for w in np.lib.stride_tricks.sliding_window_view(events, 5)
  )


def test_event_lengths_within_limits():
  rng = np.random.default_rng(0)
  for n in range(20, 41):
    lengths = oe.event_lengths(rng, n, 4)
    assert lengths.sum() == n
    assert lengths.min() >= int(0.75 * n / 4) - 1 and lengths.max() <= int(1.25 * n / 4) + 1


def test_get_builder_names_and_errors(tmp_path):
  b = builders.get_builder("order_of_events", str(tmp_path))
  assert b.builder_config.name == "default" and b.builder_config.short_side == 32
  b = builders.get_builder("order_of_events/default", str(tmp_path), short_side=48)
  assert b.builder_config.short_side == 48 and b.builder_config.name != "default"
  with pytest.raises(ValueError, match="unknown dataset 'nope'"):
    builders.get_builder("nope", str(tmp_path))
  with pytest.raises(ValueError, match="unknown config fields"):
    builders.get_builder("order_of_events", str(tmp_path), shortside=3)
  with pytest.raises(ValueError, match="no prepared dataset"):
    builders.get_builder("order_of_events/missing_config", str(tmp_path))


def test_video_features_rejects_clashing_extras():
  with pytest.raises(ValueError, match="clash"):
    base.video_features(["a"], label=tfds.features.Text())


def _probe_accuracy(order_aware: bool, train, val) -> float:
  """Val accuracy of a small MLP on 4x4-pooled pixels of U=4 snippets of T=4 frames (stride 1)
  sampled as the original (random start per segment in training, segment centres in test).
  order_aware=False is TSN-like (per-snippet MLP, logits averaged, 8 test snippets);
  True concatenates the 4 snippets in order (what DSA's neighbour mixing can exploit)."""
  u, t = 4, 4

  def feats(frames):  # [F, 32, 43, 3] -> [F, 240]
    f = frames[:, :, :40].astype(np.float32).reshape(len(frames), 8, 4, 10, 4, 3).mean((2, 4))
    return f.reshape(len(frames), -1) / 255.0 - 0.4

  def snippets(f, offsets):
    return np.stack([f[o : o + t].reshape(-1) for o in offsets])

  def test_offsets(n, k):
    tick = (n - t + 1) / k
    return [int(tick / 2 + tick * x) for x in range(k)]

  (ftr, ytr), (fva, yva) = [([feats(v) for v in vs], ys) for vs, ys in (train, val)]
  din = ftr[0].shape[1] * t * (u if order_aware else 1)
  k1, k2 = jax.random.split(jax.random.key(0))
  params = dict(
    w1=jax.random.normal(k1, (din, 64)) * din**-0.5, w2=jax.random.normal(k2, (64, 4)) * 0.1
  )

  def apply(p, x):  # x [B, U, D]
    if order_aware:
      x = x.reshape(len(x), 1, -1)
    return (jax.nn.relu(x @ p["w1"]) @ p["w2"]).mean(1)

  opt = optax.adam(2e-3)

  @jax.jit
  def step(p, s, x, y):
    def loss(p):
      return optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()

    g = jax.grad(loss)(p)
    upd, s = opt.update(g, s, p)
    return optax.apply_updates(p, upd), s

  state, rng = opt.init(params), np.random.default_rng(0)
  for _ in range(40):
    x = []
    for f in ftr:
      a = (len(f) - t + 1) // u
      x.append(snippets(f, np.arange(u) * a + rng.integers(0, a, u)))
    params, state = step(params, state, np.stack(x), ytr)
  k = u if order_aware else 8
  x = np.stack([snippets(f, test_offsets(len(f), k)) for f in fva])
  return float((np.asarray(apply(params, x)).argmax(-1) == yva).mean())


def test_order_of_events_defeats_tsn_but_not_an_order_aware_model():
  cfg = oe.OrderOfEventsConfig(name="t")
  data = []
  for split, n in (("train", 256), ("validation", 128)):
    labels = oe.split_labels(cfg, split, n)
    data.append(([oe.render_video(cfg, split, i, int(y))[0] for i, y in enumerate(labels)], labels))
  assert _probe_accuracy(True, *data) >= 0.9
  assert _probe_accuracy(False, *data) <= 0.45  # chance 0.25; 128 videos: +-0.04
