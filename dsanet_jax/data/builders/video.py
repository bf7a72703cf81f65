"""One video of a build: what to encode (`VideoItem`) under which output options
(`VideoBuilderConfig`), its TFDS example, or the record of why it was skipped.

Shared by the plain build loop (`base.VideoDatasetBuilder`) and the Beam one (`beam_build`); it
imports neither. The skip list of a split is `SKIPPED_FILE` beside the TFDS files: records
{'video_id', 'path', 'reason', 'detail'} with `reason` in `decode.REASONS`.
"""

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from dsanet_jax.data import decode

SKIPPED_FILE = "skipped_{split}.json"


@dataclasses.dataclass
class VideoBuilderConfig(tfds.core.BuilderConfig):
  """Options shared by every video builder.

  Attributes:
    short_side: stored frames are resized so that min(H, W) == short_side; None = native size.
    target_fps: None keeps the native frame rate; otherwise frames are resampled to it.
    jpeg_quality: quality of the stored JPEG frames.
  """

  short_side: int | None = 256
  target_fps: float | None = None
  jpeg_quality: int = 90


@dataclasses.dataclass
class VideoItem:
  """One video to encode.

  Exactly one source: `path` (a video file, or a frame folder when `is_frame_dir`) or `render`
  (a callable returning (uint8 [T, H, W, 3] frames, fps); the synthetic datasets). `error`, when
  set, is a reason from `decode.REASONS` found before decoding (e.g. an unknown label). `window`:
  the clip's (start, end) seconds in its source video, cut if the file is the whole source.
  """

  video_id: str
  label: int
  path: str | None = None
  is_frame_dir: bool = False
  frame_dir_fps: float = 30.0
  render: Callable[[], tuple[np.ndarray, float]] | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)
  error: tuple[str, str] | None = None
  window: tuple[float, float] | None = None  # see decode.read_video


DEFAULT_DECODE_TIMEOUT = 300.0  # seconds per video; a 10 s Kinetics clip decodes in about 1 s


def encode_item(
  item: VideoItem, cfg: VideoBuilderConfig, pool: decode.DecodePool | None
) -> decode.EncodedVideo | decode.DecodeError:
  """One item -> its frames, or the DecodeError that says why it is skipped.

  Rendered items are encoded here; files are decoded by `pool` (needed for them). Only decode
  errors are data: any other exception (a bug in the encode path) propagates.
  """
  try:
    if item.render is not None:
      frames, fps = item.render()
      return decode.encode_frames(
        frames, fps, short_side=cfg.short_side, jpeg_quality=cfg.jpeg_quality
      )
    return pool.run(decode_task(item, cfg))
  except decode.DecodeError as e:
    return e


def decode_task(item: VideoItem, cfg: VideoBuilderConfig) -> decode.DecodeTask:
  """The decoding job of a file item under the config's output options."""
  return decode.DecodeTask(
    path=item.path, is_frame_dir=item.is_frame_dir, frame_dir_fps=item.frame_dir_fps,
    window=item.window, short_side=cfg.short_side, target_fps=cfg.target_fps,
    jpeg_quality=cfg.jpeg_quality,
  )  # fmt: skip


def make_example(item: VideoItem, video: decode.EncodedVideo) -> dict[str, Any]:
  """The TFDS example (the feature spec, module docstring) of a decoded item."""
  return dict(
    video=video.frames,
    label=item.label,
    video_id=item.video_id,
    num_frames=video.num_frames,
    fps=video.fps,
    **item.extra,
  )


def skip_record(item: VideoItem, reason: str, detail: str) -> dict[str, str]:
  return dict(video_id=item.video_id, path=item.path or "", reason=reason, detail=detail)


def write_skipped(path: str, skipped: list[dict[str, str]]) -> None:
  """Writes a skip list (local or remote path: Beam workers may write to GCS)."""
  epath.Path(path).write_text(json.dumps(skipped, indent=1))


def read_skipped(data_dir: str | os.PathLike, split: str) -> list[dict[str, str]]:
  """The skip list of a split prepared in `data_dir` (module docstring)."""
  path = epath.Path(data_dir) / SKIPPED_FILE.format(split=split)
  if not path.exists():
    raise FileNotFoundError(f"{path}: no skip list (was split {split!r} built?)")
  return json.loads(path.read_text())
