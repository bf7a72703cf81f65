"""Decode time-out, worker failures, rotation; bugs stop a build (they are not bad data)."""

import io
import json
import os
import pathlib
import threading
import time
from typing import ClassVar

import av
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from dsanet_jax.data import builders, decode
from dsanet_jax.data.builders import base, labelled_videos, video


def _hanging_frame_dir(root: pathlib.Path) -> pathlib.Path:
  """A frame folder whose first frame is a FIFO nobody writes: reading it blocks for ever."""
  d = root / "hangs"
  d.mkdir()
  os.mkfifo(d / "00001.jpg")
  return d


def test_pool_kills_a_hanging_reader_and_goes_on(realclips, tmp_path):
  frames = str(realclips / "ssv2/frames/2")
  tasks = [
    decode.DecodeTask(frames, is_frame_dir=True, short_side=16),
    decode.DecodeTask(str(_hanging_frame_dir(tmp_path)), is_frame_dir=True, short_side=16),
    decode.DecodeTask(frames, is_frame_dir=True, short_side=16),
  ]
  start = time.monotonic()
  with decode.DecodePool(2, timeout=2.0) as pool:
    results = list(pool.imap(tasks))
  assert time.monotonic() - start < 30
  assert [type(r).__name__ for r in results] == ["EncodedVideo", "DecodeError", "EncodedVideo"]
  assert results[1].reason == decode.TIMEOUT and "hangs" in results[1].detail
  assert results[0].num_frames == results[2].num_frames == 48


def test_build_records_a_hanging_video_as_timeout(realclips, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  os.symlink(realclips / "ssv2/webm_derived/3201.webm", manual / "ok.webm")
  _hanging_frame_dir(manual)
  (manual / "names.txt").write_text("x\n")
  (manual / "list.txt").write_text("ok.webm x\nhangs x\n")
  cfg = labelled_videos.LabelledVideosConfig(
    name="t", class_names_file="names.txt", split_files={"train": "list.txt"}, short_side=16
  )
  b = builders.ensure_prepared(
    "labelled_videos", str(tmp_path / "data"), manual_dir=str(manual), config=cfg,
    num_workers=2, decode_timeout=2.0,
  )  # fmt: skip
  assert b.info.splits["train"].num_examples == 1
  skipped = json.loads((pathlib.Path(b.data_dir) / "skipped_train.json").read_text())
  assert [(s["video_id"], s["reason"]) for s in skipped] == [("hangs", "timeout")]


def test_a_bug_in_a_decoding_process_is_raised_not_recorded(realclips):
  with decode.DecodePool(1) as pool, pytest.raises(decode.WorkerError, match="TypeError"):
    pool.run(decode.DecodeTask(str(realclips / "ssv2/frames/2"), True, short_side="16"))


def _raise_type_error() -> tuple[np.ndarray, float]:
  raise TypeError("a bug in our encode path")


def _render_ok() -> tuple[np.ndarray, float]:
  return np.zeros((2, 8, 8, 3), np.uint8), 12.0


class _BuggyBuilder(base.VideoDatasetBuilder, skip_registration=True):
  """One good video and one whose encode step has a bug."""

  name = "buggy_builder"
  BUILDER_CONFIGS: ClassVar[list[video.VideoBuilderConfig]] = [
    video.VideoBuilderConfig(name="default", short_side=None)
  ]

  def _class_names(self) -> list[str]:
    return ["x"]

  def _list_items(self, manual_dir: str | None) -> dict[str, list[video.VideoItem]]:
    return {
      "train": [
        video.VideoItem("good", 0, render=_render_ok),
        video.VideoItem("buggy", 0, render=_raise_type_error),
      ]
    }


def test_a_bug_in_the_encode_step_fails_the_build(tmp_path):
  """Before the fix, the TypeError was recorded as a 'corrupt' video and the build went on."""
  b = _BuggyBuilder(data_dir=str(tmp_path))
  with pytest.raises(TypeError, match="a bug in our encode path"):
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def _rotated_clip(path: pathlib.Path, degrees: int) -> pathlib.Path:
  """A 32x16 (W x H) clip, left quarter white, tagged to be shown rotated by `degrees` (CCW)."""
  with av.open(str(path), "w") as c:
    s = c.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = 32, 16, "yuv420p"
    s.set_display_rotation(degrees)
    img = np.zeros((16, 32, 3), np.uint8)
    img[:, :8] = 255
    for _ in range(5):
      for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)
  return path


@pytest.mark.parametrize(
  "degrees,shape,white",
  [
    (0, (16, 32), (slice(None), slice(0, 8))),  # left quarter
    (90, (32, 16), (slice(24, 32), slice(None))),  # CCW quarter turn: left -> bottom
    (-90, (32, 16), (slice(0, 8), slice(None))),  # CW (phone portrait): left -> top
  ],
)
def test_rotation_tag_is_applied(tmp_path, degrees, shape, white):
  path = _rotated_clip(tmp_path / f"rot{degrees}.mp4", degrees)
  with av.open(str(path)) as c:
    assert next(c.decode(video=0)).rotation == degrees
  video = decode.read_video(path, short_side=None)
  assert (video.height, video.width) == shape
  img = np.asarray(Image.open(io.BytesIO(video.frames[0])).convert("L"), np.float32)
  mask = np.zeros(shape, bool)
  mask[white] = True
  assert img[mask].mean() > 200 and img[~mask].mean() < 50
  small = decode.read_video(path, short_side=8)  # the short side of the upright frame
  assert (small.height, small.width) == ((8, 16) if shape == (16, 32) else (16, 8))


def test_progress_lines_carry_rate_and_eta():
  out = io.StringIO()  # not a terminal: plain lines
  progress = base.Progress("k400 train", 4, stream=out, interval=0.0)
  for skipped in (False, True):
    progress.update(skipped)
  progress.close()
  lines = out.getvalue().splitlines()
  assert len(lines) == 2 and lines[1].startswith("k400 train: 2/4 videos (50.0%), ")
  assert "videos/s, skipped 1, ETA 0m00s" in lines[1]


def test_a_decoding_process_that_dies_is_recorded_as_crashed(tmp_path):
  hang = decode.DecodeTask(str(_hanging_frame_dir(tmp_path)), is_frame_dir=True)
  with decode.DecodePool(1, timeout=60.0) as pool:
    results = pool.imap([hang])
    worker = pool._workers[0]
    killer = threading.Timer(1.0, worker.process.kill)  # dies while on the task
    killer.start()
    (result,) = list(results)
    killer.join()
  assert isinstance(result, decode.DecodeError) and result.reason == decode.CRASHED
  assert "exit code -9" in result.detail
