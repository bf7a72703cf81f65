r"""Measured dataset-build throughput (plain and Beam) and the Kinetics-400 estimate from it.

  python -m dsanet_jax.tools.benchmark_build --clips=../shared/data/realclips \
    [--modes=plain:1,plain:2,beam:2] [--repeat=2] [--short_side=256] [--json]

Builds a `labelled_videos` set from the Kinetics clips under `--clips` (kinetics400/*.mp4, each
listed `--repeat` times under another name) once per mode, after an untimed one-video build
(TensorFlow's and TFDS's one-time start-up), at the native frame rate (so every
decoded frame is written: frames/s counts frames decoded, resized and JPEG-encoded), and reports
per mode: wall time of the whole build (listing, decoding, writing, shuffling; Beam: also its
start-up), videos/s, frames/s and frames/s per worker process ("per core": one process per core).
On a shared machine wall times depend on the other load, so it also measures CPU time, which
the load disturbs much less: `decode`, the clips decoded, resized and encoded in this process
(frames per CPU second = frames/s on one free core), and per plain build the CPU time of the
main process (TFDS serialising, writing and shuffling) per frame. The Kinetics-400 estimate
uses their sum: `--k400_videos` videos of `--k400_frames` frames (about 240k 10 s clips at 30
fps), hours on `--cores` cores, workers for a one-hour build, and the size on disk from the
measured bytes per stored frame.
"""

import json
import math
import os
import pathlib
import shlex
import statistics
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow_datasets as tfds
from absl import app, flags, logging

from dsanet_jax.data import builders, decode
from dsanet_jax.data.builders import labelled_videos

_CLIPS = flags.DEFINE_string("clips", "../shared/data/realclips", "The real-clips folder.")
_MODES = flags.DEFINE_list("modes", ["plain:1", "plain:2", "beam:2"], "mode:workers to measure.")
_REPEAT = flags.DEFINE_integer("repeat", 2, "How many times each clip is listed.")
_SHORT_SIDE = flags.DEFINE_integer("short_side", 256, "Stored short side (the Kinetics default).")
_K400_VIDEOS = flags.DEFINE_integer("k400_videos", 240_000, "Videos of Kinetics-400.")
_K400_FRAMES = flags.DEFINE_integer("k400_frames", 300, "Frames per video (10 s at 30 fps).")
_CORES = flags.DEFINE_integer("cores", 32, "Cores of the machine of the estimate.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object instead of text.")

BEAM_OPTIONS = "--runner=DirectRunner --direct_running_mode=multi_processing"


def _manual(clips: pathlib.Path, root: pathlib.Path, repeat: int) -> int:
  """A manual folder listing every Kinetics clip `repeat` times; returns the number listed."""
  files = sorted((clips / "kinetics400").glob("*.mp4"))
  if not files:
    raise FileNotFoundError(f"no kinetics400/*.mp4 under {clips}")
  lines = []
  for r in range(repeat):
    for f in files:
      name = f"{r}_{f.name}"
      os.symlink(f.resolve(), root / name)
      lines.append(f"{name} clip")
  (root / "names.txt").write_text("clip\n")
  (root / "list.txt").write_text("\n".join(lines) + "\n")
  (root / "warmup.txt").write_text(lines[0] + "\n")
  return len(lines)


def _measure(
  mode: str, workers: int, manual: pathlib.Path, data_dir: pathlib.Path, listing: str = "list.txt"
) -> dict:
  """One build of the videos in `listing`; its wall time, frames and bytes."""
  cfg = labelled_videos.LabelledVideosConfig(
    name=f"{mode}{workers}_{listing[:-4]}", class_names_file="names.txt",
    split_files={"train": listing}, short_side=_SHORT_SIDE.value,
  )  # fmt: skip
  beam_options = None
  if mode == "beam":
    from apache_beam.options.pipeline_options import PipelineOptions  # only when measured

    args = [*shlex.split(BEAM_OPTIONS), f"--direct_num_workers={workers}"]
    beam_options = PipelineOptions([*args, "--default_sdk_harness_log_level=WARNING"])
  elif mode != "plain":
    raise app.UsageError(f"unknown mode {mode!r}: plain or beam")
  start, cpu = time.perf_counter(), time.process_time()
  b = builders.ensure_prepared(
    "labelled_videos", str(data_dir), manual_dir=str(manual), config=cfg, num_workers=workers,
    beam_options=beam_options,
  )  # fmt: skip
  wall, cpu = time.perf_counter() - start, time.process_time() - cpu
  split = b.info.splits["train"]
  ds = b.as_dataset(split="train", decoders={"video": tfds.decode.SkipDecoding()})
  frames = sum(int(n) for n in ds.map(lambda ex: ex["num_frames"]).as_numpy_iterator())
  return dict(
    mode=mode, workers=workers, videos=split.num_examples, frames=frames,
    wall_s=round(wall, 2), videos_per_s=round(split.num_examples / wall, 3),
    frames_per_s=round(frames / wall, 1), frames_per_s_per_core=round(frames / wall / workers, 1),
    bytes=split.num_bytes, main_cpu_ms_per_frame=round(1000 * cpu / frames, 3),
  )  # fmt: skip


def _decode_rate(manual: pathlib.Path) -> dict:
  """Frames decoded, resized and JPEG-encoded per CPU second, in this process."""
  frames, cpu = 0, 0.0
  for line in (manual / "list.txt").read_text().split("\n"):
    if line:
      task = decode.DecodeTask(str(manual / line.split()[0]), short_side=_SHORT_SIDE.value)
      start = time.process_time()
      frames += decode.run_task(task).num_frames
      cpu += time.process_time() - start
  return dict(frames=frames, cpu_s=round(cpu, 2), frames_per_cpu_s=round(frames / cpu, 1))


def _estimate(rows: list[dict], rate: dict) -> dict[str, Any]:
  """Kinetics-400 from the CPU-time rates: decoding scales with the cores; the plain build's one
  main process (TFDS writer) caps it at 1 / (its CPU time per frame)."""
  plain = [r for r in rows if r["mode"] == "plain"] or rows
  writer_s = statistics.median(r["main_cpu_ms_per_frame"] for r in plain) / 1000
  decode_rate, cores = rate["frames_per_cpu_s"], _CORES.value
  total = _K400_VIDEOS.value * _K400_FRAMES.value
  plain_rate = min(decode_rate * (cores - 1), 1 / writer_s)  # one core writes
  bytes_per_frame = sum(r["bytes"] for r in rows) / sum(r["frames"] for r in rows)
  return dict(
    frames=total, decode_frames_per_cpu_s=decode_rate, cores=cores,
    writer_cap_frames_per_s=round(1 / writer_s),
    plain_hours=round(total / plain_rate / 3600, 2),
    parallel_writer_hours=round(total / (decode_rate * cores) / 3600, 2),
    workers_for_one_hour=math.ceil(total / 3600 / decode_rate),
    bytes_per_frame=round(bytes_per_frame), size_gib=round(total * bytes_per_frame / 2**30, 1),
  )  # fmt: skip


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.ERROR)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    manual = pathlib.Path(tmp) / "manual"
    manual.mkdir()
    listed = _manual(pathlib.Path(_CLIPS.value), manual, _REPEAT.value)
    rate = _decode_rate(manual)
    # One-time costs (TensorFlow's and TFDS's first use) out of the first measured build.
    _measure("plain", 1, manual, pathlib.Path(tmp) / "data", "warmup.txt")
    for spec in _MODES.value:
      mode, workers = spec.split(":")
      rows.append(_measure(mode, int(workers), manual, pathlib.Path(tmp) / "data"))
  est = _estimate(rows, rate)
  if _JSON.value:
    print(json.dumps(dict(listed=listed, decode=rate, rows=rows, kinetics400=est)))
    return
  print(f"\n{listed} videos, short side {_SHORT_SIDE.value}, native fps, {os.cpu_count()} cores")
  print(
    f"decode in-process: {rate['frames']} frames in {rate['cpu_s']} CPU s = "
    f"{rate['frames_per_cpu_s']} frames per CPU second"
  )
  print(
    "| build | workers | videos | frames | wall s | videos/s | frames/s | frames/s/core "
    "| main-process CPU ms/frame |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(
      f"| {r['mode']} | {r['workers']} | {r['videos']} | {r['frames']} | {r['wall_s']} | "
      f"{r['videos_per_s']} | {r['frames_per_s']} | {r['frames_per_s_per_core']} | "
      f"{r['main_cpu_ms_per_frame']} |"
    )
  needed = est["frames"] / 3600
  print(
    f"\nKinetics-400: {est['frames']:,} frames at {est['decode_frames_per_cpu_s']} frames per CPU "
    f"second; the plain build's writer caps at {est['writer_cap_frames_per_s']} frames/s.\n"
    f"  {est['cores']} cores: plain build {est['plain_hours']} h; with parallel writers (Beam on a "
    f"cluster) {est['parallel_writer_hours']} h.\n"
    f"  one-hour build: {est['workers_for_one_hour']} decoding cores ({est['frames'] // 3600} "
    f"frames/s{'; above one writer: Beam' if needed > est['writer_cap_frames_per_s'] else ''}).\n"
    f"  size: {est['bytes_per_frame']} B/frame -> {est['size_gib']} GiB on disk"
  )


if __name__ == "__main__":
  app.run(main)
