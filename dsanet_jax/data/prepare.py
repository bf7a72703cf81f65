r"""Builds a TFDS video dataset from manually downloaded files (docs/data.md).

  python -m dsanet_jax.data.prepare --dataset=kinetics400 --manual_dir=~/k400 --data_dir=~/tfds
  python -m dsanet_jax.data.prepare --dataset=kinetics400/mini200 --manual_dir=~/k400 ...
  python -m dsanet_jax.data.prepare --dataset=something_something_v2 --manual_dir=~/ssv2 ...
  python -m dsanet_jax.data.prepare --dataset=order_of_events --data_dir=~/tfds   # no download
  python -m dsanet_jax.data.prepare --dataset=labelled_videos --config_name=ucf101_split1 \
    --manual_dir=~/ucf101 --class_names=ucfTrainTestlist/classInd.txt \
    --train_list=ucfTrainTestlist/trainlist01.txt \
    --validation_list=ucfTrainTestlist/testlist01.txt --video_root=UCF-101 --label_offset=1

`--short_side` / `--target_fps` / `--jpeg_quality` derive a config whose name records them. It
prints the frame rate it writes, progress with an ETA, and at the end the splits and what was
skipped (the list is in skipped_<split>.json), and stores the frame indexes beside the shards
(data/frame_index.py: training hosts then only read the dataset). `--check` first: a dry run that
parses the annotations and finds the files (no decoding) and prints what is missing, the splits
without an annotation file and the videos no annotation references, in seconds even for Kinetics.

A dataset already prepared is not rebuilt; if its manual folder's annotation files or its options
changed since (a CSV added, edited or removed), it is reported as stale: `--overwrite` rebuilds.

Beam (docs/data.md): `--beam_options="--runner=DirectRunner --direct_num_workers=2
--direct_running_mode=multi_processing"` builds through Apache Beam (locally, Dataflow, Flink,
Spark); without it the build decodes in `--num_workers` local processes.
"""

import logging as py_logging
import os
import shlex
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads (here, in workers)

import tensorflow_datasets as tfds
from absl import app, flags, logging

from dsanet_jax.data import builders, frame_index, pipeline
from dsanet_jax.data.builders import base, labelled_videos, video

_DATASET = flags.DEFINE_string("dataset", None, "Builder name, 'name' or 'name/config'.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir to write to.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder with the downloaded files.")
_SHORT_SIDE = flags.DEFINE_integer("short_side", None, "Stored short side (default: config's).")
_TARGET_FPS = flags.DEFINE_float("target_fps", None, "Resample to this fps (default: native).")
_JPEG_QUALITY = flags.DEFINE_integer("jpeg_quality", None, "JPEG quality (default: config's).")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", None, "Decoding processes (default: cores).")
_DECODE_TIMEOUT = flags.DEFINE_float(
  "decode_timeout",
  video.DEFAULT_DECODE_TIMEOUT,
  "Seconds per video before it is skipped (0: none).",
)
_BEAM_OPTIONS = flags.DEFINE_string(
  "beam_options", None, "Build through Apache Beam with these pipeline options (docs/data.md)."
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Rebuild a dataset that is already prepared.")
_CHECK = flags.DEFINE_bool(
  "check", False, "Dry run: parse the annotations, find the files, print what is missing; no build."
)
# labelled_videos only.
_CONFIG_NAME = flags.DEFINE_string("config_name", None, "labelled_videos: name of this set.")
_CLASS_NAMES = flags.DEFINE_string("class_names", None, "labelled_videos: class-names file.")
_TRAIN_LIST = flags.DEFINE_string("train_list", None, "labelled_videos: train list file.")
_VAL_LIST = flags.DEFINE_string("validation_list", None, "labelled_videos: validation list.")
_TEST_LIST = flags.DEFINE_string("test_list", None, "labelled_videos: test list file.")
_VIDEO_ROOT = flags.DEFINE_string("video_root", "", "labelled_videos: root of the list paths.")
_LABEL_OFFSET = flags.DEFINE_integer("label_offset", 0, "labelled_videos: 1 for 1-based ids.")
_FRAMES_FPS = flags.DEFINE_float("frames_fps", 30.0, "labelled_videos: fps of frame folders.")


def _config(overrides: dict[str, Any]) -> labelled_videos.LabelledVideosConfig | None:
  """The labelled_videos config the flags describe; None for the other datasets."""
  if _DATASET.value.split("/")[0] != labelled_videos.LabelledVideos.name:
    return None
  split_files = {
    s: f
    for s, f in (
      ("train", _TRAIN_LIST.value),
      ("validation", _VAL_LIST.value),
      ("test", _TEST_LIST.value),
    )
    if f
  }
  if not (_CONFIG_NAME.value and _CLASS_NAMES.value and split_files):
    raise app.UsageError(
      "labelled_videos needs --config_name, --class_names and at least one --*_list"
    )
  return labelled_videos.LabelledVideosConfig(
    name=_CONFIG_NAME.value,
    class_names_file=_CLASS_NAMES.value,
    split_files=split_files,
    video_root=_VIDEO_ROOT.value,
    label_offset=_LABEL_OFFSET.value,
    frames_fps=_FRAMES_FPS.value,
    **overrides,
  )


def _print_check(builder: base.VideoDatasetBuilder) -> None:
  print(f"\n{builder.name}/{builder.builder_config.name}: check of {_MANUAL_DIR.value}")
  report = builder.check(_MANUAL_DIR.value)
  for split, c in report["splits"].items():
    print(f"  {split}: {c['listed']} listed, {c['found']} files found; problems {c['problems']}")
    for e in c["examples"]:
      print(f"    {e['reason']}: {e['video_id']} ({e['detail']})")
  for split in report["no_annotation"]:
    print(f"  {split}: no annotation file (not built)")
  unref = report["unreferenced"]
  print(f"  {len(unref)} video files / frame folders that no annotation references")
  for p in unref[:20]:
    print(f"    {p}")
  if len(unref) > 20:
    print(f"    ... and {len(unref) - 20} more")


class _NoTfdsChatter(py_logging.Filter):
  """Drops TFDS's absl log records below ERROR (custom-config and variant-folder notices)."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.ERROR or "tensorflow_datasets" not in record.pathname


def _quiet_third_party() -> None:
  """No INFO from absl, TensorFlow and Beam on the console, and no TFDS notices; our progress
  line instead of TFDS's progress bars."""
  logging.set_verbosity(logging.WARNING)
  logging.get_absl_handler().addFilter(_NoTfdsChatter())
  for name in ("apache_beam", "tensorflow", "absl"):
    py_logging.getLogger(name).setLevel(py_logging.WARNING)
  tfds.disable_progress_bar()


def _beam_options() -> Any:
  if not _BEAM_OPTIONS.value:
    return None
  from apache_beam.options.pipeline_options import PipelineOptions  # only when asked for

  args = shlex.split(_BEAM_OPTIONS.value)
  if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
    args.append("--default_sdk_harness_log_level=WARNING")  # the workers' INFO off the console
  return PipelineOptions(args)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _quiet_third_party()
  overrides = {
    k: v
    for k, v in dict(
      short_side=_SHORT_SIDE.value, target_fps=_TARGET_FPS.value, jpeg_quality=_JPEG_QUALITY.value
    ).items()
    if v is not None
  }
  config = _config(overrides)
  if config is not None:
    overrides = {}
  kw = dict(
    manual_dir=_MANUAL_DIR.value,
    num_workers=_NUM_WORKERS.value,
    config=config,
    decode_timeout=_DECODE_TIMEOUT.value or None,
    **overrides,
  )
  builder = builders.get_builder(_DATASET.value, _DATA_DIR.value, **kw)
  if _CHECK.value:
    _print_check(builder)
    return
  if not isinstance(builder, base.VideoDatasetBuilder):  # a prepared set read from its folder
    _print_summary(builder)
    _index_frames(builder)
    return
  if builder.is_prepared() and not _OVERWRITE.value:
    stale = builder.stale_reasons(_MANUAL_DIR.value)
    if stale:
      print(f"WARNING: {builder.info.full_name} in {builder.data_dir} is stale (not rebuilt):")
      for r in stale:
        print(f"  {r}")
      print("  rerun with --overwrite to rebuild it")
  else:
    print(f"{builder.info.full_name}: writing frames at {_rate(builder.target_fps())}", flush=True)
  builder = builders.ensure_prepared(
    _DATASET.value,
    _DATA_DIR.value,
    beam_options=_beam_options(),
    overwrite=_OVERWRITE.value,
    **kw,
  )
  _print_summary(builder)
  _index_frames(builder)


def _index_frames(builder: tfds.core.DatasetBuilder) -> None:
  """The frame indexes beside the shards (data/frame_index.py), so that training hosts, which may
  only read the dataset (a bucket), never write to it."""
  counts = pipeline.index_frames(builder)
  if counts[frame_index.BUILT]:
    print(f"  frame indexes: stored for {counts[frame_index.BUILT]} shards")


def _rate(fps: float | None) -> str:
  return "each video's native rate" if fps is None else f"{fps:g} fps"


def _print_summary(builder: tfds.core.DatasetBuilder) -> None:
  info = builder.info
  print(
    f"\n{info.full_name} in {builder.data_dir} (frames at {_rate(info.metadata.get('target_fps'))})"
  )
  skipped = (info.metadata or {}).get("skipped", {})
  for split, split_info in info.splits.items():
    s = skipped.get(split, {})
    print(
      f"  {split}: {split_info.num_examples} videos; skipped {s.get('total', 0)} "
      f"{s.get('by_reason', {})}"
    )


if __name__ == "__main__":
  flags.mark_flag_as_required("dataset")
  app.run(main)
