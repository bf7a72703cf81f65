"""The benchmarks measure what they claim: the same update in JAX and PyTorch, the same crops."""

import numpy as np
import pytest
import tensorflow as tf
import torch
from flax import nnx

from configs.base import DSA_R18_INSERT_FREQ, get_base_config
from dsanet_jax.common import data_spec
from dsanet_jax.convert import port, torch_checkpoint
from dsanet_jax.convert import torch_reference as tr
from dsanet_jax.data import pipeline, transforms
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
  resize + normalise of `decode_and_crop_jpeg` at those boxes (and not of the whole frame)."""
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
    frame = transforms.resize(frame[None], 16, 16)[0]
    return transforms.normalize(frame, cfg.data.mean, cfg.data.std, tf.float32).numpy()

  for i in range(6):
    want = prepare(tf.io.decode_and_crop_jpeg(jpegs[i], boxes[i], channels=3))
    np.testing.assert_allclose(got[i], want, atol=1e-4)
    whole = prepare(tf.io.decode_jpeg(jpegs[i], channels=3))
    assert np.abs(got[i] - whole).max() > 0.1


def test_benchmark_input_runs(ramp_builder):
  cfg = _input_config()
  r = benchmark_input.run(
    data_spec.from_config(cfg),
    batch_size=2,
    num_batches=2,
    repeats=1,
    raw_clips=3,
    builder=ramp_builder,
  )
  assert r["frames_per_s"] > 0 and r["raw_decode_crop_frames_per_s"] > 0
  assert 0 < r["mean_crop_area"] < 1
  assert len(r["rounds"]) == 1
