"""The tf.data snippet pipeline: TFDS video datasets -> numpy batches of uint8 clips.

Every function takes a `DataSpec` (common/data_spec.py: `from_config(config)` resolves it once),
never the config. Batches leave the host as uint8 RGB (0-255): the jitted steps normalise them on
the device (`DataSpec.model_input`), a quarter of the bytes of float32.

Contract (docs/design.md):
  make_train_iterator(spec, *, local_batch_size, process_index, process_count, start_step=0)
    -> infinite iterator of {'video': uint8 [B, U, T, H, W, 3], 'label': int32 [B],
       'mask': bool [B]}.
  make_eval_iterator(spec, *, split, local_batch_size, process_index, process_count, num_segments,
                     num_crops)
    -> finite iterator, the same number of batches on every process, of {'video':
       uint8 [B, crops, U_test, T, H, W, 3], 'label': int32 [B], 'mask': bool [B] (False = padding),
       'video_id': bytes [B]}; every example exactly once over all processes.
  num_examples(spec, split) -> int;  class_names(spec) -> list[str].

Phases of a training example (DMVR's design, our code):
  read     this process's contiguous slice [start, end) of the split (TFDS shuffled the examples
           at build time): where each example's JPEG frames lie in its shard (`read_examples`,
           `frame_index`), nothing read yet;
  sample   the U x T frame indices (sampling.py) from the example's seed, read only those JPEG
           strings (`gather_frames`: byte ranges; before the shuffle buffer, so the buffer holds
           U*T frames, not whole videos);
  shuffle  per epoch, seeded by (seed, epoch): the order of the slice's shard files, then a
           buffer of `data.shuffle_buffer` clips;
  decode   one tf.data element per clip (`train_clip`: one box and one flip coin for its U*T
           frames): `decode_and_crop_jpeg` of the box of each frame, then resize and flip
           straight into the clip's uint8 [U, T, S, S, 3] (`decode_train_clip`, transforms.py);
  batch    B clips -> [B, U, T, S, S, 3] uint8 (one copy), bounded prefetch.
Every random draw derives from sampling.example_seed(seed, epoch, global example index), and the
shuffle order of an epoch from (seed, epoch), so `start_step=k` rebuilds the stream at epoch
k*B // n_local and skips the rest (reading, not decoding, at most one epoch of records).
"""

import difflib
import functools
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from dsanet_jax.common import paths
from dsanet_jax.common.data_spec import DataSpec
from dsanet_jax.data import frame_index, sampling, transforms


def _hide_gpus_from_tf() -> None:
  """Keeps TF off accelerators (JAX owns them); harmless on CPU-only machines."""
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError as e:  # TF devices already initialised by someone else.
    logging.warning("Could not hide GPUs from TensorFlow: %s", e)


_hide_gpus_from_tf()

_AUTOTUNE = tf.data.AUTOTUNE


def graph_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
  """A tf.data function traced as written, without AutoGraph's source conversion.

  The pipeline's functions use TensorFlow ops only (no Python control flow on tensors), so the
  conversion changes nothing but costs seconds of start-up in every process (about 7 s of CPU for
  the training and eval pipelines, measured with cProfile on main.py). A Python `if` on a tensor
  fails loudly at trace time here instead of being converted.
  """
  return tf.autograph.experimental.do_not_convert(fn)


# ---------------------------------------------------------------- dataset metadata


def load_builder(spec: DataSpec) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder of dataset `spec.name` in `spec.data_dir`.

  Uses the project's builders (`data/builders`); a self-contained one (the embedded synthetic
  dataset) is built on first use in a local (or NFS) data_dir, where a file lock makes the
  processes sharing it build it once. Object storage has no lock, so a URL data_dir (`gs://...`) is
  never built here: prepare it once before the run (the error says how). Any other name
  ('name[/config][:version]') is any TFDS dataset prepared in data_dir. Fails naming the dataset if
  it is not prepared.
  """
  from dsanet_jax.data import builders

  name, data_dir = spec.name, spec.data_dir
  base_name = name.split("/")[0].split(":")[0]
  if base_name in builders.SELF_CONTAINED and not (data_dir and paths.is_url(data_dir)):
    builder = builders.ensure_prepared(name, data_dir)
  elif base_name in builders.BUILDERS:
    builder = builders.get_builder(name, data_dir)
  else:
    builder = tfds.builder(name, data_dir=data_dir)
  if not getattr(builder, "is_prepared", lambda: True)():
    how = (
      f"python -m dsanet_jax.data.prepare --dataset={name} --data_dir={data_dir}"
      if base_name in builders.SELF_CONTAINED
      else "python -m dsanet_jax.data.prepare --help"
    )
    raise ValueError(
      f"Dataset {name!r} is not prepared in data_dir={data_dir!r} (config data.name, "
      f"data.data_dir); build it first: {how}"
    )
  return builder


def num_examples(
  spec: DataSpec, split: str, *, builder: tfds.core.DatasetBuilder | None = None
) -> int:
  """Number of examples in `split` of the configured dataset."""
  builder = builder or load_builder(spec)
  splits = builder.info.splits
  if split not in splits:
    raise ValueError(
      f"Split {split!r} not in dataset {builder.info.name!r} "
      f"(data_dir={spec.data_dir!r}); it has {sorted(splits.keys())}"
    )
  return int(splits[split].num_examples)


def class_names(spec: DataSpec, *, builder: tfds.core.DatasetBuilder | None = None) -> list[str]:
  """The dataset's class names, in label-id order."""
  builder = builder or load_builder(spec)
  return list(builder.info.features["label"].names)


def flip_label_permutation(pairs: Any, names: list[str], dataset: str = "") -> np.ndarray | None:
  """int32 [K] mapping a label to its mirror-image label, from pairs of class names; None if none.

  Raises ValueError naming `data.flip_label_pairs` for unknown names or malformed pairs.
  """
  pairs = tuple(pairs or ())
  if not pairs:
    return None
  index = {n: i for i, n in enumerate(names)}
  perm = np.arange(len(names), dtype=np.int32)
  for pair in pairs:
    if len(pair) != 2:
      raise ValueError(
        f"data.flip_label_pairs: each entry must be a pair of class names, got {pair!r}"
      )
    ids = []
    for name in pair:
      if name not in index:
        close = difflib.get_close_matches(name, names, n=3)
        raise ValueError(
          f"data.flip_label_pairs: class {name!r} is not in the class list of dataset "
          f"{dataset!r} ({len(names)} classes); closest: {close}"
        )
      ids.append(index[name])
    a, b = ids
    if perm[a] != a or perm[b] != b:
      raise ValueError(f"data.flip_label_pairs: a class appears in two pairs: {pair!r}")
    perm[a], perm[b] = b, a
  return perm


def _check_flip(spec: DataSpec) -> None:
  if spec.flip and not spec.flip_label_pairs and "something" in spec.name:
    raise ValueError(
      f"data.flip=True for {spec.name!r} without data.flip_label_pairs: flipping would "
      "mislabel its left/right classes. Set data.flip=False or give the pairs of mirror classes."
    )


def _fps_text(fps: float | None) -> str:
  return "native rates (None)" if fps is None else f"{float(fps):g} fps"


_UNRATED_WARNED: set[tuple[str, str | None]] = set()  # datasets already warned about, once each


def check_frame_rate(spec: DataSpec, builder: tfds.core.DatasetBuilder | None = None) -> None:
  """Fails when the dataset's frame rate differs from the one the recipe assumes (`data.fps`).

  The dataset's rate is `info.metadata['target_fps']`, written by the builders (a float: every
  video was resampled to it; None: each video kept its native rate). A dataset without the key
  (built by older code) only logs a warning. `frame_interval` counts frames, so a recipe built for
  30 fps spans another time on 25 fps frames: a mismatch raises ValueError naming both rates and
  the two ways to fix it.
  """
  builder = builder or load_builder(spec)
  want = spec.fps
  metadata = builder.info.metadata or {}
  name = builder.info.full_name
  if "target_fps" not in metadata:
    if (name, spec.data_dir) in _UNRATED_WARNED:
      return
    _UNRATED_WARNED.add((name, spec.data_dir))
    logging.warning(
      "dataset %s (data_dir=%s) records no frame rate (info.metadata['target_fps']; built by "
      "older code); config data.fps=%s is not checked",
      name,
      spec.data_dir,
      want,
    )
    return
  got = metadata["target_fps"]
  if got is None or want is None:
    same = got is None and want is None
  else:
    same = math.isclose(float(got), float(want), rel_tol=1e-6)
  if not same:
    rebuild = "" if want is None else f" --target_fps={float(want):g}"
    raise ValueError(
      f"frame rate mismatch: config data.fps expects frames at {_fps_text(want)} (the recipe's "
      f"data.frame_interval={spec.frame_interval} counts frames at that rate), but dataset "
      f"{name} in data_dir={spec.data_dir!r} was built at {_fps_text(got)} "
      "(info.metadata['target_fps']). Fix: rebuild it with `python -m dsanet_jax.data.prepare "
      f"--dataset={spec.name}{rebuild}`, or accept the dataset's rate with "
      f"--config.data.fps={'None' if got is None else f'{float(got):g}'}."
    )


def shard_bounds(n: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, end) of process `process_index`'s contiguous share of n examples."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return n * process_index // process_count, n * (process_index + 1) // process_count


# The features the pipeline reads, as stored by TFDS (tf.train.Example, one bytes entry per frame).
_SERIALIZED = {
  "video": ((None,), tf.string),
  "label": ((), tf.int64),
  "video_id": ((), tf.string),
}


def direct_readable(builder: tfds.core.DatasetBuilder) -> bool:
  """True when the dataset is TFRecord files of tf.train.Example with the features as expected."""
  info = builder.info
  if str(getattr(info.file_format, "value", info.file_format)) != "tfrecord":
    return False
  serialized = info.features.get_serialized_info()
  for key, (shape, dtype) in _SERIALIZED.items():
    ti = serialized.get(key)
    if ti is None or tuple(ti.shape) != shape or ti.tf_dtype != dtype:
      return False
  return True


def split_files(builder: tfds.core.DatasetBuilder, split: str) -> list[str]:
  """The shard files of `split` (a split name or a TFDS slice such as 'train[0:64]')."""
  return [os.fspath(fi.filename) for fi in builder.info.splits[split].file_instructions]


def index_frames(builder: tfds.core.DatasetBuilder) -> dict[str, int]:
  """Stores the frame index (`frame_index`) of every shard of every split of a TFRecord dataset,
  so that reading it never writes (`prepare` runs this after a build, for a bucket that training
  hosts may only read). How many were BUILT and IN_MEMORY (a read-only folder)."""
  counts = {frame_index.BUILT: 0, frame_index.IN_MEMORY: 0}
  if direct_readable(builder):
    for split in builder.info.splits:
      for key, n in frame_index.ensure_all(split_files(builder, split)).items():
        counts[key] += n
  return counts


def read_examples(
  builder: tfds.core.DatasetBuilder,
  split: str,
  start: int,
  end: int,
  cycle_length: int = 4,
  file_order_seed: tf.Tensor | None = None,
) -> tf.data.Dataset:
  """Examples [start, end) of `split`: {'label': int64, 'video_id': string, 'index': int64 (the
  example's position in the split)} and the video's frames, left encoded and not yet read:
  `num_frames(ex)` counts them, `gather_frames(ex, idx)` reads the chosen ones.

  For TFRecord datasets (the builders' default) an example is where its frames lie in its shard
  file ('shard' string, 'offset' int64 [F], 'length' int32 [F], from `frame_index`, built on the
  first read of a shard), so that a clip reads only the bytes of its frames, not its whole record.
  The slice's shards come from `file_instructions`, `cycle_length` of them at a time in a
  deterministic parallel interleave, in an order shuffled by `file_order_seed` (int64 scalar; None
  = stored order): the same examples, in the same order, as reading the records themselves. Other
  formats go through `builder.as_dataset(decoders={'video': SkipDecoding()})` in stored order, an
  example holding its JPEG strings ('video' [F]).
  """
  empty = end <= start  # TFDS refuses an empty slice: read one example and take none
  sub = f"{split}[{start}:{start + 1 if empty else end}]"
  if direct_readable(builder):
    instructions = builder.info.splits[sub].file_instructions
    files = split_files(builder, sub)
    skips = [int(fi.skip) for fi in instructions]
    takes = [int(fi.take) for fi in instructions]
    firsts = np.cumsum([start, *takes[:-1]]).tolist()
    frame_index.ensure_all(files)

    def load(f: bytes) -> tuple[np.ndarray, ...]:
      index = frame_index.load(os.fsdecode(np.asarray(f).item()))
      keys = ("offset", "length", "row_splits", "label", "video_id")
      return tuple(index[k] for k in keys)

    def shard(f: tf.Tensor, skip: tf.Tensor, take: tf.Tensor, first: tf.Tensor) -> tf.data.Dataset:
      types = (tf.int64, tf.int32, tf.int64, tf.int64, tf.string)
      offset, length, splits, label, video_id = tf.numpy_function(load, [f], types, stateful=False)
      rows = tf.data.Dataset.from_tensor_slices(
        {
          "offset": tf.RaggedTensor.from_row_splits(offset, splits, validate=False),
          "length": tf.RaggedTensor.from_row_splits(length, splits, validate=False),
          "label": tf.ensure_shape(label, [None]),
          "video_id": tf.ensure_shape(video_id, [None]),
        }
      )
      rows = rows.skip(skip).take(take)
      return tf.data.Dataset.zip((tf.data.Dataset.range(first, first + take), rows)).map(
        graph_fn(lambda i, r: {**r, "shard": f, "index": i})
      )

    files_ds = tf.data.Dataset.from_tensor_slices(
      (
        files,
        tf.constant(skips, tf.int64),
        tf.constant(takes, tf.int64),
        tf.constant(firsts, tf.int64),
      )
    )
    if file_order_seed is not None:
      files_ds = files_ds.shuffle(len(files), seed=file_order_seed)
    ds = files_ds.interleave(
      graph_fn(shard),
      cycle_length=max(1, min(cycle_length, len(files))),
      block_length=1,
      num_parallel_calls=_AUTOTUNE,
      deterministic=True,
    )
  else:
    read_config = tfds.ReadConfig(
      try_autocache=False, skip_prefetch=True, add_tfds_id=False, interleave_cycle_length=1
    )
    ds = builder.as_dataset(
      split=sub,
      shuffle_files=False,
      decoders={"video": tfds.decode.SkipDecoding()},
      read_config=read_config,
    )
    ds = tf.data.Dataset.zip(ds, tf.data.Dataset.range(start, 2**62)).map(
      graph_fn(
        lambda ex, i: {
          "video": ex["video"],
          "label": ex["label"],
          "video_id": ex["video_id"],
          "index": i,
        }
      )
    )
  return ds.take(0) if empty else ds


def num_frames(ex: dict[str, tf.Tensor]) -> tf.Tensor:
  """The number of frames of an example of `read_examples` (int32 scalar)."""
  return tf.shape(ex["offset"] if "offset" in ex else ex["video"])[0]


def gather_frames(ex: dict[str, tf.Tensor], idx: tf.Tensor) -> tf.Tensor:
  """The JPEG strings [N] of frames `idx` int32 [N] of an example of `read_examples`: byte ranges
  of its shard (`frame_index.read_frames`), or its strings gathered."""
  if "offset" not in ex:
    return tf.gather(ex["video"], idx)
  offset, length = tf.gather(ex["offset"], idx), tf.gather(ex["length"], idx)
  jpegs = tf.numpy_function(
    frame_index.read_frames, [ex["shard"], offset, length], tf.string, stateful=False
  )
  return tf.reshape(jpegs, tf.shape(idx))


def dataset_options(spec: DataSpec) -> tf.data.Options:
  """The tf.data options of every pipeline: deterministic, autotuned, no injected prefetch."""
  opts = tf.data.Options()
  opts.deterministic = True
  opts.experimental_optimization.inject_prefetch = False
  opts.autotune.enabled = True
  return opts


def parallel_calls(spec: DataSpec) -> int:
  """`data.num_parallel_calls` as tf.data takes it (< 0 or None -> AUTOTUNE)."""
  n = spec.num_parallel_calls
  return _AUTOTUNE if n is None or n < 0 else int(n)


# ---------------------------------------------------------------- training


def train_frame_indices(spec: DataSpec, num_frames: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Frame indices int32 [U, T] of one training clip of a video of `num_frames` frames.

  `seed` (int32 [2]) is the clip's temporal seed; U = spec.num_segments, T = spec.num_frames at
  stride spec.frame_interval (sampling.py has the formulas).
  """
  u, t, tau = spec.num_segments, spec.num_frames, spec.frame_interval
  offsets = sampling.train_offsets(num_frames, u, t, tau, seed)
  return sampling.frame_indices(offsets, num_frames, t, tau)


def eval_frame_indices(spec: DataSpec, num_frames: tf.Tensor, num_segments: int) -> tf.Tensor:
  """Frame indices int32 [U_test, T] of the test snippets (segment centres) of a video."""
  t, tau = spec.num_frames, spec.frame_interval
  offsets = sampling.test_offsets(num_frames, num_segments, t, tau)
  return sampling.frame_indices(offsets, num_frames, t, tau)


def train_seeds(spec: DataSpec, epoch: tf.Tensor, index: tf.Tensor) -> list:
  """(temporal, spatial) stateless seeds, int32 [2] each, of example `index` in `epoch`."""
  return sampling.split_seed(sampling.example_seed(spec.seed, epoch, index), 2)


def train_select(
  spec: DataSpec, epoch: tf.Tensor, index: tf.Tensor, ex: dict[str, tf.Tensor]
) -> dict[str, tf.Tensor]:
  """Samples the U*T frame indices of one example and gathers their JPEG strings."""
  s_time, s_space = train_seeds(spec, epoch, index)
  idx = train_frame_indices(spec, num_frames(ex), s_time)
  return {
    "jpegs": gather_frames(ex, tf.reshape(idx, [-1])),
    "label": tf.cast(ex["label"], tf.int32),
    "seed": s_space,
  }


TRAIN_CROPS = ("random_resized", "random_resized_original", "scale_jitter")


def train_crop_box(
  spec: DataSpec, height: tf.Tensor, width: tf.Tensor, seed: tf.Tensor
) -> tf.Tensor:
  """The clip's training crop box int32 [4] = (y, x, h, w) by `data.train_crop` (transforms.py)."""
  crop = spec.train_crop
  if crop == "random_resized":
    return transforms.random_resized_crop_box(height, width, seed, spec.rrc_scale, spec.rrc_ratio)
  if crop == "random_resized_original":  # the original's distribution, clipped as it did
    box = transforms.random_resized_crop_box_original(
      height, width, seed, spec.rrc_scale, spec.rrc_ratio
    )
    return transforms.clip_box(box, height, width)
  if crop == "scale_jitter":
    return transforms.scale_jitter_box(
      height, width, seed, spec.crop_size, spec.scale_jitter_short_side
    )
  raise ValueError(f"data.train_crop must be one of {TRAIN_CROPS}, got {crop!r}")


def train_clip(
  spec: DataSpec, perm: np.ndarray | None, el: dict[str, tf.Tensor]
) -> dict[str, tf.Tensor]:
  """Draws the clip's one box and one flip coin (and mirrors its label when flipped): 'jpegs'
  [U*T], 'box' int32 [4] (y, x, h, w), 'flip' bool, 'label' int32."""
  s_box, s_flip = sampling.split_seed(el["seed"], 2)
  jpegs = el["jpegs"]
  h, w = transforms.jpeg_shape(jpegs[0])
  box = train_crop_box(spec, h, w, s_box)
  flip = transforms.flip_coin(s_flip, spec.flip)
  label = el["label"]
  if perm is not None:  # label -1 (unlabelled) stays -1
    mirrored = tf.gather(tf.constant(perm), tf.maximum(label, 0))
    label = tf.where(flip & (label >= 0), mirrored, label)
  return {"jpegs": jpegs, "box": box, "flip": flip, "label": label}


def decode_train_clip(spec: DataSpec, clip: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """One clip (`train_clip`) -> {'video': uint8 [U, T, S, S, 3] (0-255 RGB), 'label' int32}.

  One tf.data element per clip: `tf.io.decode_and_crop_jpeg` decodes only the clip's box of each
  of its U*T frames, then one `tf.numpy_function` (`transforms.train_frames`) resizes each crop to
  crop_size and mirrors it if the clip is flipped, straight into the clip's array (uint8
  throughout)."""
  n, u, t, size = spec.frames_per_clip, spec.num_segments, spec.num_frames, spec.crop_size
  frames = [tf.io.decode_and_crop_jpeg(clip["jpegs"][i], clip["box"], channels=3) for i in range(n)]
  resize = functools.partial(transforms.train_frames, size, n)
  video = tf.numpy_function(resize, [clip["flip"][None], *frames], tf.uint8, stateful=False)
  video = tf.reshape(tf.ensure_shape(video, [n, size, size, 3]), [u, t, size, size, 3])
  return {"video": video, "label": clip["label"]}


def make_train_dataset(
  spec: DataSpec,
  *,
  local_batch_size: int,
  process_index: int,
  process_count: int,
  start_step: int = 0,
  builder: tfds.core.DatasetBuilder | None = None,
) -> tf.data.Dataset:
  """The infinite training tf.data.Dataset of this process (see the module docstring)."""
  builder = builder or load_builder(spec)
  _check_flip(spec)
  check_frame_rate(spec, builder)
  split = spec.train_split
  n = num_examples(spec, split, builder=builder)
  start, end = shard_bounds(n, process_index, process_count)
  n_local = end - start
  if n_local <= 0:
    raise ValueError(
      f"Process {process_index}/{process_count} has no examples of "
      f"{builder.info.name}:{split} (n={n})"
    )
  perm = flip_label_permutation(
    spec.flip_label_pairs, class_names(spec, builder=builder), builder.info.name
  )
  first_epoch, skip = divmod(start_step * local_batch_size, n_local)
  buffer = int(spec.shuffle_buffer)

  def epoch_ds(epoch: tf.Tensor) -> tf.data.Dataset:
    file_seed = sampling.epoch_shuffle_seed(spec.seed, epoch, stream=1)
    base = read_examples(
      builder, split, start, end, file_order_seed=file_seed if buffer > 1 else None
    )
    ds = base.map(
      graph_fn(lambda ex: train_select(spec, epoch, ex["index"], ex)), num_parallel_calls=_AUTOTUNE
    )
    if buffer > 1:
      ds = ds.shuffle(buffer, seed=sampling.epoch_shuffle_seed(spec.seed, epoch))
    return ds

  ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(graph_fn(epoch_ds))
  if skip:
    ds = ds.skip(skip)
  ds = ds.map(
    graph_fn(lambda el: decode_train_clip(spec, train_clip(spec, perm, el))),
    num_parallel_calls=parallel_calls(spec),
  )
  ds = ds.batch(local_batch_size, drop_remainder=True)
  ds = ds.map(graph_fn(lambda b: {**b, "mask": tf.ones_like(b["label"], tf.bool)}))
  ds = ds.prefetch(spec.prefetch)
  return ds.with_options(dataset_options(spec))


def make_train_iterator(
  spec: DataSpec,
  *,
  local_batch_size: int,
  process_index: int,
  process_count: int,
  start_step: int = 0,
  builder: tfds.core.DatasetBuilder | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator of training batches (numpy): video uint8 [B, U, T, S, S, 3], label, mask."""
  ds = make_train_dataset(
    spec,
    local_batch_size=local_batch_size,
    process_index=process_index,
    process_count=process_count,
    start_step=start_step,
    builder=builder,
  )
  return ds.as_numpy_iterator()


# ---------------------------------------------------------------- evaluation


def eval_select(
  spec: DataSpec, num_segments: int, ex: dict[str, tf.Tensor]
) -> dict[str, tf.Tensor]:
  """The JPEGs [U_test*T] of the test snippets (segment centres) of one example."""
  idx = eval_frame_indices(spec, num_frames(ex), num_segments)
  return {
    "jpeg": gather_frames(ex, tf.reshape(idx, [-1])),
    "label": tf.cast(ex["label"], tf.int32),
    "video_id": tf.cast(ex["video_id"], tf.string),
  }


def decode_eval_clip(
  spec: DataSpec, num_segments: int, num_crops: int, crop_size: int, jpegs: tf.Tensor
) -> tf.Tensor:
  """The test frames [U_test*T] of one video (`eval_select`) -> views uint8 [crops, U_test, T, S,
  S, 3] (0-255 RGB, crop-major).

  One tf.data element per clip: `tf.io.decode_jpeg` of each frame, then one `tf.numpy_function`
  (`transforms.test_views`) resizes the short side to spec.short_side (skipped when it already
  is) and copies the crops straight into the clip's array."""
  n = num_segments * spec.num_frames
  frames = [tf.io.decode_jpeg(jpegs[i], channels=3) for i in range(n)]
  views = functools.partial(transforms.test_views, spec.short_side, crop_size, num_crops, n)
  video = tf.numpy_function(views, frames, tf.uint8, stateful=False)
  video = tf.ensure_shape(video, [1, num_crops, n, crop_size, crop_size, 3])
  return tf.reshape(video, [num_crops, num_segments, spec.num_frames, crop_size, crop_size, 3])


def eval_views(
  spec: DataSpec, num_segments: int, num_crops: int, crop_size: int, ex: dict
) -> dict[str, tf.Tensor]:
  """Test views of one example (the eval pipeline's, for single-video inference): video uint8
  [crops, U_test, T, S, S, 3] at segment centres, label, mask (True), video_id."""
  sel = eval_select(spec, num_segments, ex)
  return {
    "video": decode_eval_clip(spec, num_segments, num_crops, crop_size, sel["jpeg"]),
    "label": sel["label"],
    "mask": tf.constant(True),
    "video_id": sel["video_id"],
  }


def make_eval_dataset(
  spec: DataSpec,
  *,
  split: str,
  local_batch_size: int,
  process_index: int,
  process_count: int,
  num_segments: int,
  num_crops: int,
  crop_size: int | None = None,
  builder: tfds.core.DatasetBuilder | None = None,
) -> tf.data.Dataset:
  """Finite eval dataset of this process, padded with masked examples to the common batch count."""
  builder = builder or load_builder(spec)
  check_frame_rate(spec, builder)
  crop_size = int(crop_size or spec.eval_crop_size)
  if crop_size > spec.short_side:
    raise ValueError(f"eval crop {crop_size} is larger than eval.short_side {spec.short_side}")
  n = num_examples(spec, split, builder=builder)
  if n == 0:
    raise ValueError(f"Split {split!r} of {builder.info.full_name} has no examples")
  start, end = shard_bounds(n, process_index, process_count)
  max_local = max(
    b - a for a, b in (shard_bounds(n, p, process_count) for p in range(process_count))
  )
  num_batches = math.ceil(max_local / local_batch_size)
  ds = read_examples(builder, split, start, end)
  ds = ds.map(
    graph_fn(lambda ex: eval_views(spec, num_segments, num_crops, crop_size, ex)),
    num_parallel_calls=parallel_calls(spec),
  )
  shape = [num_crops, num_segments, spec.num_frames, crop_size, crop_size, 3]
  pad = {
    "video": tf.zeros(shape, tf.uint8),
    "label": tf.constant(0, tf.int32),
    "mask": tf.constant(False),
    "video_id": tf.constant(b""),
  }
  ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
  ds = ds.batch(local_batch_size, drop_remainder=True).take(num_batches)
  ds = ds.prefetch(spec.prefetch)
  return ds.with_options(dataset_options(spec))


def make_eval_iterator(
  spec: DataSpec,
  *,
  split: str,
  local_batch_size: int,
  process_index: int,
  process_count: int,
  num_segments: int,
  num_crops: int,
  crop_size: int | None = None,
  builder: tfds.core.DatasetBuilder | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Finite iterator of eval batches (numpy): video uint8 [B, crops, U_test, T, S, S, 3], label,
  mask, video_id. `crop_size` defaults to spec.eval_crop_size (periodic validation passes 224)."""
  ds = make_eval_dataset(
    spec,
    split=split,
    local_batch_size=local_batch_size,
    process_index=process_index,
    process_count=process_count,
    num_segments=num_segments,
    num_crops=num_crops,
    crop_size=crop_size,
    builder=builder,
  )
  return ds.as_numpy_iterator()
