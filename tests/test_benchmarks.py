"""The benchmarks measure what they claim: the same update in JAX and PyTorch, the same crops."""

import os

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import torch
from flax import nnx

from configs.base import DSA_R18_INSERT_FREQ, get_base_config
from dsanet_jax.common import data_spec
from dsanet_jax.convert import port, torch_checkpoint
from dsanet_jax.convert import torch_reference as tr
from dsanet_jax.data import frame_index, pipeline, transforms
from dsanet_jax.models import build_model
from dsanet_jax.tools import benchmark_input, benchmark_model
from tests import test_data_pipeline as tdp

# ------------------------------------------------------------------ benchmark_model


def _step_config(clip: float):
  c = get_base_config()
  m = c.model
  m.depth, m.base_width, m.num_classes, m.insert_freq = 18, 4, 5, DSA_R18_INSERT_FREQ
  m.dropout_rate, m.bn_group_size = 0.0, 0  # dropout masks cannot agree across frameworks
  t = c.train
  t.base_lr, t.weight_decay, t.grad_clip_norm = 0.5, 1e-3, clip
  t.warmup_epochs, t.warmup_start_factor = 0.05, 0.5  # 5 warm-up steps: the rate changes per step
  return c


def test_benchmark_steps_make_the_same_update():
  """Two steps of the benchmark's JAX step (the trainer's, with the config's optimiser) and of its
  PyTorch step from the same weights move every parameter alike: clipping (active here), coupled
  weight decay, Nesterov momentum and the schedule's learning rate agree."""
  rng = np.random.RandomState(0)
  video = rng.randn(2, 4, 2, 32, 32, 3).astype(np.float32)
  labels = np.array([1, 3], np.int32)
  cfg = _step_config(clip=0.0)
  ref = tr.randomize_(tr.build_reference_from_config(cfg.model), seed=1)
  sd0 = {k: torch_checkpoint.to_numpy(v) for k, v in ref.state_dict().items()}
  # The gradient norm at the start, to put the clipping threshold below it.
  probe = benchmark_model.torch_runs(cfg, video, labels, net=ref)
  probe["fwd_bwd"]()
  norm = float(torch.nn.utils.clip_grad_norm_(ref.parameters(), float("inf")))
  ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd0.items()})
  cfg = _step_config(clip=norm / 2)

  model = build_model(cfg.model, rngs=nnx.Rngs(params=0, dropout=1))
  port.convert_state_dict(sd0, model, cfg.model)
  jx = benchmark_model.jax_runs(cfg, video, labels, model=model)
  th = benchmark_model.torch_runs(cfg, video, labels, net=ref)
  for _ in range(2):
    jx["step"]()
    th["step"]()

  template = build_model(cfg.model, rngs=nnx.Rngs(params=0, dropout=1))
  graph, params, rest = nnx.split(template, nnx.Param, ...)
  nnx.replace_by_pure_dict(params, jx["state"]()["params"])
  got = port.export_state_dict(nnx.merge(graph, params, rest))
  moved = 0.0
  for k, p in th["net"].named_parameters():
    want = p.detach().numpy() - sd0[k]
    delta = got[k] - sd0[k]
    moved = max(moved, float(np.abs(want).max()))
    np.testing.assert_allclose(delta, want, atol=2e-5, rtol=1e-3, err_msg=k)
  assert moved > 1e-3  # the steps did move the weights


# ------------------------------------------------------------------ benchmark_input

H, W = tdp.H, tdp.W


class RampVideos(tdp.TinyVideos, skip_registration=True):
  """TinyVideos' features; frames whose colour encodes the position (x, y) and the frame index,
  so that crops are recognisable."""

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    y, x = np.mgrid[0:H, 0:W]
    for i in range(3):
      nf = 24 + 4 * i
      frames = [
        np.stack([x * 255 // W, y * 255 // H, np.full_like(x, 8 * j)], -1).astype(np.uint8)
        for j in range(nf)
      ]
      label = i % len(tdp.CLASSES)
      yield f"v{i}", {"video": np.stack(frames), "label": label, "video_id": f"v{i}",
                      "num_frames": nf, "fps": 25.0}  # fmt: skip


@pytest.fixture(scope="module")
def ramp_builder(tmp_path_factory):
  b = RampVideos(data_dir=str(tmp_path_factory.mktemp("tfds")))
  b.download_and_prepare()
  return b


def _input_config():
  c = get_base_config()
  c.data.name = "ramp_videos"
  c.model.num_segments, c.data.num_frames, c.data.frame_interval = 2, 3, 2
  c.data.crop_size, c.data.shuffle_buffer, c.data.flip = 16, 1, False
  return c


def test_raw_baseline_decodes_the_pipelines_crops(ramp_builder):
  """The boxes of `sampled_crops` are the ones the pipeline decodes: its first clip equals
  the resize of `decode_and_crop_jpeg` at those boxes (and not of the whole frame)."""
  cfg = _input_config()
  jpegs, boxes = benchmark_input.sampled_crops(data_spec.from_config(cfg), 1, ramp_builder)
  assert jpegs.shape == (6,) and boxes.shape == (6, 4)
  assert not np.all(boxes.numpy()[:, 2:] == [H, W])  # a real crop, not the whole frame
  ds = pipeline.make_train_dataset(
    data_spec.from_config(cfg),
    local_batch_size=1,
    process_index=0,
    process_count=1,
    builder=ramp_builder,
  )
  got = next(ds.as_numpy_iterator())["video"][0].reshape(6, 16, 16, 3)

  def prepare(frame):
    out = np.empty((16, 16, 3), np.uint8)
    transforms.resize_into(frame.numpy(), out)
    return out.astype(np.int32)

  for i in range(6):
    want = prepare(tf.io.decode_and_crop_jpeg(jpegs[i], boxes[i], channels=3))
    np.testing.assert_array_equal(got[i], want)
    whole = prepare(tf.io.decode_jpeg(jpegs[i], channels=3))
    assert np.abs(got[i] - whole).max() > 1


def test_uint8_pipeline_equals_the_float_pipeline_within_rounding(ramp_builder):
  """The batches that leave the host as uint8 and are normalised on the device equal the float32
  batches the pipeline built before (decode the box, flip, float resize, normalise on the host)
  to within one unit of uint8 rounding, flipped clips included."""
  cfg = _input_config()
  cfg.data.flip, cfg.data.rrc_scale = True, (0.05, 1.0)  # boxes smaller and larger than 16^2
  spec = data_spec.from_config(cfg)
  n, fpc = 3, 6  # 3 videos: batch e of 3 clips is epoch e
  it = pipeline.make_train_iterator(
    spec, local_batch_size=n, process_index=0, process_count=1, builder=ramp_builder
  )
  mean, std = np.asarray(cfg.data.mean, np.float32), np.asarray(cfg.data.std, np.float32)
  flips, sizes = set(), set()
  for epoch in range(3):
    batch = next(it)["video"]  # uint8 [n, U, T, 16, 16, 3], as the host sends it
    assert batch.dtype == np.uint8
    got = np.asarray(spec.model_input(jnp.asarray(batch))).reshape(n, fpc, 16, 16, 3)
    ds = pipeline.read_examples(ramp_builder, "train", 0, n)
    e = tf.constant(epoch, tf.int64)
    ds = ds.map(lambda ex, e=e: pipeline.train_select(spec, e, ex["index"], ex))
    for c, clip in enumerate(ds.map(lambda el: pipeline.train_clip(spec, None, el))):
      for f in range(fpc):
        frame = tf.io.decode_and_crop_jpeg(clip["jpegs"][f], clip["box"], channels=3)
        if bool(clip["flip"]):
          frame = frame[:, ::-1]
        frame = tf.image.resize(tf.cast(frame, tf.float32)[None], [16, 16], "bilinear")[0]
        want = (frame.numpy() - mean) / std  # the former host output
        units = np.abs(got[c, f] - want) * std  # on the 0-255 scale
        assert units.max() < 1.0, (epoch, c, f, units.max())  # within one unit of uint8
      flips.add(bool(clip["flip"]))
      sizes.add(int(clip["box"][2]) > 16)
  assert flips == {True, False} and sizes == {True, False}, (flips, sizes)


@pytest.mark.parametrize("short_side", [H, H + 5])
def test_uint8_eval_views_equal_the_float_views_within_rounding(ramp_builder, short_side):
  """The eval batches (uint8, normalised on the device) equal the float32 views the pipeline built
  before (decode, float short-side resize, three crops, normalise on the host) to within one
  unit of uint8 rounding: frames kept at their size (exactly) and resized (upscaled)."""
  cfg = _input_config()
  cfg.eval.short_side, cfg.eval.crop_size = short_side, H - 2
  spec = data_spec.from_config(cfg)
  u, s = 2, H - 2
  (batch,) = list(
    pipeline.make_eval_iterator(
      spec,
      split="train",
      local_batch_size=3,
      process_index=0,
      process_count=1,
      num_segments=u,
      num_crops=3,
      builder=ramp_builder,
    )
  )
  assert batch["video"].dtype == np.uint8 and batch["mask"].all()
  got = np.asarray(spec.model_input(jnp.asarray(batch["video"])))  # [3, crops, U, T, S, S, 3]
  mean, std = np.asarray(cfg.data.mean, np.float32), np.asarray(cfg.data.std, np.float32)
  ds = pipeline.read_examples(ramp_builder, "train", 0, 3)
  for ex in ds.map(lambda ex: pipeline.eval_select(spec, u, ex)):
    (c,) = np.flatnonzero(batch["video_id"] == ex["video_id"].numpy())
    frames = tf.cast(tf.stack([tf.io.decode_jpeg(j, channels=3) for j in ex["jpeg"]]), tf.float32)
    h, w = (H, W) if short_side == H else (short_side, round(W * short_side / H))
    frames = tf.image.resize(frames, [h, w], "bilinear").numpy()  # the former float resize
    for k, x in enumerate([0, (w - s) // 2, w - s]):  # landscape: left, centre, right
      y = (h - s) // 2
      want = (frames[:, y : y + s, x : x + s] - mean) / std
      units = np.abs(got[c, k].reshape(want.shape) - want) * std
      limit = 1e-3 if short_side == H else 1.0  # no resize: exact; else within one unit
      assert units.max() < limit, (short_side, c, k, units.max())


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_benchmark_input_runs(ramp_builder, kind):
  """Both pipelines' figures are produced: rates, CPU ratio, bytes to the device and read."""
  cfg = _input_config()
  cfg.eval.num_segments, cfg.eval.num_crops, cfg.eval.short_side, cfg.eval.crop_size = 2, 3, 24, 24
  spec = data_spec.from_config(cfg)
  r = benchmark_input.run(
    spec,
    kind=kind,
    split="train",
    batch_size=2,
    num_batches=2,
    repeats=1,
    raw_clips=3,
    builder=ramp_builder,
  )
  assert r["pipeline"] == kind and len(r["rounds"]) == 1
  assert r["frames_per_s"] > 0 and r["raw_decode_frames_per_s"] > 0 and r["ratio_cpu"] > 0
  fpc, side = (6, 16) if kind == "train" else (6 * 3, 24)  # eval: U_test * T frames x 3 crops
  assert r["bytes_to_device_per_batch"]["video"] == 2 * fpc * side * side * 3  # uint8
  assert r["bytes_to_device_per_batch"]["total"] == 2 * fpc * side * side * 3 + 2 * 4 + 2
  info = ramp_builder.info.splits["train"]
  assert r["bytes_stored_per_clip"] == round(info.num_bytes / info.num_examples)
  # byte-range reads: the used JPEGs and a share of the index checks (each index file and its
  # shard's two 64 KiB ends, twice); on these tiny shards the ends are the whole shard
  shards = {os.fspath(fi.filename) for fi in info.file_instructions}
  checks = sum(
    os.path.getsize(frame_index.index_path(f)) + min(2 * frame_index.ENDS, os.path.getsize(f))
    for f in shards
  )
  want = r["bytes_used_per_clip"] + 2 * checks / info.num_examples
  assert abs(r["bytes_read_per_clip"] - want) <= 1 and r["bytes_used_per_clip"] > 0
  per_frame = r["bytes_read_per_clip"] / (fpc if kind == "train" else 6)
  assert abs(r["bytes_read_per_used_frame"] - per_frame) <= 1  # both rounded
  assert r["read_over_used"] > 1
  if kind == "train":
    assert 0 < r["mean_crop_area"] < 1
