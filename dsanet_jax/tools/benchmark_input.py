r"""Benchmark of the training input pipeline against the raw decode rate of the same frame crops.

  python -m dsanet_jax.tools.benchmark_input --config=configs/kinetics400/dsa_i3d_r50.py \
    --config.data.name=NAME --config.data.data_dir=DIR [--batch_size=8] [--json]

Measures, in rounds in one process (the machine may be shared, so compare the ratio):
  raw:      `tf.io.decode_and_crop_jpeg` of the JPEG frames the pipeline samples for its first
            `--raw_clips` clips (held in memory), each with the crop box the pipeline draws for
            its clip (`pipeline.train_clip_to_frames`), in a tf.data map with the pipeline's
            parallelism and options -> frames/s. This is the decode work the pipeline cannot avoid.
  pipeline: batches of `pipeline.make_train_dataset` as numpy arrays (read, sample, decode the
            crop box, flip, resize, normalise, batch) -> clips/s and frames/s (clips * U * T).
Each round runs raw first, then a fresh pipeline iterator: the first `prefetch + 2` batches
(start-up, and whatever the pipeline's buffers hold) are pulled untimed, then `--num_batches` are
timed while nothing else runs, so every timed frame is produced inside the window.
ratio = pipeline frames/s / raw frames/s, the median over rounds. `ratio_cpu` compares process CPU
time per frame instead, which a shared machine disturbs less.
"""

import gc
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags
from ml_collections import config_flags

from dsanet_jax.common import data_spec
from dsanet_jax.common.data_spec import DataSpec
from dsanet_jax.data import pipeline


def sampled_crops(
  spec: DataSpec, num_clips: int, builder: tfds.core.DatasetBuilder
) -> tuple[tf.Tensor, tf.Tensor]:
  """The JPEG strings [N] the training pipeline samples for its first `num_clips` clips (epoch 0,
  file order) and the crop box int32 [N, 4] (y, x, h, w) it decodes of each; N = num_clips*U*T."""
  split = spec.train_split
  n = pipeline.num_examples(spec, split, builder=builder)
  ds = pipeline.read_examples(builder, split, 0, n)
  ds = ds.map(lambda ex: pipeline.train_select(spec, tf.constant(0, tf.int64), ex["index"], ex))
  ds = ds.map(lambda el: pipeline.train_clip_to_frames(spec, None, el))
  clips = list(ds.take(num_clips))
  while len(clips) < num_clips:  # a tiny dataset: repeat its clips
    clips += clips[: num_clips - len(clips)]
  return tf.concat([c["jpeg"] for c in clips], 0), tf.concat([c["box"] for c in clips], 0)


def _timed(fn: Callable[[], int]) -> tuple[int, float, float]:
  """Runs fn() -> count; returns (count, wall seconds, process CPU seconds (all threads))."""
  wall, cpu = time.perf_counter(), time.process_time()
  n = fn()
  return n, time.perf_counter() - wall, time.process_time() - cpu


def raw_decode(jpegs: tf.Tensor, boxes: tf.Tensor, spec: DataSpec) -> tuple[int, float, float]:
  """`tf.io.decode_and_crop_jpeg` of the in-memory JPEGs [N] at their boxes [N, 4], with the
  pipeline's parallelism and options: (frames, wall s, CPU s)."""
  ds = tf.data.Dataset.from_tensor_slices((jpegs, boxes))
  ds = ds.map(
    lambda s, b: tf.io.decode_and_crop_jpeg(s, b, channels=3)[0, 0],
    num_parallel_calls=pipeline.parallel_calls(spec),
  )
  ds = ds.batch(256).prefetch(spec.prefetch).with_options(pipeline.dataset_options(spec))
  return _timed(lambda: sum(len(b) for b in ds.as_numpy_iterator()))


def pipeline_window(
  make_iterator: Callable[[], Iterator[dict]], drain: int, num_batches: int
) -> tuple[int, float, float]:
  """A fresh iterator; `drain` batches untimed, then `num_batches` timed: (clips, wall s, CPU s)."""
  it = make_iterator()
  for _ in range(drain):
    next(it)
  out = _timed(lambda: sum(next(it)["video"].shape[0] for _ in range(num_batches)))
  it = None
  gc.collect()  # stops the iterator's threads before the next raw round
  return out


def run(
  spec: DataSpec,
  *,
  batch_size: int = 8,
  num_batches: int = 12,
  repeats: int = 5,
  raw_clips: int = 48,
  builder: tfds.core.DatasetBuilder | None = None,
) -> dict:
  """`repeats` rounds of (raw decode of `raw_clips` clips' crops, `num_batches` pipeline batches of
  `batch_size` clips) on `builder` (default: the config's dataset); returns the medians and every
  round."""
  builder = builder or pipeline.load_builder(spec)
  u, t = spec.num_segments, spec.num_frames
  fpc = u * t
  jpegs, boxes = sampled_crops(spec, raw_clips, builder)
  h, w = (int(x) for x in tf.io.extract_jpeg_shape(jpegs[0])[:2])
  kb = float(np.mean([len(x) for x in jpegs.numpy()[:256]])) / 1024
  crop_area = float(np.mean(boxes.numpy()[:, 2] * boxes.numpy()[:, 3])) / (h * w)
  ds = pipeline.make_train_dataset(
    spec, local_batch_size=batch_size, process_index=0, process_count=1, builder=builder
  )
  drain = int(spec.prefetch) + 2
  raw_decode(jpegs[:256], boxes[:256], spec)  # warm-up
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
      )
    )
  med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
  return {
    "dataset": builder.info.full_name,
    "data_dir": spec.data_dir,
    "frame_hw": [h, w],
    "jpeg_kb_per_frame": round(kb, 1),
    "mean_crop_area": round(crop_area, 3),
    "crop": spec.crop_size,
    "train_crop": spec.train_crop,
    "U": u,
    "T": t,
    "batch_size": batch_size,
    "dtype": spec.dtype,
    "cpus": os.cpu_count(),
    "load_average": [round(x, 2) for x in os.getloadavg()],
    "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    "clips_per_s": round(med["clips_per_s"], 2),
    "frames_per_s": round(med["clips_per_s"] * fpc, 1),
    "raw_decode_crop_frames_per_s": round(med["raw_fps"], 1),
    # Median over rounds of (pipeline frames/s) / (raw frames/s) measured back to back.
    "ratio": round(med["ratio"], 3),
    # The same from CPU time per frame (all threads): steadier on a shared machine.
    "cpu_us_per_frame": round(med["cpu_us_per_frame"], 1),
    "raw_cpu_us_per_frame": round(med["raw_cpu_us_per_frame"], 1),
    "ratio_cpu": round(med["raw_cpu_us_per_frame"] / med["cpu_us_per_frame"], 3),
    "rounds": [{k: round(v, 3) for k, v in r.items()} for r in rounds],
  }


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so that tests can import it)."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file.")
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
  if flags.FLAGS.config is None:
    raise app.UsageError("--config=path/to/config.py is required")
  r = run(
    data_spec.from_config(flags.FLAGS.config),
    batch_size=flags.FLAGS.batch_size,
    num_batches=flags.FLAGS.num_batches,
    repeats=flags.FLAGS.repeats,
    raw_clips=flags.FLAGS.raw_clips,
  )
  if flags.FLAGS.json:
    print(json.dumps(r))
    return
  print(
    f"{r['dataset']}: frames {r['frame_hw'][0]}x{r['frame_hw'][1]} "
    f"({r['jpeg_kb_per_frame']} KB JPEG), crop {r['crop']} ({r['train_crop']}, mean box "
    f"{r['mean_crop_area']:.0%} of the frame), U{r['U']} T{r['T']}, batch {r['batch_size']}, "
    f"{r['cpus']} CPUs, load {r['load_average'][0]}, {r['time_utc']} UTC"
  )
  print(
    f"  pipeline:              {r['clips_per_s']:.2f} clips/s = {r['frames_per_s']:.0f} frames/s"
  )
  print(f"  raw decode_and_crop:   {r['raw_decode_crop_frames_per_s']:.0f} frames/s (same crops)")
  print(f"  ratio:                 {r['ratio']:.2f} (median over {len(r['rounds'])} rounds)")
  print(
    f"  CPU per frame:         {r['cpu_us_per_frame']:.0f} us vs raw "
    f"{r['raw_cpu_us_per_frame']:.0f} us (ratio {r['ratio_cpu']:.2f})"
  )


if __name__ == "__main__":
  define_flags()
  app.run(main)
