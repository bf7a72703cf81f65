"""`something_something_v2` and `something_something_v1`, from manually downloaded files.

Class names come from the dataset's own label file in the manual folder (20BN content, not
checked in here); a prepared dataset keeps them in its `label.labels.txt`.
"""

import dataclasses
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import tensorflow_datasets as tfds

from dsanet_jax.data import annotations, decode
from dsanet_jax.data.builders import base, video

NUM_CLASSES = 174
SSV2_FPS = 12.0  # the SSv2 webm videos and the frames extracted from them at native rate
SSV1_FPS = 12.0  # the SSv1 JPEG release was extracted at 12 fps


@dataclasses.dataclass
class SomethingConfig(video.VideoBuilderConfig):
  """Options of the Something-Something builders.

  Attributes:
    source: 'video' ({id}.webm files), 'frames' ({id}/ folders of JPEGs) or 'auto' (a video if
      there is one, else a frame folder).
    frames_fps: the frame rate recorded for frame folders.
  """

  source: str = "auto"
  frames_fps: float = SSV2_FPS


def locate(
  manual_dir: str,
  video_id: str,
  *,
  source: str,
  video_dirs: tuple[str, ...],
  frame_dirs: tuple[str, ...],
  video_ext: str = ".webm",
) -> tuple[str | None, bool]:
  """(path, is_frame_dir) of a video's file or frame folder; (None, False) when absent."""
  if source not in ("auto", "video", "frames"):
    raise ValueError(f"source must be 'auto', 'video' or 'frames', got {source!r}")
  if source in ("auto", "video"):
    for d in video_dirs:
      p = os.path.join(manual_dir, d, video_id + video_ext)
      if os.path.isfile(p):
        return p, False
  if source in ("auto", "frames"):
    for d in frame_dirs:
      p = os.path.join(manual_dir, d, video_id)
      if os.path.isdir(p):
        return p, True
  return None, False


class _SomethingBase(base.VideoDatasetBuilder, skip_registration=True):
  LABEL_FILES: ClassVar[tuple[str, ...]] = ()
  ANNOTATION_FILES: ClassVar[dict[str, tuple[str, ...]]] = {}
  VIDEO_DIRS: ClassVar[tuple[str, ...]] = ()
  FRAME_DIRS: ClassVar[tuple[str, ...]] = ()

  def _label_file(self, manual_dir: str) -> str:
    return base.find_manual_file(manual_dir, self.LABEL_FILES, f"{self.name} label list")

  ANNOTATION_KIND: ClassVar[str] = ""  # for the error when no split has annotations

  def _read_names(self, manual_dir: str) -> list[str]:
    return annotations.read_class_names(self._label_file(manual_dir))

  def _entries(
    self, path: str, split: str
  ) -> Iterator[tuple[str, str | None, int, dict[str, Any]]]:
    """One annotation file -> (video_id, class name or None, line, extra features) per entry."""
    raise NotImplementedError

  def _split_files(self, manual_dir: str | None) -> dict[str, str | None]:
    out = {}
    for split, candidates in self.ANNOTATION_FILES.items():
      try:
        out[split] = base.find_manual_file(manual_dir, candidates, split)
      except FileNotFoundError:
        out[split] = None
    return out

  def _other_files(self, manual_dir: str | None) -> dict[str, str | None]:
    try:
      return {"class list": self._label_file(manual_dir)}
    except FileNotFoundError:
      return {"class list": None}

  def _list_items(self, manual_dir: str | None) -> dict[str, list[video.VideoItem]]:
    names = self._read_names(manual_dir)
    self._set_names(names)
    class_id = {n: i for i, n in enumerate(names)}
    out = {}
    for split, path in self._split_files(manual_dir).items():
      if path is None:
        continue
      items = []
      for video_id, label, line, extra in self._entries(path, split):
        item = self._item(manual_dir, video_id, -1 if label is None else class_id.get(label, -1))
        item.extra = extra
        if label is not None and label not in class_id:
          item.error = (decode.UNKNOWN_LABEL, f"line {line}: {label!r} is not a class")
        items.append(item)
      out[split] = items
    if not out:
      raise FileNotFoundError(
        f"no {self.ANNOTATION_KIND} in {manual_dir}\n" + self.MANUAL_DOWNLOAD_INSTRUCTIONS
      )
    return out

  def _class_names(self) -> list[str] | int:
    if self._manual_dir_hint:
      try:
        return self._read_names(self._manual_dir_hint)
      except FileNotFoundError:
        pass
    return NUM_CLASSES

  def _set_names(self, names: list[str]) -> None:
    feature = self.info.features["label"]
    if len(names) != feature.num_classes:
      raise ValueError(f"{self.name}: {len(names)} classes, expected {feature.num_classes}")
    feature.names = names

  def _item(self, manual_dir: str, video_id: str, label: int) -> video.VideoItem:
    cfg = self.builder_config
    path, is_dir = locate(
      manual_dir, video_id, source=cfg.source, video_dirs=self.VIDEO_DIRS,
      frame_dirs=self.FRAME_DIRS,
    )  # fmt: skip
    item = video.VideoItem(
      video_id=video_id,
      label=label,
      path=path,
      is_frame_dir=is_dir,
      frame_dir_fps=cfg.frames_fps,
    )
    if path is None:
      item.path = video_id
      item.error = (decode.MISSING, f"no video file or frame folder for id {video_id}")
    return item


class SomethingSomethingV2(_SomethingBase):
  """Something-Something V2 from the official JSON annotations and webm videos or frames."""

  name = "something_something_v2"
  BUILDER_CONFIGS: ClassVar[list[SomethingConfig]] = [
    SomethingConfig(name="default", description="Short side 256, native 12 fps."),
    SomethingConfig(name="native", description="Native size (240p), 12 fps.", short_side=None),
  ]
  DEFAULT_CONFIG_NAME = "default"
  LABEL_FILES = tuple(
    os.path.join(d, "something-something-v2-labels.json") for d in ("", "labels", "annotations")
  )
  ANNOTATION_FILES: ClassVar[dict[str, tuple[str, ...]]] = {
    split: tuple(
      os.path.join(d, f"something-something-v2-{name}.json") for d in ("", "labels", "annotations")
    )
    for split, name in (("train", "train"), ("validation", "validation"), ("test", "test"))
  }
  VIDEO_DIRS = ("", "20bn-something-something-v2", "videos")
  FRAME_DIRS = ("frames", "rawframes", "20bn-something-something-v2-frames", "")
  ANNOTATION_KIND = "SSv2 annotation JSON"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put into the manual folder (`--manual_dir`) the official 20BN/Qualcomm files:
  * something-something-v2-labels.json and something-something-v2-{train,validation,test}.json
    (at the top or under labels/ or annotations/); a split whose JSON is absent is not built;
  * the videos as 20bn-something-something-v2/{id}.webm (or {id}.webm, videos/{id}.webm), or
    extracted frames as frames/{id}/{n}.jpg (or rawframes/{id}/, {id}/).
  Class ids are those of the labels JSON; an entry's class is its template without '[' ']'.
  """

  def _extra_features(self) -> dict[str, Any]:
    return dict(
      template=tfds.features.Text(doc="the label template, e.g. 'Putting [something] on ...'"),
      placeholders=tfds.features.Sequence(tfds.features.Text()),
    )

  def _entries(
    self, path: str, split: str
  ) -> Iterator[tuple[str, str | None, int, dict[str, Any]]]:
    for e in annotations.read_ssv2_json(path):
      extra = dict(template=e.template or "", placeholders=list(e.placeholders))
      yield e.video_id, e.class_name, e.line, extra


class SomethingSomethingV1(_SomethingBase):
  """Something-Something V1 from its `;`-separated CSVs and frame folders `{id}/{:05d}.jpg`."""

  name = "something_something_v1"
  BUILDER_CONFIGS: ClassVar[list[SomethingConfig]] = [
    SomethingConfig(name="default", description="Short side 256, 12 fps.", frames_fps=SSV1_FPS),
    SomethingConfig(
      name="native",
      description="Native size (100p), 12 fps.",
      short_side=None,
      frames_fps=SSV1_FPS,
    ),
  ]
  DEFAULT_CONFIG_NAME = "default"
  LABEL_FILES = tuple(
    os.path.join(d, "something-something-v1-labels.csv") for d in ("", "labels", "annotations")
  )
  ANNOTATION_FILES: ClassVar[dict[str, tuple[str, ...]]] = {
    split: tuple(
      os.path.join(d, f"something-something-v1-{name}.csv") for d in ("", "labels", "annotations")
    )
    for split, name in (("train", "train"), ("validation", "validation"), ("test", "test"))
  }
  VIDEO_DIRS = ()
  FRAME_DIRS = ("20bn-something-something-v1", "frames", "rawframes", "")
  ANNOTATION_KIND = "SSv1 annotation CSV"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put into the manual folder (`--manual_dir`) the official 20BN/Qualcomm files:
  * something-something-v1-labels.csv (one class per line) and
    something-something-v1-{train,validation,test}.csv (`id;label`, test `id`), at the top or
    under labels/ or annotations/;
  * the frames as 20bn-something-something-v1/{id}/{:05d}.jpg (or frames/{id}/, {id}/).
  Class ids follow the line order of the labels file (alphabetical, as the original code).
  """

  def _entries(
    self, path: str, split: str
  ) -> Iterator[tuple[str, str | None, int, dict[str, Any]]]:
    for video_id, label, line in annotations.read_ssv1_csv(path, labelled=split != "test"):
      yield video_id, label, line, {}
