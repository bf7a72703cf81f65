r"""Benchmark of the input pipelines against the raw decode rate of the same frames.

  python -m dsanet_jax.tools.benchmark_input --config=configs/kinetics400/dsa_i3d_r50.py \
    --config.data.name=NAME --config.data.data_dir=DIR [--pipeline=train|eval] [--batch_size=8] \
    [--json]

Measures, in rounds in one process (the machine may be shared, so compare the ratio):
  raw:      the decode work the pipeline cannot avoid, of the JPEG frames it samples for its first
            `--raw_clips` clips (held in memory), in a tf.data map with the pipeline's parallelism
            and options -> frames/s. train: `tf.io.decode_and_crop_jpeg` at the crop box the
            pipeline draws for each clip (`pipeline.train_clip`); eval: `decode_jpeg`
            of the whole frame (its crops cover it).
  pipeline: batches of `pipeline.make_train_dataset` (read, sample, decode the crop box, flip,
            resize, batch) or of `pipeline.make_eval_dataset` (read, sample the test snippets,
            decode, short side, crops, batch; over `--split`, repeated; padding not counted) as
            numpy arrays -> clips/s and frames/s (clips * U * T, or * U_test * T).
Each round runs raw first, then a fresh pipeline iterator: the first `prefetch + 2` batches
(start-up, and whatever the pipeline's buffers hold) are pulled untimed, then `--num_batches` are
timed while nothing else runs, so every timed frame is produced inside the window.
ratio = pipeline frames/s / raw frames/s, the median over rounds. `ratio_cpu` compares process CPU
time per frame instead, which a shared machine disturbs less.

Also reported: the host-to-device bytes of one batch (what `jax.make_array_from_process_local_data`
copies: video, label, mask), the bytes read from storage per clip (TFRecord datasets: the JPEG bytes
of its frames, read as byte ranges, and its share of the shard indexes; other formats: its whole
video record) against the JPEG bytes of the frames it uses and the bytes a video is stored in,
per clip and per used frame.
"""

import gc
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags, logging
from ml_collections import config_flags

from dsanet_jax.common import data_spec
from dsanet_jax.common.data_spec import DataSpec
from dsanet_jax.data import frame_index, pipeline


def sampled_crops(
  spec: DataSpec, num_clips: int, builder: tfds.core.DatasetBuilder
) -> tuple[tf.Tensor, tf.Tensor]:
  """The JPEG strings [N] the training pipeline samples for its first `num_clips` clips (epoch 0,
  file order) and the crop box int32 [N, 4] (y, x, h, w) it decodes of each; N = num_clips*U*T."""
  split = spec.train_split
  n = pipeline.num_examples(spec, split, builder=builder)
  ds = pipeline.read_examples(builder, split, 0, n)
  ds = ds.map(
    pipeline.graph_fn(
      lambda ex: pipeline.train_select(spec, tf.constant(0, tf.int64), ex["index"], ex)
    )
  )
  ds = ds.map(pipeline.graph_fn(lambda el: pipeline.train_clip(spec, None, el)))
  clips = _first(ds, num_clips)
  boxes = [tf.tile(c["box"][None], [spec.frames_per_clip, 1]) for c in clips]
  return tf.concat([c["jpegs"] for c in clips], 0), tf.concat(boxes, 0)


def sampled_test_frames(
  spec: DataSpec, num_clips: int, builder: tfds.core.DatasetBuilder, split: str
) -> tf.Tensor:
  """The JPEG strings [num_clips * U_test * T] the eval pipeline samples for its first clips."""
  n = pipeline.num_examples(spec, split, builder=builder)
  ds = pipeline.read_examples(builder, split, 0, n)
  ds = ds.map(pipeline.graph_fn(lambda ex: pipeline.eval_select(spec, spec.eval_num_segments, ex)))
  return tf.concat([c["jpeg"] for c in _first(ds, num_clips)], 0)


def _first(ds: tf.data.Dataset, num_clips: int) -> list[dict[str, tf.Tensor]]:
  clips = list(ds.take(num_clips))
  while len(clips) < num_clips:  # a tiny dataset: repeat its clips
    clips += clips[: num_clips - len(clips)]
  return clips


def _timed(fn: Callable[[], int]) -> tuple[int, float, float]:
  """Runs fn() -> count; returns (count, wall seconds, process CPU seconds (all threads))."""
  wall, cpu = time.perf_counter(), time.process_time()
  n = fn()
  return n, time.perf_counter() - wall, time.process_time() - cpu


def raw_decode(
  jpegs: tf.Tensor, boxes: tf.Tensor | None, spec: DataSpec
) -> tuple[int, float, float]:
  """`tf.io.decode_and_crop_jpeg` of the in-memory JPEGs [N] at their boxes [N, 4] (None: the
  whole frames, `decode_jpeg`), with the pipeline's parallelism and options: (frames, wall s,
  CPU s)."""
  if boxes is None:
    ds = tf.data.Dataset.from_tensor_slices(jpegs)
    decode = lambda s: tf.io.decode_jpeg(s, channels=3)[0, 0]
  else:
    ds = tf.data.Dataset.from_tensor_slices((jpegs, boxes))
    decode = lambda s, b: tf.io.decode_and_crop_jpeg(s, b, channels=3)[0, 0]
  ds = ds.map(pipeline.graph_fn(decode), num_parallel_calls=pipeline.parallel_calls(spec))
  ds = ds.batch(256).prefetch(spec.prefetch).with_options(pipeline.dataset_options(spec))
  return _timed(lambda: sum(len(b) for b in ds.as_numpy_iterator()))


def pipeline_window(
  make_iterator: Callable[[], Iterator[dict]], drain: int, num_batches: int
) -> tuple[int, float, float]:
  """A fresh iterator; `drain` batches untimed, then `num_batches` timed: (clips, wall s, CPU s).
  Clips are counted by the batches' `mask` (eval padding is not a clip)."""
  it = make_iterator()
  for _ in range(drain):
    next(it)
  out = _timed(lambda: sum(int(next(it)["mask"].sum()) for _ in range(num_batches)))
  it = None
  gc.collect()  # stops the iterator's threads before the next raw round
  return out


def batch_bytes(batch: dict[str, Any]) -> dict[str, int]:
  """Host-to-device bytes of one batch: the arrays the trainer/evaluator put on the devices."""
  keys = ("video", "label", "mask")
  out = {k: int(np.asarray(batch[k]).nbytes) for k in keys}
  out["total"] = sum(out.values())
  return out


def read_bytes(
  builder: tfds.core.DatasetBuilder, split: str, jpegs: tf.Tensor, frames_per_clip: int
) -> dict[str, float]:
  """Bytes read from storage per clip and per used frame, beside the JPEG bytes a clip uses (its
  sampled frames) and the bytes a video is stored in (the split's serialised bytes / examples).

  TFRecord datasets are read by byte ranges (`frame_index`): a clip reads its frames' JPEG bytes
  plus its share of what checking and loading the shards' indexes reads (counted twice: once when
  the pipeline is built, once an epoch; each index file and its shard's two 64 KiB ends); other
  formats read whole records."""
  info = builder.info.splits[split]
  stored = float(info.num_bytes) / max(1, int(info.num_examples))
  used = float(np.mean([len(x) for x in jpegs.numpy()])) * frames_per_clip
  if pipeline.direct_readable(builder):
    shards = {os.fspath(fi.filename) for fi in info.file_instructions}
    index = 2 * sum(
      tf.io.gfile.stat(frame_index.index_path(f)).length
      + min(2 * frame_index.ENDS, tf.io.gfile.stat(f).length)
      for f in shards
    )
    per_clip = used + index / max(1, int(info.num_examples))
  else:
    per_clip = stored
  return {
    "bytes_stored_per_clip": round(stored),
    "bytes_read_per_clip": round(per_clip),
    "bytes_used_per_clip": round(used),
    "bytes_read_per_used_frame": round(per_clip / frames_per_clip),
    "read_over_used": round(per_clip / used, 2),
  }


def run(
  spec: DataSpec,
  *,
  kind: str = "train",
  batch_size: int = 8,
  num_batches: int = 12,
  repeats: int = 5,
  raw_clips: int = 48,
  split: str | None = None,
  builder: tfds.core.DatasetBuilder | None = None,
) -> dict:
  """`repeats` rounds of (raw decode of `raw_clips` clips' frames, `num_batches` batches of
  `batch_size` clips of the `kind` ('train' | 'eval') pipeline) on `builder` (default: the
  spec's dataset), over `split` (default: the spec's train or eval split); returns the medians
  and every round."""
  if kind not in ("train", "eval"):
    raise ValueError(f"--pipeline must be 'train' or 'eval', got {kind!r}")
  builder = builder or pipeline.load_builder(spec)
  t = spec.num_frames
  if kind == "train":
    split = split or spec.train_split
    if split != spec.train_split:
      spec = spec.replace(train_split=split)
    u = spec.num_segments
    jpegs, boxes = sampled_crops(spec, raw_clips, builder)
    ds = pipeline.make_train_dataset(
      spec, local_batch_size=batch_size, process_index=0, process_count=1, builder=builder
    )
  else:
    split = split or spec.eval_split
    u = spec.eval_num_segments
    jpegs, boxes = sampled_test_frames(spec, raw_clips, builder, split), None
    ds = pipeline.make_eval_dataset(
      spec,
      split=split,
      local_batch_size=batch_size,
      process_index=0,
      process_count=1,
      num_segments=u,
      num_crops=spec.eval_num_crops,
      builder=builder,
    ).repeat()
  fpc = u * t
  h, w = (int(x) for x in tf.io.extract_jpeg_shape(jpegs[0])[:2])
  kb = float(np.mean([len(x) for x in jpegs.numpy()[:256]])) / 1024
  crop_area = 1.0 if boxes is None else float(np.mean(boxes.numpy()[:, 2] * boxes.numpy()[:, 3]))
  crop_area = crop_area if boxes is None else crop_area / (h * w)
  drain = int(spec.prefetch) + 2
  first = next(ds.as_numpy_iterator())
  to_device = batch_bytes(first)
  raw_decode(jpegs[:256], None if boxes is None else boxes[:256], spec)  # warm-up
  rounds = []
  for _ in range(repeats):
    raw_n, raw_wall, raw_cpu = raw_decode(jpegs, boxes, spec)
    clips, wall, cpu = pipeline_window(ds.as_numpy_iterator, drain, num_batches)
    rounds.append(
      dict(
        raw_fps=raw_n / raw_wall,
        clips_per_s=clips / wall,
        ratio=clips * fpc / wall / (raw_n / raw_wall),
        raw_cpu_us_per_frame=1e6 * raw_cpu / raw_n,
        cpu_us_per_frame=1e6 * cpu / (clips * fpc),
        ratio_cpu=(raw_cpu / raw_n) / (cpu / (clips * fpc)),
      )
    )
  med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
  return {
    "pipeline": kind,
    "dataset": builder.info.full_name,
    "data_dir": spec.data_dir,
    "split": split,
    "frame_hw": [h, w],
    "jpeg_kb_per_frame": round(kb, 1),
    "mean_crop_area": round(crop_area, 3),
    "crop": spec.crop_size if kind == "train" else spec.eval_crop_size,
    "train_crop": spec.train_crop if kind == "train" else f"{spec.eval_num_crops} test crops",
    "U": u,
    "T": t,
    "batch_size": batch_size,
    "dtype": spec.dtype,
    "cpus": os.cpu_count(),
    "load_average": [round(x, 2) for x in os.getloadavg()],
    "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    "clips_per_s": round(med["clips_per_s"], 2),
    "frames_per_s": round(med["clips_per_s"] * fpc, 1),
    "raw_decode_frames_per_s": round(med["raw_fps"], 1),
    # Median over rounds of (pipeline frames/s) / (raw frames/s) measured back to back.
    "ratio": round(med["ratio"], 3),
    # The same from CPU time per frame (all threads): steadier on a shared machine.
    "cpu_us_per_frame": round(med["cpu_us_per_frame"], 1),
    "raw_cpu_us_per_frame": round(med["raw_cpu_us_per_frame"], 1),
    "ratio_cpu": round(med["ratio_cpu"], 3),
    "ratio_cpu_range": [
      round(min(r["ratio_cpu"] for r in rounds), 3),
      round(max(r["ratio_cpu"] for r in rounds), 3),
    ],
    "bytes_to_device_per_batch": to_device,
    **read_bytes(builder, split, jpegs, fpc),
    "rounds": [{k: round(v, 3) for k, v in r.items()} for r in rounds],
  }


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so that tests can import it)."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file.")
  flags.DEFINE_enum("pipeline", "train", ["train", "eval"], "Which pipeline to measure.")
  flags.DEFINE_string("split", None, "Split to read (default: data.train_split / eval_split).")
  flags.DEFINE_integer("batch_size", 8, "Clips per batch (one process).")
  flags.DEFINE_integer("num_batches", 12, "Batches per timed pipeline window.")
  flags.DEFINE_integer("repeats", 5, "(raw, pipeline) measurement rounds.")
  flags.DEFINE_integer(
    "raw_clips", 48, "Clips whose sampled JPEGs (and crop boxes) the raw rate decodes."
  )
  flags.DEFINE_bool("json", False, "Print one JSON object instead of text.")
  flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # a quiet console: TFDS's INFO lines say nothing here
  if flags.FLAGS.config is None:
    raise app.UsageError("--config=path/to/config.py is required")
  r = run(
    data_spec.from_config(flags.FLAGS.config),
    kind=flags.FLAGS.pipeline,
    split=flags.FLAGS.split,
    batch_size=flags.FLAGS.batch_size,
    num_batches=flags.FLAGS.num_batches,
    repeats=flags.FLAGS.repeats,
    raw_clips=flags.FLAGS.raw_clips,
  )
  if flags.FLAGS.json:
    print(json.dumps(r))
    return
  print(
    f"{r['pipeline']} pipeline, {r['dataset']}:{r['split']}: "
    f"frames {r['frame_hw'][0]}x{r['frame_hw'][1]} "
    f"({r['jpeg_kb_per_frame']} KB JPEG), crop {r['crop']} ({r['train_crop']}, mean box "
    f"{r['mean_crop_area']:.0%} of the frame), U{r['U']} T{r['T']}, batch {r['batch_size']}, "
    f"{r['cpus']} CPUs, load {r['load_average'][0]}, {r['time_utc']} UTC"
  )
  print(
    f"  pipeline:              {r['clips_per_s']:.2f} clips/s = {r['frames_per_s']:.0f} frames/s"
  )
  raw = "decode_and_crop" if r["pipeline"] == "train" else "decode_jpeg"
  print(f"  raw {raw + ':':18s}{r['raw_decode_frames_per_s']:.0f} frames/s (same frames)")
  print(f"  ratio:                 {r['ratio']:.2f} (median over {len(r['rounds'])} rounds)")
  print(
    f"  CPU per frame:         {r['cpu_us_per_frame']:.0f} us vs raw "
    f"{r['raw_cpu_us_per_frame']:.0f} us (ratio {r['ratio_cpu']:.2f}, rounds "
    f"{r['ratio_cpu_range'][0]:.2f}-{r['ratio_cpu_range'][1]:.2f})"
  )
  dev = r["bytes_to_device_per_batch"]
  print(f"  to device per batch:   {dev['total'] / 1e6:.1f} MB (video {dev['video'] / 1e6:.1f} MB)")
  print(
    f"  read per clip:         {r['bytes_read_per_clip'] / 1e6:.2f} MB for "
    f"{r['bytes_used_per_clip'] / 1e6:.2f} MB of used JPEGs ({r['read_over_used']:.1f}x); "
    f"{r['bytes_read_per_used_frame'] / 1e3:.0f} kB per used frame (stored: "
    f"{r['bytes_stored_per_clip'] / 1e6:.2f} MB a video)"
  )


if __name__ == "__main__":
  define_flags()
  app.run(main)
