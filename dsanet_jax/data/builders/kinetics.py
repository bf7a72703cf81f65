"""`kinetics400` (and Mini-Kinetics-200 as its `mini200` config), from manually downloaded files."""

import contextlib
import dataclasses
import importlib.resources
import os
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from dsanet_jax.data import annotations, decode
from dsanet_jax.data.builders import base, video

LABEL_MAP = "kinetics400_label_map.txt"
KINETICS_FPS = 30.0  # the original extracts Kinetics frames at 30 fps (spec §4.1)

_ANNOTATIONS = {
  "train": ("kinetics-400_train.csv", "kinetics400_train.csv", "train.csv"),
  "validation": ("kinetics-400_val.csv", "kinetics400_val.csv", "val.csv", "validate.csv"),
  "test": ("kinetics-400_test.csv", "kinetics400_test.csv", "test.csv"),
}
_ANNOTATION_DIRS = ("", "annotations", "kinetics400", "kinetics400/annotations")


def kinetics400_classes() -> list[str]:
  """The 400 official class names; the 0-based line number is the class id (released models)."""
  path = importlib.resources.files("dsanet_jax.data") / "labels" / LABEL_MAP
  return annotations.read_class_names(str(path))


def annotation_candidates(split: str) -> tuple[str, ...]:
  return tuple(os.path.join(d, f) for d in _ANNOTATION_DIRS for f in _ANNOTATIONS[split])


def index_videos(root: str) -> dict[str, list[tuple[str, int | None, int | None]]]:
  """youtube_id -> [(path, start, end)] for every video file under `root` (recursively).

  File stems `{youtube_id}_{start:06d}_{end:06d}` give start and end; any other stem is taken as
  a bare youtube id (start = end = None). Folder names (e.g. `{label}/`) are not used.
  """
  index: dict[str, list[tuple[str, int | None, int | None]]] = {}
  for dirpath, _, files in os.walk(root, followlinks=True):
    for name in files:
      stem, ext = os.path.splitext(name)
      if ext.lower() not in base.VIDEO_EXTENSIONS:
        continue
      parts = stem.rsplit("_", 2)
      if len(parts) == 3 and all(len(p) == 6 and p.isdigit() for p in parts[1:]) and parts[0]:
        key, start, end = parts[0], int(parts[1]), int(parts[2])
      else:
        key, start, end = stem, None, None
      index.setdefault(key, []).append((os.path.join(dirpath, name), start, end))
  for v in index.values():
    v.sort()
  return index


def find_video(index: dict, row: annotations.KineticsRow) -> str | None:
  """The file for an annotation row: the exact `{id}_{start}_{end}` clip first, else `{id}`."""
  found = index.get(row.youtube_id, [])
  for path, start, end in found:
    if (start, end) == (row.time_start, row.time_end):
      return path
  for path, start, _ in found:
    if start is None:
      return path
  return found[0][0] if len(found) == 1 else None


@dataclasses.dataclass
class KineticsConfig(video.VideoBuilderConfig):
  """Kinetics-400 options.

  Attributes:
    subset_classes_file: a class list (relative to manual_dir) restricting the classes; its
      order gives the ids. None with `subset_id_files`: the classes of the listed videos, in the
      Kinetics-400 order.
    subset_id_files: split -> file of youtube ids (one per line, relative to manual_dir)
      restricting the videos of that split.
    num_classes: the subset's class count, used before the class list has been read.
    cut_to_window: a file that is the whole YouTube video (at least `time_end` seconds long) is
      cut to [time_start, time_end); already cut clips are kept whole.
    target_fps: 30 by default (the original's frame extraction, spec §4.1); None keeps native
      rates.
  """

  target_fps: float | None = KINETICS_FPS
  subset_classes_file: str | None = None
  subset_id_files: dict[str, str] | None = None
  num_classes: int = 400
  cut_to_window: bool = True


class Kinetics400(base.VideoDatasetBuilder):
  """Kinetics-400 from the official CSV annotations and downloaded clips."""

  name = "kinetics400"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {
    "1.0.0": "Native frame rates.",
    "1.1.0": "Resampled to 30 fps by default, as the original; rotation applied.",
  }
  BUILDER_CONFIGS: ClassVar[list[KineticsConfig]] = [
    KineticsConfig(name="default", description="All 400 classes, short side 256, 30 fps."),
    KineticsConfig(
      name="mini200",
      description="Mini-Kinetics-200 (Xie et al. 2018): 200 classes, listed train/val videos.",
      subset_classes_file="mini_kinetics200_classes.txt",
      subset_id_files={"train": "train_ytid_list.txt", "validation": "val_ytid_list.txt"},
      num_classes=200,
    ),
  ]
  DEFAULT_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put into the manual folder (`--manual_dir`):
  * the official annotation CSVs, any of: kinetics-400_{train,val,test}.csv (2017 release, 6
    columns), {train,validate,test}.csv (later releases, 5 columns), also accepted under
    annotations/; a split whose CSV is absent is not built;
  * the video files anywhere below it, named {youtube_id}_{start:06d}_{end:06d}.mp4 (the common
    download scripts), {label}/{youtube_id}_....mp4 or {youtube_id}.mp4 (any container PyAV
    reads: mp4, webm, mkv, avi, ...). A file holding the whole YouTube video is cut to the
    annotated [time_start, time_end) window.
  For the mini200 config also: mini_kinetics200_classes.txt (one class name per line, optional)
  and train_ytid_list.txt / val_ytid_list.txt (the Mini-Kinetics-200 youtube id lists).
  Missing or broken videos are skipped and listed in skipped_<split>.json.
  """

  def _is_subset(self) -> bool:
    cfg = self.builder_config
    return bool(cfg.subset_classes_file or cfg.subset_id_files)

  def _class_names(self) -> list[str] | int:
    if not self._is_subset():
      return kinetics400_classes()
    if self._manual_dir_hint:
      try:
        return self._subset_classes(self._manual_dir_hint)
      except FileNotFoundError:
        pass
    return self.builder_config.num_classes

  def _extra_features(self) -> dict[str, Any]:
    return dict(
      start_time=tfds.features.Scalar(np.int32, doc="start in the YouTube video (s)"),
      end_time=tfds.features.Scalar(np.int32, doc="end in the YouTube video (s)"),
    )

  def _subset_ids(self, manual_dir: str, split: str) -> set[str] | None:
    files = self.builder_config.subset_id_files or {}
    if split not in files:
      return None
    path = base.find_manual_file(manual_dir, (files[split],), f"{self.name} {split} id list")
    with open(path) as f:
      return {ln.strip() for ln in f if ln.strip()}

  def _subset_classes(self, manual_dir: str) -> list[str]:
    cfg = self.builder_config
    if cfg.subset_classes_file:
      p = os.path.join(manual_dir, cfg.subset_classes_file)
      if os.path.isfile(p):
        return annotations.read_class_names(p)
    labels = set()
    for split, csv in self._split_csvs(manual_dir).items():
      ids = self._subset_ids(manual_dir, split)
      labels |= {r.label for r in annotations.read_kinetics_csv(csv) if r.youtube_id in ids}
    if not labels:
      raise FileNotFoundError(f"{self.name}: no listed video with a label in {manual_dir}")
    return [c for c in kinetics400_classes() if c in labels]

  def _split_files(self, manual_dir: str | None) -> dict[str, str | None]:
    found = self._split_csvs(manual_dir)
    id_files = self.builder_config.subset_id_files
    return {s: found.get(s) for s in _ANNOTATIONS if not id_files or s in id_files}

  def _other_files(self, manual_dir: str | None) -> dict[str, str | None]:
    cfg = self.builder_config
    names = dict(cfg.subset_id_files or {})
    out = {f"{split} id list": names[split] for split in sorted(names)}
    if cfg.subset_classes_file:
      out["class list"] = cfg.subset_classes_file
    return {
      role: p if os.path.isfile(p) else None
      for role, p in ((r, os.path.join(manual_dir, f)) for r, f in out.items())
    }

  def _split_csvs(self, manual_dir: str) -> dict[str, str]:
    """{split: annotation CSV} of the splits to build (an id-list subset: only listed splits
    whose id list is there)."""
    csvs = {}
    id_files = self.builder_config.subset_id_files
    for split in _ANNOTATIONS:
      if id_files and (
        split not in id_files or not os.path.isfile(os.path.join(manual_dir, id_files[split]))
      ):
        continue
      with contextlib.suppress(FileNotFoundError):
        csvs[split] = base.find_manual_file(manual_dir, annotation_candidates(split), split)
    return csvs

  def _list_items(self, manual_dir: str | None) -> dict[str, list[video.VideoItem]]:
    csvs = self._split_csvs(manual_dir)
    if not csvs:
      raise FileNotFoundError(
        f"no Kinetics annotation CSV in {manual_dir}; expected one of "
        f"{list(annotation_candidates('validation'))} (or train/test)\n"
        + self.MANUAL_DOWNLOAD_INSTRUCTIONS
      )
    names = kinetics400_classes()
    if self._is_subset():
      names = self._subset_classes(manual_dir)
      label_feature = self.info.features["label"]
      if label_feature.num_classes != len(names):
        raise ValueError(
          f"{self.name}/{self.builder_config.name}: {len(names)} subset classes in "
          f"{manual_dir}, config says num_classes={label_feature.num_classes}"
        )
      label_feature.names = names
    rows = {split: annotations.read_kinetics_csv(path) for split, path in csvs.items()}
    index = index_videos(manual_dir)
    return {split: self._items(split, rows[split], names, index, manual_dir) for split in csvs}

  def _items(
    self,
    split: str,
    rows: list[annotations.KineticsRow],
    names: list[str],
    index: dict[str, list[tuple[str, int | None, int | None]]],
    manual_dir: str,
  ) -> list[video.VideoItem]:
    class_id = {n: i for i, n in enumerate(names)}
    subset_ids = self._subset_ids(manual_dir, split)
    items = []
    for row in rows:
      if subset_ids is not None and row.youtube_id not in subset_ids:
        continue
      if self._is_subset() and subset_ids is None and row.label not in class_id:
        continue  # a class-only subset: other classes are out of the subset, not bad input
      item = video.VideoItem(
        video_id=row.youtube_id,
        label=-1 if row.label is None else class_id.get(row.label, -1),
        path=find_video(index, row),
        extra=dict(start_time=row.time_start, end_time=row.time_end),
        window=(row.time_start, row.time_end) if self.builder_config.cut_to_window else None,
      )
      if row.label is not None and row.label not in class_id:
        item.error = (decode.UNKNOWN_LABEL, f"line {row.line}: {row.label!r} is not a class")
      elif item.path is None:
        item.error = (decode.MISSING, f"no video file for {row.clip_name} (line {row.line})")
        item.path = row.clip_name
      items.append(item)
    return items
