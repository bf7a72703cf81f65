"""What every video builder shares: the feature spec, the parallel encode loop, the skip records.

The feature spec (the contract with the snippet pipeline, docs/design.md):
  video:      tfds.features.Video((None, None, None, 3), encoding_format='jpeg'): [T, H, W, 3]
              uint8 frames stored as one JPEG each, short side = the config's `short_side`.
  label:      ClassLabel (official class order; -1 = unlabelled, e.g. a test split).
  video_id:   Text (YouTube id, SSv2 id, relative path, ...; unique within a split).
  num_frames: int32, T.
  fps:        float32, frames per second of the stored frames.
Builders may add features (e.g. Kinetics `start_time`), never remove or rename these.

A video that cannot be used is skipped and recorded as {'video_id', 'path', 'reason', 'detail'}
(`reason` in `decode.REASONS`) in `skipped_<split>.json` beside the TFDS files; the counts per
reason go into `info.metadata['skipped'][<split>]`.
"""

import collections
import concurrent.futures
import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from absl import logging

from dsanet_jax.data import decode

SKIPPED_FILE = "skipped_{split}.json"


def video_features(class_names: list[str] | int, **extra: Any) -> tfds.features.FeaturesDict:
  """The shared feature spec (module docstring) plus builder-specific `extra` features.

  `class_names` may be a number of classes when the names are only known later.
  """
  if isinstance(class_names, int):
    label = tfds.features.ClassLabel(num_classes=class_names)
  else:
    label = tfds.features.ClassLabel(names=class_names)
  features = dict(
    video=tfds.features.Video((None, None, None, 3), encoding_format="jpeg"),
    label=label,
    video_id=tfds.features.Text(),
    num_frames=tfds.features.Scalar(np.int32),
    fps=tfds.features.Scalar(np.float32),
  )
  overlap = set(features) & set(extra)
  if overlap:
    raise ValueError(f"extra features {sorted(overlap)} clash with the shared feature spec")
  features.update(extra)
  return tfds.features.FeaturesDict(features)


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


def _ordered_map(fn: Callable, items: list, num_workers: int) -> Iterator:
  """fn over items with a thread pool, results in input order, at most 4*workers in flight."""
  if num_workers <= 1:
    yield from map(fn, items)
    return
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    pending = collections.deque()
    it = iter(items)
    for item in it:
      pending.append(pool.submit(fn, item))
      if len(pending) >= 4 * num_workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


class VideoDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the video builders: subclasses define `_class_names()` and `_list_items()`.

  `_list_items(manual_dir)` parses the annotations and finds the files: {split: [VideoItem]}.
  The shared loop decodes the items in a thread pool (`num_workers`, default: all cores), shows a
  progress bar, records and skips bad videos, and writes the skip list at the end of each split.
  `check(manual_dir)` does the first part only (a dry run: what would be built, what is missing).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  # No checksums file next to the code: TFDS would otherwise look for one through a lazy import
  # of `importlib_resources`, which is not installed.
  code_path = None

  def __init__(self, *, num_workers: int | None = None, manual_dir: str | None = None, **kwargs):
    """`manual_dir` lets builders whose class list lives with the downloaded files (SSv2) read
    it at construction; `download_and_prepare` still takes it from its DownloadConfig."""
    self._num_workers = num_workers or os.cpu_count() or 1
    self._manual_dir_hint = manual_dir
    super().__init__(**kwargs)

  # ------------------------------------------------------------------ subclass hooks
  def _class_names(self) -> list[str] | int:
    """The class names in id order, or their number when the names are not known yet (they
    are then restored from a prepared dataset, or set when building)."""
    raise NotImplementedError

  def _extra_features(self) -> dict[str, Any]:
    return {}

  def _description(self) -> str:
    return (type(self).__doc__ or "").strip()

  def _list_items(self, manual_dir: str | None) -> dict[str, list[VideoItem]]:
    """{split: items}: the annotations parsed and the files located, nothing decoded."""
    raise NotImplementedError

  def _generate_examples(self, **kwargs):  # _split_generators returns the generators
    raise NotImplementedError

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir) if self.MANUAL_DOWNLOAD_INSTRUCTIONS else None
    out = {}
    for split, items in self._list_items(manual_dir).items():
      if not items:
        logging.warning("%s: split %r lists no videos; not built", self.name, split)
        continue
      out[split] = self._generate_from_items(split, items)
    if not out:
      raise ValueError(f"{self.name}/{self.builder_config.name}: no split lists any video")
    return out

  def check(self, manual_dir: str | None = None) -> dict[str, dict[str, Any]]:
    """A dry run: per split, how many videos are listed, how many files were found, and the
    problems visible without decoding ({reason: count}, plus a few examples)."""
    manual_dir = manual_dir or self._manual_dir_hint
    if manual_dir:
      manual_dir = os.path.expanduser(manual_dir)
    out = {}
    for split, items in self._list_items(manual_dir).items():
      problems = [_record(i, *i.error) for i in items if i.error is not None]
      found = sum(
        i.error is None and (i.render is not None or (i.path and os.path.exists(i.path)))
        for i in items
      )
      out[split] = dict(
        listed=len(items),
        found=found,
        problems=dict(collections.Counter(p["reason"] for p in problems)),
        examples=problems[:5],
      )
    return out

  # ------------------------------------------------------------------ shared
  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=self._description(),
      features=video_features(self._class_names(), **self._extra_features()),
      supervised_keys=("video", "label"),
      metadata=tfds.core.MetadataDict(),
    )

  def _encode(self, item: VideoItem) -> decode.EncodedVideo | decode.DecodeError:
    cfg = self.builder_config
    try:
      if item.render is not None:
        frames, fps = item.render()
        return decode.encode_frames(
          frames, fps, short_side=cfg.short_side, jpeg_quality=cfg.jpeg_quality
        )
      if item.is_frame_dir:
        video = decode.read_frame_dir(
          item.path, fps=item.frame_dir_fps, short_side=cfg.short_side,
          target_fps=cfg.target_fps, jpeg_quality=cfg.jpeg_quality,
        )  # fmt: skip
        return video
      return decode.read_video(
        item.path,
        threads=1 if self._num_workers > 1 else 0,
        short_side=cfg.short_side,
        target_fps=cfg.target_fps,
        jpeg_quality=cfg.jpeg_quality,
        window=item.window,
      )  # fmt: skip
    except decode.DecodeError as e:
      return e
    except Exception as e:
      return decode.DecodeError(decode.CORRUPT, f"{item.path}: {type(e).__name__}: {e}")

  def _generate_from_items(
    self, split: str, items: Iterable[VideoItem]
  ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields (video_id, example) for the good items; records the bad ones (module docstring)."""
    items = list(items)
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()
    todo: list[VideoItem] = []
    for item in items:
      if item.error is None and item.video_id in seen:
        item.error = (decode.DUPLICATE_ID, f"video id {item.video_id!r} listed twice")
      seen.add(item.video_id)
      if item.error is not None:
        skipped.append(_record(item, *item.error))
      else:
        todo.append(item)

    bar = tqdm.tqdm(
      total=len(todo), desc=f"{self.name} {split}", unit="video", leave=False, mininterval=1.0
    )
    kept = 0
    try:
      for item, result in zip(todo, _ordered_map(self._encode, todo, self._num_workers)):
        bar.update(1)
        if isinstance(result, decode.DecodeError):
          skipped.append(_record(item, result.reason, result.detail))
          bar.set_postfix(skipped=len(skipped))
          continue
        kept += 1
        yield (
          item.video_id,
          dict(
            video=result.frames,
            label=item.label,
            video_id=item.video_id,
            num_frames=result.num_frames,
            fps=result.fps,
            **item.extra,
          ),
        )
    finally:
      bar.close()
    if not kept:  # TFDS would fail with "No examples were yielded."; say why instead.
      counts = dict(collections.Counter(s["reason"] for s in skipped))
      raise ValueError(
        f"{self.name}/{self.builder_config.name}: every one of the {len(items)} videos listed "
        f"for split {split!r} was skipped {counts} (wrong manual folder or layout?); "
        f"first ones: {skipped[:3]}"
      )
    self._write_skipped(split, len(items), skipped)

  def _write_skipped(self, split: str, total: int, skipped: list[dict[str, str]]) -> None:
    counts = collections.Counter(s["reason"] for s in skipped)
    self.info.metadata.setdefault("skipped", {})[split] = dict(
      total=len(skipped), by_reason=dict(sorted(counts.items())), listed=total
    )
    path = os.path.join(os.fspath(self.data_dir), SKIPPED_FILE.format(split=split))
    with open(path, "w") as f:
      json.dump(skipped, f, indent=1)
    msg = f"{self.name}/{self.builder_config.name} {split}: kept {total - len(skipped)} of {total}"
    if skipped:
      msg += f", skipped {len(skipped)} {dict(counts)}; list in {SKIPPED_FILE.format(split=split)}"
    logging.info(msg)
    print(msg, flush=True)


VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg")


def find_manual_file(manual_dir: str, candidates: tuple[str, ...], what: str) -> str:
  """The first of `candidates` (relative to manual_dir) that exists; a clear error otherwise."""
  for c in candidates:
    p = os.path.join(manual_dir, c)
    if os.path.isfile(p):
      return p
  raise FileNotFoundError(
    f"{what}: none of {list(candidates)} found in the manual folder {manual_dir} "
    "(see the builder's MANUAL_DOWNLOAD_INSTRUCTIONS / docs/data.md)"
  )


def _record(item: VideoItem, reason: str, detail: str) -> dict[str, str]:
  return dict(video_id=item.video_id, path=item.path or "", reason=reason, detail=detail)


def read_skipped(builder: tfds.core.DatasetBuilder, split: str) -> list[dict[str, str]]:
  """The skip list of a prepared split (module docstring)."""
  path = os.path.join(os.fspath(builder.data_dir), SKIPPED_FILE.format(split=split))
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no skip list (was split {split!r} built?)")
  with open(path) as f:
    return json.load(f)
