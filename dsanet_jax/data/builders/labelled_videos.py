"""`labelled_videos`: any labelled video set from list files and a class-names file.

UCF101, HMDB51 or your own videos: one config per dataset/split set, made by `prepare.py`
(`--dataset=labelled_videos --config_name=ucf101_split1 --class_names=... --train_list=...`), or
in code:

  cfg = LabelledVideosConfig(name='ucf101_split1', class_names_file='ucfTrainTestlist/classInd.txt',
                             split_files={'train': 'ucfTrainTestlist/trainlist01.txt',
                                          'validation': 'ucfTrainTestlist/testlist01.txt'},
                             video_root='UCF-101', label_offset=1)
  LabelledVideos(config=cfg, data_dir=..., manual_dir=...).download_and_prepare(...)

Reading it later needs no config: `get_builder('labelled_videos/ucf101_split1', data_dir)`.
"""

import dataclasses
import os

from dsanet_jax.data import annotations, decode
from dsanet_jax.data.builders import base, video


@dataclasses.dataclass
class LabelledVideosConfig(video.VideoBuilderConfig):
  """A labelled video set; relative paths are relative to the manual folder.

  Attributes:
    class_names_file: class names in id order (formats: `annotations.read_class_names`).
    split_files: split name -> list file of `path label` lines (`annotations.read_video_list`).
    video_root: folder the list's paths are relative to (relative to the manual folder).
    label_offset: subtracted from integer labels (1 for UCF101's 1-based lists).
    frames_fps: fps recorded for entries that are frame folders instead of video files.
  """

  class_names_file: str = ""
  split_files: dict[str, str] = dataclasses.field(default_factory=dict)
  video_root: str = ""
  label_offset: int = 0
  frames_fps: float = 30.0


class LabelledVideos(base.VideoDatasetBuilder):
  """A labelled video set from list files (`path label`) and a class-names file."""

  name = "labelled_videos"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put into the manual folder (`--manual_dir`) the videos (any container PyAV reads, or folders
  of frames), a class-names file (one name per line, or `index name` lines as UCF101's
  classInd.txt) and one list file per split with `path label` lines (label: a class name or an
  integer index; a line with only a path takes the label from the parent folder's name).
  """

  def _config_path(self, rel: str, manual_dir: str | None) -> str:
    if os.path.isabs(rel) or not manual_dir:
      return rel
    return os.path.join(manual_dir, rel)

  def _class_names(self) -> list[str]:
    cfg = self.builder_config
    if not cfg.class_names_file:
      raise ValueError(f"{self.name}/{cfg.name}: the config needs class_names_file")
    return annotations.read_class_names(
      self._config_path(cfg.class_names_file, self._manual_dir_hint)
    )

  def _split_files(self, manual_dir: str | None) -> dict[str, str | None]:
    out = {}
    for split, rel in self.builder_config.split_files.items():
      path = self._config_path(rel, manual_dir)
      out[split] = path if os.path.isfile(path) else None
    return out

  def _other_files(self, manual_dir: str | None) -> dict[str, str | None]:
    path = self._config_path(self.builder_config.class_names_file, manual_dir)
    return {"class list": path if os.path.isfile(path) else None}

  def _list_items(self, manual_dir: str | None) -> dict[str, list[video.VideoItem]]:
    cfg = self.builder_config
    if not cfg.split_files:
      raise ValueError(f"{self.name}/{cfg.name}: the config needs split_files")
    names = self.info.features["label"].names
    root = self._config_path(cfg.video_root, manual_dir) if cfg.video_root else manual_dir
    return {
      split: self._items(self._config_path(path, manual_dir), names, root)
      for split, path in cfg.split_files.items()
    }

  def _items(self, list_file: str, names: list[str], root: str) -> list[video.VideoItem]:
    cfg = self.builder_config
    class_id = {n: i for i, n in enumerate(names)}
    items = []
    for rel, token, line in annotations.read_video_list(list_file):
      path = rel if os.path.isabs(rel) else os.path.join(root, rel)
      if token is None:
        token = os.path.basename(os.path.dirname(os.path.normpath(rel)))
      label, error = -1, None
      if token in class_id:
        label = class_id[token]
      elif token.lstrip("-").isdigit() and 0 <= int(token) - cfg.label_offset < len(names):
        label = int(token) - cfg.label_offset
      else:
        error = (decode.UNKNOWN_LABEL, f"{list_file}:{line}: {token!r} is not a class")
      items.append(
        video.VideoItem(
          video_id=rel,
          label=label,
          path=path,
          is_frame_dir=os.path.isdir(path),
          frame_dir_fps=cfg.frames_fps,
          error=error,
        )
      )
    return items
