"""The tf.data snippet pipeline on a tiny TFDS dataset built here (the builders' features)."""

import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs.base import get_base_config
from dsanet_jax.common import data_spec
from dsanet_jax.data import frame_index, pipeline, transforms
from tests.test_sampling import spec_frame_indices, spec_test_offsets

H, W = 32, 40
NUM_TRAIN, NUM_VAL = 10, 7
CLASSES = [
  "Pushing something from left to right",
  "Pushing something from right to left",
  "Holding something",
]


def _gray(j: int) -> int:
  """Grey level of frame j: uniform frames survive JPEG, crops, resizes and flips."""
  return 10 + 3 * j


def _num_frames(i: int) -> int:
  return [3, 20, 40, 66, 70, 75, 45, 64, 12, 30][i % 10]


class TinyVideos(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Uniform grey frames whose level encodes the frame index."""

  VERSION = tfds.core.Version("1.0.0")
  # No code path: TFDS would otherwise look for checksums beside the module through
  # `importlib_resources`, which tensorflow-datasets 4.9.10 does not install on Python >= 3.9.
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "video": tfds.features.Video(shape=(None, H, W, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(names=CLASSES),
          "video_id": tfds.features.Text(),
          "num_frames": tf.int32,
          "fps": tf.float32,
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {
      "train": self._generate_examples("train", NUM_TRAIN),
      "validation": self._generate_examples("val", NUM_VAL),
    }

  def _generate_examples(self, prefix: str, n: int):
    for i in range(n):
      nf = _num_frames(i)
      video = np.stack([np.full((H, W, 3), _gray(j), np.uint8) for j in range(nf)])
      yield (
        f"{prefix}{i:03d}",
        {
          "video": video,
          "label": i % len(CLASSES),
          "video_id": f"{prefix}{i:03d}",
          "num_frames": nf,
          "fps": 25.0,
        },
      )


class TinyLeftRight(TinyVideos, skip_registration=True):
  """6-frame videos of one frame: left half dark at level 20 + 40 * label, right half 240."""

  def _generate_examples(self, prefix: str, n: int):
    for i in range(n):
      img = np.full((H, W, 3), 240, np.uint8)
      img[:, : W // 2] = 20 + 40 * (i % len(CLASSES))
      yield (
        f"{prefix}{i:03d}",
        {
          "video": np.stack([img] * 6),
          "label": i % len(CLASSES),
          "video_id": f"{prefix}{i:03d}",
          "num_frames": 6,
          "fps": 25.0,
        },
      )


@pytest.fixture(scope="module")
def lr_builder(tmp_path_factory) -> tfds.core.DatasetBuilder:
  b = TinyLeftRight(data_dir=str(tmp_path_factory.mktemp("tfds_lr")))
  b.download_and_prepare()
  return b


@pytest.fixture(scope="module")
def builder(tmp_path_factory) -> tfds.core.DatasetBuilder:
  b = TinyVideos(data_dir=str(tmp_path_factory.mktemp("tfds")))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))
  return b


def _cfg(**data):
  c = get_base_config()
  c.model.num_segments = 2
  c.data.name = "tiny_videos"
  c.data.num_frames = 3
  c.data.frame_interval = 4
  c.data.crop_size = 16
  c.data.shuffle_buffer = 4
  c.eval.short_side = 32
  c.eval.crop_size = 32
  for k, v in data.items():
    setattr(c.data, k, v)
  return c


def _frame_ids(video: np.ndarray, cfg) -> np.ndarray:
  """Recovers frame indices from the uint8 grey levels: int [..., T]."""
  level = video[..., 0].astype(np.float32).mean(axis=(-1, -2))
  return np.rint((level - 10) / 3).astype(int)


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_train_batches_shapes_normalisation_and_sampled_frames(builder):
  cfg = _cfg()
  it = pipeline.make_train_iterator(
    data_spec.from_config(cfg),
    local_batch_size=5,
    process_index=0,
    process_count=1,
    builder=builder,
  )
  batches = _take(it, 4)  # two epochs of 10
  b = batches[0]
  assert b["video"].shape == (5, 2, 3, 16, 16, 3) and b["video"].dtype == np.uint8
  assert b["label"].dtype == np.int32 and b["mask"].dtype == bool and b["mask"].all()
  # Uniform grey frames: every pixel of a frame is its grey level, on every channel (uint8 RGB).
  grey = b["video"].astype(np.float32)
  assert np.abs(grey - grey[..., :1, :1, :1]).max() < 2.5
  # On the device the step normalises them: (grey - mean) / std per channel, in data.dtype.
  x = np.asarray(data_spec.from_config(cfg).model_input(jnp.asarray(b["video"])))
  want = (grey - np.asarray(cfg.data.mean, np.float32)) / np.asarray(cfg.data.std, np.float32)
  assert x.dtype == np.float32
  np.testing.assert_allclose(x, want, atol=1e-5)
  # Each clip's frames follow the training formula: offsets in their segments, stride 4, clipped.
  by_epoch = {0: set(), 1: set()}
  for e, pair in enumerate([batches[:2], batches[2:]]):
    for batch in pair:
      ids = _frame_ids(batch["video"], cfg)  # [B, U, T]
      for clip in ids:
        nf = None
        for cand in {_num_frames(i) for i in range(10)}:
          offs = clip[:, 0]
          want = spec_frame_indices(offs, cand, 3, 4)
          if np.array_equal(clip, want) and clip.max() <= cand - 1:
            nf = cand
        assert nf is not None, clip
        by_epoch[e].add(tuple(clip.ravel()))
  assert by_epoch[0] != by_epoch[1], "epochs 0 and 1 gave identical clips"


def test_train_determinism_and_resume(builder):
  cfg = _cfg(shuffle_buffer=4)
  kw = dict(local_batch_size=3, process_index=0, process_count=1, builder=builder)
  full = _take(
    pipeline.make_train_iterator(data_spec.from_config(cfg), **kw), 9
  )  # 27 examples: crosses 2 epochs
  again = _take(pipeline.make_train_iterator(data_spec.from_config(cfg), **kw), 9)
  for a, b in zip(full, again):
    np.testing.assert_array_equal(a["video"], b["video"])
    np.testing.assert_array_equal(a["label"], b["label"])
  for k in (2, 4, 7):  # within epoch 0, at 12 (epoch 1, offset 2), at 21 (epoch 2, offset 1)
    resumed = _take(
      pipeline.make_train_iterator(data_spec.from_config(cfg), start_step=k, **kw), 9 - k
    )
    for i, r in enumerate(resumed):
      np.testing.assert_array_equal(r["video"], full[k + i]["video"], err_msg=f"start_step={k}")
      np.testing.assert_array_equal(r["label"], full[k + i]["label"])
  other = _take(pipeline.make_train_iterator(data_spec.from_config(_cfg()), **kw), 1)
  cfg_seed = _cfg()
  cfg_seed.seed = 1
  other_seed = _take(pipeline.make_train_iterator(data_spec.from_config(cfg_seed), **kw), 1)
  np.testing.assert_array_equal(other[0]["video"], full[0]["video"])
  assert not np.array_equal(other_seed[0]["video"], full[0]["video"])


def test_train_bfloat16_and_two_processes_partition(builder):
  cfg = _cfg(dtype="bfloat16", shuffle_buffer=1)
  x = data_spec.from_config(cfg).model_input(jnp.zeros((2, 3), jnp.uint8))
  assert x.dtype == jnp.bfloat16  # data.dtype is what the device normalises to
  seen = []
  for p in range(2):
    it = pipeline.make_train_iterator(
      data_spec.from_config(cfg),
      local_batch_size=5,
      process_index=p,
      process_count=2,
      builder=builder,
    )
    b = next(it)
    assert b["video"].dtype == np.uint8  # the host sends uint8 whatever data.dtype
    seen.append(b["label"])
  # The two shares are disjoint halves: together their first batches hold every label once.
  assert sorted(np.concatenate(seen).tolist()) == sorted(i % len(CLASSES) for i in range(10))


def _lr_clips(cfg, builder, n_batches: int = 6):
  """(grey [U, T, S, S] of channel 0 on the 0-255 scale, label) of each training clip of the
  production pipeline (make_train_iterator) over `n_batches` batches of 4."""
  it = pipeline.make_train_iterator(
    data_spec.from_config(cfg),
    local_batch_size=4,
    process_index=0,
    process_count=1,
    builder=builder,
  )
  for b in _take(it, n_batches):
    grey = b["video"][..., 0].astype(np.float32)
    yield from zip(grey, b["label"].tolist())


def test_one_box_and_one_flip_for_all_frames(lr_builder):
  cfg = _cfg(rrc_scale=(0.3, 1.0))
  flips, boxes = [], set()
  for grey, _ in _lr_clips(cfg, lr_builder):
    frames = grey.reshape(-1, *grey.shape[2:])
    assert np.abs(frames - frames[:1]).max() < 1e-3, "frames of one clip got different crops"
    boxes.add(np.round(frames[0].mean(), 1))
    left, right = frames[0][:, :2].mean(), frames[0][:, -2:].mean()
    flips.append(left > right)
  assert 4 <= sum(flips) <= 20 and len(boxes) > 3


def test_flip_off_never_flips_and_label_map_swaps(lr_builder):
  cfg = _cfg(flip=False)
  cfg.data.rrc_scale = (1.0, 1.0)
  cfg.data.rrc_ratio = (W / H, W / H)  # the whole frame: left dark, right bright

  def original_label(grey) -> int:  # from the dark half's level 20 + 40 * label
    dark = min(grey[0, 0][:, 0].mean(), grey[0, 0][:, -1].mean())
    return round((dark - 20) / 40)

  labels = set()
  for grey, label in _lr_clips(cfg, lr_builder):
    assert grey[0, 0][:, 0].mean() < 130 and grey[0, 0][:, -1].mean() > 200
    assert label == original_label(grey)
    labels.add(label)
  assert labels == {0, 1, 2}
  cfg.data.flip = True
  cfg.data.flip_label_pairs = ((CLASSES[0], CLASSES[1]),)
  perm = pipeline.flip_label_permutation(cfg.data.flip_label_pairs, CLASSES)
  np.testing.assert_array_equal(perm, [1, 0, 2])
  seen = set()
  for grey, label in _lr_clips(cfg, lr_builder):
    flipped = grey[0, 0][:, 0].mean() > grey[0, 0][:, -1].mean()
    orig = original_label(grey)
    assert label == (perm[orig] if flipped else orig)
    seen.add((flipped, orig))
  assert {f for f, _ in seen} == {True, False} and {o for _, o in seen} >= {0, 1}


def test_flip_guards():
  with pytest.raises(ValueError, match=r"data\.flip_label_pairs.*'Pushing something left'"):
    pipeline.flip_label_permutation([("Pushing something left", CLASSES[1])], CLASSES, "tiny")
  cfg = _cfg()
  cfg.data.name = "something_something_v2"
  with pytest.raises(ValueError, match=r"data\.flip=True for 'something_something_v2'"):
    pipeline._check_flip(data_spec.from_config(cfg))
  cfg.data.flip = False
  pipeline._check_flip(data_spec.from_config(cfg))


def test_eval_exactly_once_over_two_uneven_processes(builder):
  cfg = _cfg()
  kw = dict(split="validation", local_batch_size=2, num_segments=4, num_crops=3, builder=builder)
  counts, ids = [], []
  for p in range(2):  # 7 examples: shares of 3 and 4
    batches = list(
      pipeline.make_eval_iterator(
        data_spec.from_config(cfg), process_index=p, process_count=2, **kw
      )
    )
    counts.append(len(batches))
    for b in batches:
      assert b["video"].shape == (2, 3, 4, 3, 32, 32, 3)
      assert b["label"].dtype == np.int32 and b["mask"].dtype == bool
      assert not b["video"][~b["mask"]].any()
      ids += [v.decode() for v in b["video_id"][b["mask"]]]
  assert counts == [2, 2]
  assert sorted(ids) == [f"val{i:03d}" for i in range(NUM_VAL)]


def test_eval_views_are_test_centres_and_crops(builder):
  cfg = _cfg()
  it = pipeline.make_eval_iterator(
    data_spec.from_config(cfg),
    split="validation",
    local_batch_size=7,
    process_index=0,
    process_count=1,
    num_segments=4,
    num_crops=1,
    crop_size=24,
    builder=builder,
  )
  (b,) = list(it)
  assert b["video"].shape == (7, 1, 4, 3, 24, 24, 3) and b["mask"].all()
  assert sorted(b["video_id"].tolist()) == [f"val{i:03d}".encode() for i in range(NUM_VAL)]
  for i in range(NUM_VAL):
    nf = _num_frames(int(b["video_id"][i][3:]))  # stored order is TFDS's, not the ids'
    want = spec_frame_indices(spec_test_offsets(nf, 4, 3, 4), nf, 3, 4)
    np.testing.assert_array_equal(_frame_ids(b["video"][i, 0], cfg), want)


def test_three_crops_positions():
  frames = np.arange(2 * 4 * 8, dtype=np.uint8).reshape(2, 4, 8, 1).repeat(3, -1)
  crops = transforms.test_views(
    4, 4, 3, 2, *frames, *frames[::-1]
  )  # landscape: left, centre, right
  assert crops.shape == (2, 3, 2, 4, 4, 3)
  np.testing.assert_array_equal(crops[1, :, ::-1], crops[0])  # clip-major
  np.testing.assert_array_equal(crops[0, 0], frames[:, :, 0:4])
  np.testing.assert_array_equal(crops[0, 1], frames[:, :, 2:6])
  np.testing.assert_array_equal(crops[0, 2], frames[:, :, 4:8])
  portrait = np.ascontiguousarray(frames.transpose(0, 2, 1, 3))  # [2, 8, 4, 3]: top, centre, bottom
  crops = transforms.test_views(4, 4, 3, 2, *portrait)
  np.testing.assert_array_equal(crops[0, 0], portrait[:, 0:4])
  np.testing.assert_array_equal(crops[0, 2], portrait[:, 4:8])
  assert transforms.short_side_size(4, 8, 4) == (4, 8) and transforms.short_side_size(6, 9, 4) == (
    4,
    6,
  )
  with pytest.raises(ValueError, match="smaller than the test crop"):
    transforms.crop_starts(4, 8, 5, 3)


def test_random_resized_crop_box_axes():
  # A tall, narrow frame: boxes must fit on each axis separately (the original mixes them).
  hs, ws = [], []
  for s in range(200):
    y, x, h, w = transforms.random_resized_crop_box(300, 60, tf.constant([s, 0])).numpy()
    assert y >= 0 and y + h <= 300 and x >= 0 and x + w <= 60 and h > 0 and w > 0
    hs.append(h)
    ws.append(w)
  assert max(hs) > 60  # heights beyond the width are drawn
  y, x, h, w = transforms.random_resized_crop_box(
    30, 40, tf.constant([0, 0]), scale=(2.0, 3.0)
  ).numpy()
  assert (y, x, h, w) == (0, 5, 30, 30)  # no fit: centred square of min(H, W)
  for s in range(50):
    y, x, h, w = transforms.scale_jitter_box(256, 340, tf.constant([s, 1]), 224).numpy()
    assert h == w and 179 <= h <= 224 and y + h <= 256 and x + w <= 340


def test_eval_more_processes_than_examples(builder):
  cfg = _cfg()
  ids = []
  for p in range(8):  # 7 examples over 8 processes: one process has none, all run one batch
    batches = list(
      pipeline.make_eval_iterator(
        data_spec.from_config(cfg),
        split="validation",
        local_batch_size=2,
        process_index=p,
        process_count=8,
        num_segments=2,
        num_crops=1,
        builder=builder,
      )
    )
    assert len(batches) == 1
    ids += [v.decode() for v in batches[0]["video_id"][batches[0]["mask"]]]
  assert sorted(ids) == [f"val{i:03d}" for i in range(NUM_VAL)]


def _experiment_configs(pattern: str) -> list:
  import importlib
  import pathlib

  root = pathlib.Path(__file__).resolve().parents[1] / "configs"
  mods = [f"configs.{p.parent.name}.{p.stem}" for p in sorted(root.glob(pattern))]
  return [(m, importlib.import_module(m).get_config()) for m in mods if not m.endswith("__init__")]


def test_something_something_configs_never_flip_without_the_map():
  cfgs = _experiment_configs("something_something*/*.py")
  assert len(cfgs) == 2, [name for name, _ in cfgs]  # SSv1 and SSv2
  for name, cfg in cfgs:
    assert not cfg.data.flip or cfg.data.flip_label_pairs, name
    pipeline._check_flip(data_spec.from_config(cfg))


def test_default_dataset_end_to_end(tmp_path):
  from configs.default import get_config

  cfg = get_config()
  cfg.data.data_dir = str(tmp_path)  # builds the embedded order_of_events here (seconds)
  names = pipeline.class_names(data_spec.from_config(cfg))
  assert len(names) == cfg.model.num_classes
  b = next(
    pipeline.make_train_iterator(
      data_spec.from_config(cfg), local_batch_size=4, process_index=1, process_count=2
    )
  )
  u, t, s = cfg.model.num_segments, cfg.data.num_frames, cfg.data.crop_size
  assert b["video"].shape == (4, u, t, s, s, 3) and np.isfinite(b["video"]).all()
  assert set(b["label"].tolist()) <= set(range(len(names)))
  n_val = pipeline.num_examples(data_spec.from_config(cfg), cfg.data.eval_split)
  ev = pipeline.make_eval_iterator(
    data_spec.from_config(cfg),
    split=cfg.data.eval_split,
    local_batch_size=n_val,
    process_index=0,
    process_count=1,
    num_segments=cfg.eval.num_segments,
    num_crops=cfg.eval.num_crops,
  )
  (batch,) = list(ev)
  assert batch["mask"].all() and len(set(batch["video_id"].tolist())) == n_val


def test_direct_reader_matches_tfds_as_dataset(builder, monkeypatch):
  assert pipeline.direct_readable(builder)
  assert len(builder.info.splits["train"].file_instructions) == 3  # several shards interleaved

  def read(start, end):  # every frame's JPEG bytes: byte ranges (direct) or parsed (TFDS)
    ds = pipeline.read_examples(builder, "train", start, end).map(
      lambda ex: {
        **{k: ex[k] for k in ("index", "video_id", "label")},
        "jpegs": pipeline.gather_frames(ex, tf.range(pipeline.num_frames(ex))),
      }
    )
    return {
      int(ex["index"]): (ex["video_id"], ex["label"], tuple(ex["jpegs"]))
      for ex in ds.as_numpy_iterator()
    }

  direct = [read(0, 10), read(3, 8), read(5, 5)]
  monkeypatch.setattr(pipeline, "direct_readable", lambda b: False)
  via_tfds = [read(0, 10), read(3, 8), read(5, 5)]
  assert direct == via_tfds
  assert sorted(direct[1]) == [3, 4, 5, 6, 7] and direct[2] == {}
  assert all(len(v[2]) > 1 and v[2][0][:2] == b"\xff\xd8" for v in direct[0].values())  # JPEGs


def _copy_dataset(builder: tfds.core.DatasetBuilder, dest) -> tfds.core.DatasetBuilder:
  shutil.copytree(builder.data_dir, dest, ignore=shutil.ignore_patterns("*" + frame_index.SUFFIX))
  return tfds.builder_from_directory(str(dest))


def test_read_only_dataset_is_indexed_in_memory_and_prepare_stores_the_indexes(
  builder, tmp_path, monkeypatch, caplog
):
  """Training hosts may only read a dataset (a bucket): the indexes `prepare` stores
  (`pipeline.index_frames`) are then read and nothing is written; without them each process indexes
  in memory, with one warning, and yields the same batches."""
  spec = data_spec.from_config(_cfg())
  first = lambda b: _take(
    pipeline.make_train_iterator(
      spec, local_batch_size=4, process_index=0, process_count=1, builder=b
    ),
    2,
  )
  prepared = _copy_dataset(builder, tmp_path / "prepared")
  counts = pipeline.index_frames(prepared)
  assert counts == {frame_index.BUILT: 3 + 3, frame_index.IN_MEMORY: 0}  # train and validation
  listing = {p: p.stat().st_mtime_ns for p in (tmp_path / "prepared").iterdir()}
  expected = first(prepared)
  assert {p: p.stat().st_mtime_ns for p in (tmp_path / "prepared").iterdir()} == listing

  read_only = _copy_dataset(builder, tmp_path / "read_only")

  def refused(*args, **kwargs):  # what a read-only folder or bucket answers to the index's write
    raise tf.errors.PermissionDeniedError(None, None, "read-only file system")

  monkeypatch.setattr(tf.io.gfile, "rename", refused)
  with caplog.at_level("WARNING"):
    got = first(read_only)
    again = first(read_only)
  warnings = [r.getMessage() for r in caplog.records if "read-only" in r.getMessage()]
  assert len(warnings) == 1 and "3 of 3 shards in memory" in warnings[0], warnings
  assert not list((tmp_path / "read_only").rglob("*" + frame_index.SUFFIX + "*"))
  for batches in (got, again):
    for b, e in zip(batches, expected, strict=True):
      np.testing.assert_array_equal(b["video"], e["video"])
      np.testing.assert_array_equal(b["label"], e["label"])


def test_frame_index_is_rebuilt_when_stale(builder):
  shard = os.fspath(builder.info.splits["train"].file_instructions[0].filename)
  frame_index.ensure(shard)
  good = frame_index.load(shard)
  stale = {**good, "shard_bytes": good["shard_bytes"] + 1}
  with open(frame_index.index_path(shard), "wb") as f:  # a test file, not a user path
    np.savez(f, **stale)
  with pytest.raises(FileNotFoundError, match="is stale"):
    frame_index.load(shard)
  frame_index.ensure(shard)
  again = frame_index.load(shard)
  assert all(np.array_equal(again[k], good[k]) for k in good)
  assert len(good["row_splits"]) == len(good["label"]) + 1 and good["offset"].size > 0


def test_frame_index_partial_inconsistent_or_rewritten_is_never_used(builder, tmp_path):
  """Hosts indexing one shard at once leave one whole index and no temporary file; a partial or
  inconsistent index, or one of a shard rewritten at the same size, is refused by `load` and
  rebuilt by `ensure`."""
  src = os.fspath(builder.info.splits["train"].file_instructions[0].filename)
  shard = str(tmp_path / "train.tfrecord-00000-of-00001")
  tf.io.gfile.copy(src, shard)
  frame_index.ensure_all([shard] * 4, threads=4)  # four writers of the same index at once
  assert sorted(os.listdir(tmp_path)) == sorted(
    [os.path.basename(shard) + s for s in ("", frame_index.SUFFIX)]
  )
  good = frame_index.load(shard)
  path = frame_index.index_path(shard)
  with open(path, "rb") as f:  # test files, not user paths
    whole = f.read()

  def refused_then_rebuilt(why: str) -> dict[str, np.ndarray]:
    with pytest.raises(FileNotFoundError, match=why):
      frame_index.load(shard)
    frame_index.ensure(shard)
    return frame_index.load(shard)

  for cut in (0, len(whole) // 2, len(whole) - 1):
    with open(path, "wb") as f:
      f.write(whole[:cut])
    again = refused_then_rebuilt("unreadable")
    assert all(np.array_equal(again[k], good[k]) for k in good)
  with open(path, "wb") as f:
    np.savez(f, **{**good, "row_splits": good["row_splits"][:-1]})
  refused_then_rebuilt("inconsistent")
  records = list(tf.data.TFRecordDataset(shard).as_numpy_iterator())
  with tf.io.TFRecordWriter(shard) as w:  # the same records reversed: the same size
    for r in records[::-1]:
      w.write(r)
  assert int(good["shard_bytes"]) == os.path.getsize(shard)
  moved = refused_then_rebuilt("stale")
  assert np.array_equal(moved["label"], good["label"][::-1]) and len(records) > 1
  assert np.array_equal(moved["video_id"], good["video_id"][::-1])
  assert not np.array_equal(moved["offset"], good["offset"])


def test_eval_prepare_of_one_example_equals_the_pipeline(builder):
  cfg = _cfg()
  kw = dict(num_segments=2, num_crops=3, crop_size=24)
  (b,) = list(
    pipeline.make_eval_iterator(
      data_spec.from_config(cfg),
      split="validation",
      local_batch_size=NUM_VAL,
      process_index=0,
      process_count=1,
      builder=builder,
      **kw,
    )
  )
  ex = next(iter(pipeline.read_examples(builder, "validation", 2, 3)))
  one = pipeline.eval_views(
    data_spec.from_config(cfg), kw["num_segments"], kw["num_crops"], kw["crop_size"], ex
  )
  (i,) = np.flatnonzero(b["video_id"] == one["video_id"].numpy())
  np.testing.assert_array_equal(one["video"].numpy(), b["video"][i])
  assert int(one["label"]) == b["label"][i]


def test_eval_crops_are_left_centre_right_per_crop_major():
  cfg = _cfg()
  img = np.tile(np.linspace(0, 255, W).astype(np.uint8)[None, :, None], (H, 1, 3))  # dark -> bright
  jpeg = tf.io.encode_jpeg(tf.constant(img), quality=95)
  ex = {"video": tf.stack([jpeg] * 10), "label": tf.constant(1), "video_id": tf.constant(b"x")}
  out = pipeline.eval_views(data_spec.from_config(cfg), 2, 3, 32, ex)[
    "video"
  ].numpy()  # [crops, U, T, S, S, 3]
  assert out.shape == (3, 2, 3, 32, 32, 3)
  means = out[..., 0].mean(axis=(1, 2, 3, 4))
  assert means[0] < means[1] < means[2]
  np.testing.assert_allclose(out[:, :1], np.broadcast_to(out[:, :1, :1], out[:, :1].shape))


def test_file_order_shuffle_is_a_seeded_permutation(builder):
  def order(seed):
    s = None if seed is None else tf.constant(seed, tf.int64)
    return [
      int(ex["index"]) for ex in pipeline.read_examples(builder, "train", 1, 10, file_order_seed=s)
    ]

  orders = {tuple(order(s)) for s in range(6)}
  assert all(sorted(o) == list(range(1, 10)) for o in orders) and len(orders) > 1
  assert order(3) == order(3) and order(None) == order(None)
