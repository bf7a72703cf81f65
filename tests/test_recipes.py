"""The paper recipes as shipped: every config's sampling fits its dataset, the frame-rate check,
the original's RandomResizedCrop distribution, and the ImageNet initialisation each names."""

import importlib
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs.base import get_base_config
from dsanet_jax.common import data_spec
from dsanet_jax.data import pipeline, transforms
from dsanet_jax.tools import sample_frames
from tests.test_train_configs import CONFIGS, VARIANTS

# Frames per video of each dataset (spec §4.1; Kinetics 5-10 s at 30 fps, SS 12 fps clips,
# order_of_events: its builder's 40-56).
LENGTHS = {
  "kinetics400": (150, 300),
  "something_something": (16, 80),
  "order_of_events": (40, 56),
}
PAPER = ("kinetics400", "mini_kinetics200", "something_something_v1", "something_something_v2")


def _configs() -> list[tuple[str, str | None]]:
  return [(name, arg) for name in CONFIGS for arg in (None, *VARIANTS.get(name, ()))]


def _get_config(name: str, arg: str | None):
  mod = importlib.import_module(name)
  return mod.get_config(arg) if arg is not None else mod.get_config()


def _lengths(data_name: str) -> range:
  (lo, hi) = next(v for k, v in LENGTHS.items() if data_name.startswith(k))
  return range(lo, hi + 1)


def _distinct(snippets) -> bool:
  return len({frozenset(s) for s in snippets}) == len(snippets)


def _span(snippets) -> int:
  return max(max(s) for s in snippets) - min(min(s) for s in snippets) + 1


@pytest.mark.parametrize(("name", "arg"), _configs())
def test_snippets_are_distinct_and_cover_the_video(name, arg):
  """Over the dataset's length range: the U training snippets (several epochs / examples) are
  pairwise different frame sets spanning >= N/2 frames together; so are the U_test test snippets.
  A clip-level config (U=1, mini_kinetics200/i3d_r18) trains on one short clip by design: only its
  test snippets are held to this."""
  cfg = _get_config(name, arg)
  u = cfg.model.num_segments
  lengths = _lengths(cfg.data.name)
  step = max(1, len(lengths) // 24)
  for n in [*lengths[::step], lengths[-1]]:
    for index in range(3):
      out = sample_frames.sample_frames(data_spec.from_config(cfg), n, epoch=index, index=index)
      assert len(out["train"]) == u and len(out["train"][0]) == cfg.data.num_frames
      if u > 1:
        assert _distinct(out["train"]), (name, arg, n, out["train"])
        assert _span(out["train"]) >= n / 2, (name, arg, n, out["train"])
    assert len(out["test"]) == cfg.eval.num_segments
    assert _distinct(out["test"]), (name, arg, n, out["test"])
    assert _span(out["test"]) >= n / 2, (name, arg, n, out["test"])


def test_kinetics_recipe_would_collapse_on_something_something():
  """The coverage check can fail: the K400 sampling (T8 x stride 8) on 48-frame videos."""
  k400 = importlib.import_module("configs.kinetics400.dsa_i3d_r50").get_config()
  out = sample_frames.sample_frames(data_spec.from_config(k400), 48)
  assert not out["train_distinct"] and not out["test_distinct"]


@pytest.mark.parametrize("name", CONFIGS)
def test_paper_configs_name_their_imagenet_init(name):
  cfg = importlib.import_module(name).get_config()
  doc = importlib.import_module(name).__doc__
  if name.split(".")[1] in PAPER:
    assert cfg.init_from is None  # given on the command line, never a path baked in
    r = "ResNet-18" if cfg.model.depth == 18 else "ResNet-50"
    assert f"torchvision ImageNet {r} weights" in cfg.init_expected
    assert f"--config.init_from=/path/resnet{cfg.model.depth}.pth" in doc
    want_fps = 30.0 if "kinetics" in cfg.data.name else None
    assert cfg.data.fps == want_fps
  else:  # the embedded default stays from scratch
    assert cfg.init_expected == "" and cfg.init_from is None
    assert cfg.data.fps == 12.0  # order_of_events renders at 12 fps


# ---------------------------------------------------------------- frame rate


class RatedVideos(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Two 4-frame videos; `info.metadata` records `target_fps` unless it is RatedVideos.UNSET."""

  VERSION = tfds.core.Version("1.0.0")
  code_path = None
  UNSET = object()
  target_fps = UNSET

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "video": tfds.features.Video(shape=(None, 8, 8, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(names=["a", "b"]),
          "video_id": tfds.features.Text(),
        }
      ),
      metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    if self.target_fps is not self.UNSET:
      self.info.metadata["target_fps"] = self.target_fps
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(2):
      video = np.zeros((4, 8, 8, 3), np.uint8)
      yield str(i), {"video": video, "label": i, "video_id": str(i)}


def _rated(tmp_path, fps):
  cls = type("RatedVideos", (RatedVideos,), {"target_fps": fps}, skip_registration=True)
  b = cls(data_dir=str(tmp_path))
  b.download_and_prepare()
  return cls(data_dir=str(tmp_path))  # reloaded: the metadata as stored on disk


def _cfg(fps):
  c = get_base_config()
  c.data.name = "rated_videos"
  c.data.fps = fps
  return c


@pytest.mark.parametrize(("built", "wanted"), [(30.0, 30.0), (None, None), (12.0, 12.0)])
def test_frame_rate_check_accepts_matching_rates(tmp_path, built, wanted):
  pipeline.check_frame_rate(data_spec.from_config(_cfg(wanted)), _rated(tmp_path, built))


@pytest.mark.parametrize(("built", "wanted"), [(25.0, 30.0), (None, 30.0), (30.0, None)])
def test_frame_rate_check_fails_on_a_mismatch(tmp_path, built, wanted):
  b = _rated(tmp_path, built)
  with pytest.raises(ValueError, match="frame rate mismatch") as e:
    pipeline.check_frame_rate(data_spec.from_config(_cfg(wanted)), b)
  msg = str(e.value)
  assert "data.fps" in msg and ("--target_fps=" in msg) == (wanted is not None)
  assert ("native rates" in msg) == (built is None or wanted is None)
  for rate in (built, wanted):
    assert rate is None or f"{rate:g} fps" in msg
  with pytest.raises(ValueError, match="frame rate mismatch"):  # the pipeline opens no dataset
    pipeline.make_train_dataset(
      data_spec.from_config(_cfg(wanted)),
      local_batch_size=1,
      process_index=0,
      process_count=1,
      builder=b,
    )


def test_frame_rate_check_only_warns_without_the_key(tmp_path, caplog):
  b = _rated(tmp_path, RatedVideos.UNSET)
  assert "target_fps" not in (b.info.metadata or {})
  with caplog.at_level("WARNING"):
    pipeline.check_frame_rate(data_spec.from_config(_cfg(30.0)), b)
  assert "records no frame rate" in caplog.text


# ---------------------------------------------------------------- RandomResizedCrop


def _original_boxes(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  """The original's RandomResizedCrop.get_params + box + imcrop (spec §4.3), written from the
  spec: unclipped boxes (y, x, h, w) [n, 4]."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    for _ in range(10):
      area = rng.uniform(0.08, 1.0) * height * width
      aspect = rng.uniform(3 / 4, 4 / 3)
      w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
      if rng.random() < 0.5:
        w, h = h, w
      if w <= height and h <= width:  # compared with the wrong axes, as the original
        x, y = rng.integers(0, width - h + 1), rng.integers(0, height - w + 1)
        out.append((y, x, h, w))
        break
    else:
      s = min(height, width)
      out.append(((height - s) // 2, (width - s) // 2, s, s))
  return np.array(out)


def _boxes(fn, n: int, height: int, width: int) -> np.ndarray:
  """Boxes int [n, 4] of `fn` for n seeds (in a traced tf.data map: fast)."""
  seeds = tf.stack([tf.range(n), tf.fill([n], 7)], axis=1)
  ds = tf.data.Dataset.from_tensor_slices(seeds).map(lambda s: fn(height, width, s)).batch(n)
  return next(iter(ds)).numpy()


def _truncated(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  y, x, h, w = boxes.T
  return (y + h > height) | (x + w > width)


def test_original_random_resized_crop_distribution():
  n, hh, ww = 3000, 256, 340
  ours = _boxes(transforms.random_resized_crop_box_original, n, hh, ww)
  ref = _original_boxes(n, hh, ww)
  fixed = _boxes(transforms.random_resized_crop_box, n, hh, ww)
  frac, frac_ref = _truncated(ours, hh, ww).mean(), _truncated(ref, hh, ww).mean()
  assert 0.31 <= frac <= 0.39 and abs(frac - frac_ref) < 0.04, (frac, frac_ref)
  assert _truncated(fixed, hh, ww).mean() == 0.0
  assert ours[:, 3].max() <= hh < fixed[:, 3].max()  # box width capped by the HEIGHT (256 px)
  for col in (2, 3):  # box height / width distributions as the original's
    assert abs(np.median(ours[:, col]) - np.median(ref[:, col])) < 8
  clip = lambda h, w, s: transforms.clip_box(
    transforms.random_resized_crop_box_original(h, w, s), h, w
  )
  clipped = _boxes(clip, 200, hh, ww)
  assert (clipped[:, 0] + clipped[:, 2] <= hh).all() and (clipped[:, 1] + clipped[:, 3] <= ww).all()
  np.testing.assert_array_equal(clipped[:, :2], ours[:200, :2])


def test_train_crop_dispatch_clips_the_original_box():
  cfg = get_base_config()
  cfg.data.train_crop = "random_resized_original"
  boxes = np.stack(
    [
      pipeline.train_crop_box(data_spec.from_config(cfg), 256, 340, tf.constant([s, 1])).numpy()
      for s in range(100)
    ]
  )
  assert not _truncated(boxes, 256, 340).any()
  cfg.data.train_crop = "centre"
  with pytest.raises(ValueError, match=r"data\.train_crop must be one of"):
    pipeline.train_crop_box(data_spec.from_config(cfg), 256, 340, tf.constant([0, 1]))
