r"""Benchmark of the training input pipeline against the raw JPEG decode rate of the same frames.

  python -m dsanet_jax.tools.benchmark_input --config=configs/kinetics400/dsa_i3d_r50.py \
    --config.data.name=NAME --config.data.data_dir=DIR [--batch_size=8] [--json]

Measures, interleaved in one process (the machine may be shared, so compare the ratio):
  pipeline: batches of `pipeline.make_train_dataset` as numpy arrays (read, sample, decode the
            crop box, resize, flip, normalise, batch) -> clips/s and frames/s (clips * U * T);
  raw:      `tf.io.decode_jpeg` of the same JPEG bytes (the frames the pipeline samples in its
            first epoch, held in memory) in a tf.data map with the same parallelism -> frames/s.
ratio = pipeline frames/s / raw frames/s, the median over rounds measured back to back (>= 0.8 is
the goal). `ratio_cpu` compares process CPU time per frame instead, which a shared machine
disturbs less.
"""

import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections
import numpy as np
import tensorflow as tf
from absl import app, flags
from ml_collections import config_flags

from dsanet_jax.data import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Clips per batch (one process).")
_BATCHES = flags.DEFINE_integer("num_batches", 12, "Batches per timed pipeline window.")
_WARMUP = flags.DEFINE_integer("warmup_batches", 4, "Untimed pipeline batches before timing.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Interleaved (raw, pipeline) measurement rounds.")
_RAW_CLIPS = flags.DEFINE_integer(
  "raw_clips", 48, "Clips whose sampled JPEGs the raw rate decodes."
)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of text.")


def sampled_jpegs(cfg: ml_collections.ConfigDict, num_clips: int, builder) -> list[tf.Tensor]:
  """The JPEG strings [U*T] the training pipeline samples for its first `num_clips` clips."""
  split = cfg.data.train_split
  ds = pipeline._read(builder, split, 0, pipeline.num_examples(cfg, split, builder=builder))
  ds = ds.map(lambda ex: pipeline._train_select(cfg, tf.constant(0, tf.int64), ex["index"], ex))
  out = [el["jpegs"] for el in ds.take(num_clips)]
  while len(out) < num_clips:  # a tiny dataset: repeat its clips
    out += out[: num_clips - len(out)]
  return out


def _timed(fn) -> tuple[int, float, float]:
  """Runs fn() -> count; returns (count, wall seconds, process CPU seconds (all threads))."""
  wall, cpu = time.perf_counter(), time.process_time()
  n = fn()
  return n, time.perf_counter() - wall, time.process_time() - cpu


def raw_decode(jpegs: tf.Tensor, cfg: ml_collections.ConfigDict) -> tuple[int, float, float]:
  """`tf.io.decode_jpeg` of the in-memory JPEGs [N], same parallelism and options as the pipeline:
  (frames, wall s, CPU s)."""
  ds = tf.data.Dataset.from_tensor_slices(jpegs)
  ds = ds.map(
    lambda s: tf.io.decode_jpeg(s, channels=3)[0, 0], num_parallel_calls=pipeline._parallel(cfg)
  )
  ds = ds.batch(256).prefetch(cfg.data.prefetch).with_options(pipeline._options(cfg))
  return _timed(lambda: sum(len(b) for b in ds.as_numpy_iterator()))


def pipeline_window(it, num_batches: int) -> tuple[int, float, float]:
  """`num_batches` batches from the numpy iterator `it`: (clips, wall s, CPU s)."""

  def consume() -> int:
    return sum(next(it)["video"].shape[0] for _ in range(num_batches))

  return _timed(consume)


def run(cfg: ml_collections.ConfigDict) -> dict:
  builder = pipeline.load_builder(cfg)
  u, t = cfg.model.num_segments, cfg.data.num_frames
  fpc = u * t
  jpegs = tf.concat(sampled_jpegs(cfg, _RAW_CLIPS.value, builder), axis=0)
  h, w = (int(x) for x in tf.io.extract_jpeg_shape(jpegs[0])[:2])
  kb = float(np.mean([len(x) for x in jpegs.numpy()[:256]])) / 1024
  ds = pipeline.make_train_dataset(
    cfg, local_batch_size=_BATCH.value, process_index=0, process_count=1, builder=builder
  )
  it = ds.as_numpy_iterator()
  for _ in range(_WARMUP.value):
    next(it)
  raw_decode(jpegs[: min(512, len(jpegs))], cfg)  # warm-up
  rounds = []
  for _ in range(_REPEATS.value):
    time.sleep(1.0)  # let the pipeline's bounded prefetch settle so its work is not billed to raw
    raw_n, raw_wall, raw_cpu = raw_decode(jpegs, cfg)
    clips, wall, cpu = pipeline_window(it, _BATCHES.value)
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
    "data_dir": cfg.data.data_dir,
    "frame_hw": [h, w],
    "jpeg_kb_per_frame": round(kb, 1),
    "crop": cfg.data.crop_size,
    "train_crop": cfg.data.train_crop,
    "U": u,
    "T": t,
    "batch_size": _BATCH.value,
    "dtype": cfg.data.dtype,
    "cpus": os.cpu_count(),
    "clips_per_s": round(med["clips_per_s"], 2),
    "frames_per_s": round(med["clips_per_s"] * fpc, 1),
    "raw_decode_frames_per_s": round(med["raw_fps"], 1),
    # Median over rounds of (pipeline frames/s) / (raw frames/s) measured back to back.
    "ratio": round(med["ratio"], 3),
    # The same from CPU time per frame (all threads): steadier on a shared machine.
    "cpu_us_per_frame": round(med["cpu_us_per_frame"], 1),
    "raw_cpu_us_per_frame": round(med["raw_cpu_us_per_frame"], 1),
    "ratio_cpu": round(med["raw_cpu_us_per_frame"] / med["cpu_us_per_frame"], 3),
    "rounds": [{k: round(v, 3) for k, v in r.items()} for r in rounds],
  }


def main(argv: list[str]) -> None:
  del argv
  cfg = _CONFIG.value
  if cfg is None:
    raise app.UsageError("--config=path/to/config.py is required")
  result = run(cfg)
  if _JSON.value:
    print(json.dumps(result))
    return
  print(
    f"{result['dataset']}: frames {result['frame_hw'][0]}x{result['frame_hw'][1]} "
    f"({result['jpeg_kb_per_frame']} KB JPEG), crop {result['crop']} ({result['train_crop']}), "
    f"U{result['U']} T{result['T']}, batch {result['batch_size']}, {result['cpus']} CPUs"
  )
  clips, frames = result["clips_per_s"], result["frames_per_s"]
  print(f"  pipeline:        {clips:.2f} clips/s = {frames:.0f} frames/s")
  print(f"  raw decode_jpeg: {result['raw_decode_frames_per_s']:.0f} frames/s (same frames)")
  print(f"  ratio:           {result['ratio']:.2f} (median over {len(result['rounds'])} rounds)")
  print(
    f"  CPU per frame:   {result['cpu_us_per_frame']:.0f} us vs raw "
    f"{result['raw_cpu_us_per_frame']:.0f} us (ratio {result['ratio_cpu']:.2f})"
  )


if __name__ == "__main__":
  app.run(main)
