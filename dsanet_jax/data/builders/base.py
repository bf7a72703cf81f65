"""What every video builder shares: the feature spec, the build loop (local processes or Beam),
the skip counts, the build record (metadata) and the dry-run check. One video's item, encode,
example and skip record: `video.py`.

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
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from dsanet_jax.data import decode
from dsanet_jax.data.builders import video


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


def file_stats(path: str) -> dict[str, Any]:
  """{'size', 'mtime', 'lines'} of a file (what a build records of its annotation files)."""
  st = os.stat(path)
  lines = 0
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      lines += chunk.count(b"\n")
  return dict(size=st.st_size, mtime=round(st.st_mtime, 3), lines=lines)


class Progress:
  """Build progress with rate and ETA: one updating line on a terminal, else a line every 30 s."""

  def __init__(
    self, desc: str, total: int, stream: Any = None, interval: float | None = None
  ) -> None:
    """`interval`: seconds between updates (default 1 on a terminal, 30 otherwise)."""
    self.desc, self.total = desc, total
    self.stream = stream or sys.stderr
    self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
    self.interval = interval if interval is not None else (1.0 if self.tty else 30.0)
    self.done = self.skipped = 0
    self.start = self.last = time.monotonic()

  def update(self, skipped: bool) -> None:
    self.done += 1
    self.skipped += skipped
    now = time.monotonic()
    if now - self.last >= self.interval:
      self.last = now
      self._show(now)

  def _show(self, now: float) -> None:
    rate = self.done / max(now - self.start, 1e-9)
    eta = (self.total - self.done) / rate if rate > 0 else float("inf")
    line = (
      f"{self.desc}: {self.done}/{self.total} videos ({100 * self.done / self.total:.1f}%), "
      f"{rate:.2f} videos/s, skipped {self.skipped}, ETA {_duration(eta)}"
    )
    self.stream.write(f"\r{line}\033[K" if self.tty else line + "\n")
    self.stream.flush()

  def close(self) -> None:
    if self.tty and self.last > self.start:
      self.stream.write("\r\033[K")
      self.stream.flush()


def _duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  s = round(seconds)
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class VideoDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the video builders: subclasses define `_class_names()` and `_list_items()`.

  `_list_items(manual_dir)` parses the annotations and finds the files: {split: [video.VideoItem]}.
  The shared loop decodes the files in `num_workers` processes (default: all cores; each video
  has `decode_timeout` seconds), shows progress, records and skips bad videos, and writes the
  skip list at the end of each split. With Beam options in the DownloadConfig, each split is a
  Beam PTransform instead (`beam_build.py`): same examples, same skip lists.
  `check(manual_dir)` does the first part only (a dry run: what would be built, what is missing).

  At build time the metadata records `target_fps` (the rate every video was resampled to; None:
  native rates) and `build` (the config's options and the size, mtime and line count of every
  annotation file) that `stale_reasons` compares with the manual folder of a later run.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
  # No checksums file next to the code: TFDS would otherwise look for one through a lazy import
  # of `importlib_resources`, which is not installed.
  code_path = None

  def __init__(
    self,
    *,
    num_workers: int | None = None,
    manual_dir: str | None = None,
    decode_timeout: float | None = video.DEFAULT_DECODE_TIMEOUT,
    **kwargs: Any,
  ) -> None:
    """`manual_dir` lets builders whose class list lives with the downloaded files (SSv2) read
    it at construction; `download_and_prepare` still takes it from its DownloadConfig.
    `decode_timeout`: seconds per video before its decoding process is killed (None: none)."""
    self._num_workers = num_workers or os.cpu_count() or 1
    self._manual_dir_hint = manual_dir
    self._decode_timeout = decode_timeout
    self._use_beam = False
    self._beam_splits: dict[str, tuple[int, str]] = {}  # Beam: split -> (listed, work dir)
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

  def _list_items(self, manual_dir: str | None) -> dict[str, list[video.VideoItem]]:
    """{split: items}: the annotations parsed and the files located, nothing decoded."""
    raise NotImplementedError

  def _split_files(self, manual_dir: str | None) -> dict[str, str | None]:
    """{split: its annotation file, None when absent} for every split the builder knows."""
    del manual_dir
    return {}

  def _other_files(self, manual_dir: str | None) -> dict[str, str | None]:
    """{role: file (None when absent)}: the other files a build reads (class and id lists)."""
    del manual_dir
    return {}

  def target_fps(self) -> float | None:
    """The rate every video is resampled to; None: native rates."""
    return self.builder_config.target_fps

  def _generate_examples(self, **kwargs: Any) -> None:  # _split_generators returns them
    raise NotImplementedError

  # ------------------------------------------------------------------ build
  def _generate_splits(
    self, dl_manager: tfds.download.DownloadManager, download_config: tfds.download.DownloadConfig
  ) -> Any:
    self._use_beam = bool(download_config.beam_options or download_config.beam_runner)
    return super()._generate_splits(dl_manager, download_config)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    manual_dir = os.fspath(dl_manager.manual_dir) if self.MANUAL_DOWNLOAD_INSTRUCTIONS else None
    self.info.metadata["target_fps"] = self.target_fps()
    self.info.metadata["build"] = self.build_record(manual_dir)
    out = {}
    for split, items in self._list_items(manual_dir).items():
      if not items:
        logging.warning("%s: split %r lists no videos; not built", self.name, split)
        continue
      if self._use_beam:
        out[split] = self._beam_split(split, items)
      else:
        out[split] = self._generate_from_items(split, items)
    if not out:
      raise ValueError(f"{self.name}/{self.builder_config.name}: no split lists any video")
    return out

  def _generate_from_items(
    self, split: str, items: Iterable[video.VideoItem]
  ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields (video_id, example) for the good items; records the bad ones (module docstring)."""
    items = list(items)
    skipped, todo = _screen(items)
    progress = Progress(f"{self.name} {split}", len(todo))
    kept = 0
    try:
      for item, result in zip(todo, self._encode_all(todo)):
        progress.update(isinstance(result, decode.DecodeError))
        if isinstance(result, decode.DecodeError):
          skipped.append(video.skip_record(item, result.reason, result.detail))
          continue
        kept += 1
        yield item.video_id, video.make_example(item, result)
    finally:
      progress.close()
    if not kept:
      raise self._nothing_kept(split, len(items), skipped)
    path = epath.Path(self.data_dir) / video.SKIPPED_FILE.format(split=split)
    video.write_skipped(str(path), skipped)
    self._report_skipped(split, len(items), skipped)

  def _encode_all(
    self, items: list[video.VideoItem]
  ) -> Iterator[decode.EncodedVideo | decode.DecodeError]:
    """The results of `video.encode_item`, in order: files decoded in a process pool."""
    cfg = self.builder_config
    if all(i.render is not None for i in items):
      yield from (video.encode_item(i, cfg, None) for i in items)
      return
    if any(i.render is not None for i in items):
      raise ValueError(f"{self.name}: a split mixes rendered and file items")
    with decode.DecodePool(min(self._num_workers, len(items)), self._decode_timeout) as pool:
      yield from pool.imap(video.decode_task(i, cfg) for i in items)

  def _beam_split(self, split: str, items: list[video.VideoItem]) -> Any:
    from dsanet_jax.data.builders import beam_build  # Beam is imported only when asked for

    skipped, todo = _screen(items)
    root = epath.Path(self.data_dir)  # a local path or a URL (Beam workers may write to GCS)
    work_dir = str(root / f"beam_items_{split}")
    self._beam_splits[split] = (len(items), work_dir)
    return beam_build.GenerateSplit(
      todo, skipped, str(root / video.SKIPPED_FILE.format(split=split)), work_dir,
      config=self.builder_config, decode_timeout=self._decode_timeout,
    )  # fmt: skip

  def _process_pipeline_result(self, pipeline_result: Any) -> None:
    """After a Beam build: the skip lists the pipeline wrote go into the metadata; the item
    files go."""
    del pipeline_result
    for split, (listed, work_dir) in self._beam_splits.items():
      epath.Path(work_dir).rmtree(missing_ok=True)
      skipped = video.read_skipped(self.data_dir, split)
      if len(skipped) == listed:
        raise self._nothing_kept(split, listed, skipped)
      self._report_skipped(split, listed, skipped)

  def _nothing_kept(self, split: str, listed: int, skipped: list[dict[str, str]]) -> ValueError:
    # TFDS would fail with "No examples were yielded."; say why instead.
    counts = dict(collections.Counter(s["reason"] for s in skipped))
    return ValueError(
      f"{self.name}/{self.builder_config.name}: every one of the {listed} videos listed "
      f"for split {split!r} was skipped {counts} (wrong manual folder or layout?); "
      f"first ones: {skipped[:3]}"
    )

  def _report_skipped(self, split: str, total: int, skipped: list[dict[str, str]]) -> None:
    counts = collections.Counter(s["reason"] for s in skipped)
    self.info.metadata.setdefault("skipped", {})[split] = dict(
      total=len(skipped), by_reason=dict(sorted(counts.items())), listed=total
    )
    msg = f"{self.name}/{self.builder_config.name} {split}: kept {total - len(skipped)} of {total}"
    if skipped:
      msg += (
        f", skipped {len(skipped)} {dict(counts)}; list in {video.SKIPPED_FILE.format(split=split)}"
      )
    logging.info(msg)
    if not logging.level_info():  # a console that hides INFO (prepare's) still gets this line once
      print(msg, flush=True)

  # ------------------------------------------------------------------ what a build depends on
  def build_record(self, manual_dir: str | None) -> dict[str, Any]:
    """The options and annotation files of a build now (stored as `metadata['build']`); no
    files when a builder that needs a manual folder is given none."""
    cfg = self.builder_config
    skip = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
    options = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in skip}
    files = {}
    if manual_dir or not self.MANUAL_DOWNLOAD_INSTRUCTIONS:
      roles = {f"split {k}": v for k, v in self._split_files(manual_dir).items()}
      for role, path in {**roles, **self._other_files(manual_dir)}.items():
        if path is not None:  # relative to the manual folder: moving the folder changes nothing
          rel = os.path.relpath(path, manual_dir) if manual_dir else path
          files[role] = dict(path=path if rel.startswith("..") else rel, **file_stats(path))
        else:
          files[role] = None
    return json.loads(json.dumps(dict(options=options, files=files), default=str))

  def stale_reasons(self, manual_dir: str | None = None) -> list[str]:
    """Why the prepared dataset may not match the manual folder and options now ([]: it does).
    Without a manual folder (for a builder that needs one) only the options are compared."""
    manual_dir = _expand(manual_dir or self._manual_dir_hint)
    built = (self.info.metadata or {}).get("build")
    if built is None:
      return ["no build record in its metadata (prepared by an older version)"]
    now = self.build_record(manual_dir)
    reasons = []
    for k in sorted(set(built["options"]) | set(now["options"])):
      old, new = built["options"].get(k), now["options"].get(k)
      if old != new:
        reasons.append(f"option {k}: built with {old!r}, now {new!r}")
    if not now["files"] and self.MANUAL_DOWNLOAD_INSTRUCTIONS:
      return reasons
    for role in sorted(set(built["files"]) | set(now["files"])):
      old, new = built["files"].get(role), now["files"].get(role)
      if old == new:
        continue
      if old is None:
        reasons.append(f"{role}: {new['path']} is new (absent at build time)")
      elif new is None:
        reasons.append(f"{role}: {old['path']} is gone")
      else:
        what = ", ".join(f"{k} {old[k]} -> {new[k]}" for k in old if old[k] != new.get(k))
        reasons.append(f"{role}: {new['path']} changed ({what})")
    return reasons

  def check(self, manual_dir: str | None = None) -> dict[str, Any]:
    """A dry run: per split, how many videos are listed, how many files were found, and the
    problems visible without decoding ({reason: count}, plus a few examples); then the splits
    with no annotation file and the video files / frame folders no annotation references."""
    manual_dir = _expand(manual_dir or self._manual_dir_hint)
    out = {}
    listed = self._list_items(manual_dir)
    for split, items in listed.items():
      problems = [video.skip_record(i, *i.error) for i in items if i.error is not None]
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
    referenced = {os.path.realpath(i.path) for v in listed.values() for i in v if i.path}
    unreferenced = [p for p in _media_under(manual_dir) if os.path.realpath(p) not in referenced]
    no_annotation = [s for s, f in self._split_files(manual_dir).items() if f is None]
    return dict(splits=out, no_annotation=no_annotation, unreferenced=unreferenced)

  # ------------------------------------------------------------------ shared
  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      description=self._description(),
      features=video_features(self._class_names(), **self._extra_features()),
      supervised_keys=("video", "label"),
      metadata=tfds.core.MetadataDict(),
    )


def _expand(path: str | None) -> str | None:
  return os.path.expanduser(path) if path else path


def _screen(items: list[video.VideoItem]) -> tuple[list[dict[str, str]], list[video.VideoItem]]:
  """(records of the items bad before decoding, incl. repeated ids; the items to decode)."""
  skipped: list[dict[str, str]] = []
  seen: set[str] = set()
  todo: list[video.VideoItem] = []
  for item in items:
    if item.error is None and item.video_id in seen:
      item.error = (decode.DUPLICATE_ID, f"video id {item.video_id!r} listed twice")
    seen.add(item.video_id)
    if item.error is not None:
      skipped.append(video.skip_record(item, *item.error))
    else:
      todo.append(item)
  return skipped, todo


def _media_under(root: str | None) -> list[str]:
  """Video files and frame folders (folders holding image files) below `root`, sorted."""
  if not root or not os.path.isdir(root):
    return []
  out = []
  for dirpath, dirs, files in os.walk(root, followlinks=True):
    dirs.sort()
    if any(f.lower().endswith(decode.IMAGE_EXTENSIONS) for f in files):
      out.append(dirpath)
    out += [os.path.join(dirpath, f) for f in files if f.lower().endswith(VIDEO_EXTENSIONS)]
  return sorted(out)


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
