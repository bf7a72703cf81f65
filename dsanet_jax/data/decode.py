"""Video and frame-folder decoding for the dataset builders (PyAV, no ffmpeg binary).

Every reader returns an `EncodedVideo`: one JPEG (bytes) per frame, upright (a display matrix /
rotation tag is applied), resized so the short side is `short_side` (None keeps the native size),
with the frame rate. Anything wrong with a file raises `DecodeError` whose `reason` is one of
`REASONS`; the builders record it and skip the video. Any other exception is a bug, not bad data.

`DecodePool` runs `DecodeTask`s in worker processes with a per-video time-out (the builds).

PyAV pitfall (spec dependencies.md §7): converting with `frame.to_ndarray(format='rgb24')` inside a
threaded decode builds a multithreaded swscale context per frame and crawls; we convert (and resize)
with one `VideoReformatter` per video and `threads=1`.
"""

import contextlib
import dataclasses
import io
import multiprocessing
import multiprocessing.context
import os
import re
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing import connection as mp_connection
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

# Why a video was skipped. The builders add 'unknown_label' and 'duplicate_id'.
MISSING = "missing"  # the file or frame folder does not exist
CORRUPT = "corrupt"  # the container cannot be opened/parsed, or decoding fails near the end
TRUNCATED = "truncated"  # fewer frames than the container declares, or decoding fails midway
ZERO_FRAMES = "zero_frames"  # a video stream declaring no frames, and none decoded; empty folder
UNDECODABLE = "undecodable"  # no video stream, or its codec cannot be opened / decoded
UNKNOWN_LABEL = "unknown_label"  # the annotation's label is not in the class list
DUPLICATE_ID = "duplicate_id"  # the same video id listed twice in one split
TIMEOUT = "timeout"  # decoding took longer than the build's per-video time-out (process killed)
CRASHED = "crashed"  # the decoding process died (e.g. a segfault in FFmpeg) on this video
REASONS = (
  MISSING, CORRUPT, TRUNCATED, ZERO_FRAMES, UNDECODABLE, UNKNOWN_LABEL, DUPLICATE_ID, TIMEOUT,
  CRASHED,
)  # fmt: skip

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# A decode is 'truncated' when it yields fewer than this fraction of the declared frames (minus 1).
TRUNCATION_TOLERANCE = 0.9


class DecodeError(Exception):
  """A video that cannot be used; `reason` is one of `REASONS`, `detail` says more."""

  def __init__(self, reason: str, detail: str) -> None:
    assert reason in REASONS, reason
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail

  def __reduce__(self) -> tuple:  # pickled between decoding processes
    return DecodeError, (self.reason, self.detail)


@dataclasses.dataclass(frozen=True)
class EncodedVideo:
  """A decoded video: `frames` is one JPEG per frame ([T] bytes), all `height` x `width`."""

  frames: list[bytes]
  fps: float
  height: int
  width: int

  @property
  def num_frames(self) -> int:
    return len(self.frames)


def resized_shape(height: int, width: int, short_side: int | None) -> tuple[int, int]:
  """(height, width) scaled so that min(height, width) == short_side (None: unchanged)."""
  if short_side is None or short_side <= 0:
    return height, width
  if height <= width:
    return short_side, max(1, round(width * short_side / height))
  return max(1, round(height * short_side / width)), short_side


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
  """uint8 [H, W, 3] RGB -> JPEG bytes (PIL releases the GIL while encoding)."""
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def encode_frames(
  frames: np.ndarray | Sequence[np.ndarray],
  fps: float,
  *,
  short_side: int | None = 256,
  jpeg_quality: int = 90,
) -> EncodedVideo:
  """uint8 [T, H, W, 3] RGB frames -> `EncodedVideo` resized to `short_side` (bilinear)."""
  frames = list(frames)
  if not frames:
    raise DecodeError(ZERO_FRAMES, "no frames")
  h, w = frames[0].shape[:2]
  nh, nw = resized_shape(h, w, short_side)
  out = []
  for f in frames:
    if f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3:
      raise ValueError(f"frames must be uint8 [H, W, 3], got {f.dtype} {f.shape}")
    if (nh, nw) != f.shape[:2]:
      f = np.asarray(Image.fromarray(f).resize((nw, nh), Image.BILINEAR))
    out.append(encode_jpeg(f, jpeg_quality))
  return EncodedVideo(out, float(fps), nh, nw)


def resample_indices(times: Sequence[float], native_fps: float, target_fps: float) -> list[int]:
  """Indices of the decoded frames shown at t = k / target_fps (latest frame at or before t)."""
  if not times:
    return []
  t0, t_end = times[0], times[-1] + 1.0 / native_fps
  num_out = max(1, int(np.floor((t_end - t0) * target_fps + 1e-6)))
  out_t = t0 + np.arange(num_out) / target_fps
  idx = np.searchsorted(np.asarray(times), out_t + 1e-6, side="right") - 1
  return np.clip(idx, 0, len(times) - 1).tolist()


def read_video(
  path: str | os.PathLike,
  *,
  short_side: int | None = 256,
  target_fps: float | None = None,
  jpeg_quality: int = 90,
  threads: int = 0,
  window: tuple[float, float] | None = None,
) -> EncodedVideo:
  """Decodes every frame of a video file with PyAV into resized, upright JPEG frames.

  Args:
    path: any container/codec FFmpeg (as bundled in the PyAV wheel) reads: mp4/h264, webm/VP9,
      mkv (no frame count needed), avi/mpeg4/msmpeg4, ...
    short_side: output short side in pixels (None: native size).
    target_fps: None keeps every frame at the native rate; otherwise frames are dropped or
      repeated to this rate (by presentation time).
    jpeg_quality: JPEG quality of the stored frames.
    threads: decoder threads; 0 = FFmpeg's choice (all cores). Builds that decode several videos
      at once use 1 per video.
    window: (start, end) seconds of the annotated clip in its source video (Kinetics). A file at
      least `end` seconds long (and longer than the clip by over a second) is taken to be the
      whole source video and only [start, end) is kept (after a seek); a shorter file is taken
      to be the clip already cut, and kept whole.

  A display matrix (the rotation tag of phone videos) is applied: frames are stored upright,
  [H, W] as displayed.

  Raises:
    DecodeError: missing, corrupt, truncated, zero-frame or undecodable video.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DecodeError(MISSING, f"no such file: {path}")
  try:
    container = av.open(path, metadata_errors="ignore")
  except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
    raise DecodeError(CORRUPT, f"cannot open {path}: {type(e).__name__}: {e}") from e
  with container:
    stream = _video_stream(container, path, threads)
    declared = _declared_frames(stream)
    cut = _cut_window(container, stream, window)
    if cut is not None:
      declared = int((cut[1] - cut[0]) * float(stream.average_rate or 0))
      t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
      container.seek(int((cut[0] + t0) / stream.time_base), stream=stream, backward=True)
    decoded = _Decoded(short_side, jpeg_quality)
    try:
      for frame in _frames_in(container.decode(stream), stream, cut):
        decoded.add(frame)
    except av.error.FFmpegError as e:
      raise _decode_failure(path, stream, decoded.count, declared, e) from e
    if declared and decoded.count < TRUNCATION_TOLERANCE * declared - 1:
      raise DecodeError(
        TRUNCATED, f"{path}: decoded {decoded.count} frames, the container declares {declared}"
      )
    if not decoded.count:
      raise DecodeError(ZERO_FRAMES, f"the video stream of {path} has no frames")
    fps = _native_fps(stream, decoded.times)
  jpegs, times = decoded.jpegs, decoded.times
  if target_fps:
    if any(np.isnan(times)):
      times = [i / fps for i in range(len(jpegs))]
    jpegs = [jpegs[i] for i in resample_indices(times, fps, float(target_fps))]
    fps = float(target_fps)
  return EncodedVideo(jpegs, fps, decoded.size[0], decoded.size[1])


class _Decoded:
  """The frames of one video as they decode: resized, rotated upright, JPEG-encoded."""

  def __init__(self, short_side: int | None, jpeg_quality: int) -> None:
    self.short_side = short_side
    self.jpeg_quality = jpeg_quality
    self.reformatter = VideoReformatter()
    self.jpegs: list[bytes] = []
    self.times: list[float] = []
    self.size: tuple[int, int] | None = None  # stored (height, width), upright
    self.quarter_turns = 0  # counter-clockwise quarter turns that make the frame upright

  @property
  def count(self) -> int:
    return len(self.jpegs)

  def add(self, frame: av.VideoFrame) -> None:
    if self.size is None:
      self.quarter_turns = round(frame.rotation / 90) % 4
      h, w = frame.height, frame.width
      if self.quarter_turns % 2:
        h, w = w, h
      self.size = resized_shape(h, w, self.short_side)
    h, w = self.size if self.quarter_turns % 2 == 0 else self.size[::-1]
    rgb = self.reformatter.reformat(
      frame, width=w, height=h, format="rgb24", interpolation="BILINEAR", threads=1
    ).to_ndarray()
    if self.quarter_turns:
      rgb = np.ascontiguousarray(np.rot90(rgb, self.quarter_turns))
    self.jpegs.append(encode_jpeg(rgb, self.jpeg_quality))
    self.times.append(float(frame.time) if frame.time is not None else float("nan"))


def _video_stream(container: av.container.InputContainer, path: str, threads: int) -> Any:
  """The first video stream, set up for decoding with `threads` threads."""
  if not container.streams.video:
    raise DecodeError(UNDECODABLE, f"no video stream in {path}")
  stream = container.streams.video[0]
  if stream.codec_context is None:
    raise DecodeError(UNDECODABLE, f"no decoder for the video codec of {path}")
  if threads != 1:
    stream.thread_type = "AUTO"
  stream.codec_context.thread_count = threads
  return stream


def _declared_frames(stream: Any) -> int:
  """The frame count the container declares (from its duration if it gives no count); 0: none."""
  declared = int(stream.frames or 0)
  if not declared and stream.duration and stream.average_rate:
    declared = int(float(stream.duration * stream.time_base) * float(stream.average_rate))
  return declared


def _frames_in(
  frames: Iterator[av.VideoFrame], stream: Any, cut: tuple[float, float] | None
) -> Iterator[av.VideoFrame]:
  """The decoded frames inside the cut window (all of them without a cut)."""
  if cut is None:
    yield from frames
    return
  t0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
  for frame in frames:
    if frame.time is not None:
      if frame.time - t0 < cut[0] - 1e-6:
        continue
      if frame.time - t0 >= cut[1] - 1e-6:
        return
    yield frame


def _decode_failure(
  path: str, stream: Any, count: int, declared: int, error: Exception
) -> DecodeError:
  """The DecodeError for an FFmpeg error after `count` decoded frames."""
  codec = getattr(stream.codec_context, "name", None) or "unknown"
  if not count:
    return DecodeError(UNDECODABLE, f"cannot decode {path} (codec {codec}): {error}")
  if not declared or count < TRUNCATION_TOLERANCE * declared - 1:
    return DecodeError(
      TRUNCATED, f"{path}: decoding stopped after {count} of {declared or '?'} frames: {error}"
    )
  return DecodeError(CORRUPT, f"decoding {path} failed after {count} frames: {error}")


def _cut_window(
  container: av.container.InputContainer, stream: Any, window: tuple[float, float] | None
) -> tuple[float, float] | None:
  """The (start, end) to cut from this file, or None to keep it whole (see `read_video`)."""
  if window is None:
    return None
  start, end = float(window[0]), float(window[1])
  if stream.duration is not None:
    duration = float(stream.duration * stream.time_base)
  elif container.duration is not None:
    duration = container.duration / av.time_base
  else:
    return None
  if duration >= end - 0.5 and duration > end - start + 1.0:
    return start, end
  return None


def _native_fps(stream: Any, times: Sequence[float]) -> float:
  """The stream's frame rate; from frame timestamps if the container does not say."""
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate and float(rate) > 0:
      return float(rate)
  t = np.asarray(times, np.float64)
  if len(t) > 1 and np.all(np.isfinite(t)) and t[-1] > t[0]:
    return float((len(t) - 1) / (t[-1] - t[0]))
  return 30.0


def _natural_key(name: str) -> list:
  return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def list_frame_files(frame_dir: str | os.PathLike) -> list[str]:
  """Image files of a frame folder in natural order (`1.jpg` < `2.jpg` < `10.jpg`)."""
  names = [n for n in os.listdir(frame_dir) if n.lower().endswith(IMAGE_EXTENSIONS)]
  return [os.path.join(frame_dir, n) for n in sorted(names, key=_natural_key)]


def read_frame_dir(
  frame_dir: str | os.PathLike,
  *,
  fps: float,
  short_side: int | None = 256,
  target_fps: float | None = None,
  jpeg_quality: int = 90,
) -> EncodedVideo:
  """Reads a folder of extracted frames (`00001.jpg`, ... in natural order) shot at `fps`.

  Every frame is fully decoded (a broken JPEG is caught here, not in the training pipeline).
  JPEG frames already at the requested size are stored as they are (no re-encoding).
  `target_fps` resamples as in `read_video`.

  Raises:
    DecodeError: missing folder, no frames, or an undecodable frame. Frames of another size than
      the first are resized to the size of the first.
  """
  frame_dir = os.fspath(frame_dir)
  if not os.path.isdir(frame_dir):
    raise DecodeError(MISSING, f"no such frame folder: {frame_dir}")
  files = list_frame_files(frame_dir)
  if not files:
    raise DecodeError(ZERO_FRAMES, f"no image files in {frame_dir}")
  out: list[bytes] = []
  size = None
  for f in files:
    with open(f, "rb") as fh:
      data = fh.read()
    try:
      with Image.open(io.BytesIO(data)) as img:
        fmt = img.format
        img = img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
      raise DecodeError(CORRUPT, f"cannot decode frame {f}: {e}") from e
    if size is None:
      size = resized_shape(img.height, img.width, short_side)
    if fmt == "JPEG" and (img.height, img.width) == size:
      out.append(data)
    else:
      if (img.height, img.width) != size:
        img = img.resize((size[1], size[0]), Image.BILINEAR)
      out.append(encode_jpeg(np.asarray(img), jpeg_quality))
  if target_fps:
    idx = resample_indices([i / fps for i in range(len(out))], fps, target_fps)
    return EncodedVideo([out[i] for i in idx], float(target_fps), size[0], size[1])
  return EncodedVideo(out, float(fps), size[0], size[1])


# ----------------------------------------------------------------------- decoding in processes
@dataclasses.dataclass(frozen=True)
class DecodeTask:
  """One video file or frame folder to decode, with the output options (picklable)."""

  path: str
  is_frame_dir: bool = False
  frame_dir_fps: float = 30.0
  window: tuple[float, float] | None = None  # see read_video
  short_side: int | None = 256
  target_fps: float | None = None
  jpeg_quality: int = 90


def run_task(task: DecodeTask) -> EncodedVideo:
  """`read_frame_dir` or `read_video` (one decoder thread) as the task says."""
  if task.is_frame_dir:
    return read_frame_dir(
      task.path, fps=task.frame_dir_fps, short_side=task.short_side,
      target_fps=task.target_fps, jpeg_quality=task.jpeg_quality,
    )  # fmt: skip
  return read_video(
    task.path, short_side=task.short_side, target_fps=task.target_fps,
    jpeg_quality=task.jpeg_quality, threads=1, window=task.window,
  )  # fmt: skip


class WorkerError(RuntimeError):
  """An exception that is not a `DecodeError` in a decoding process (a bug, not bad data)."""


@dataclasses.dataclass(frozen=True)
class _Failure:
  traceback: str


def _worker_main(conn: mp_connection.Connection) -> None:
  """A decoding process: (index, DecodeTask) in, (index, EncodedVideo | DecodeError | _Failure)
  out, until None or the pipe closes."""
  while True:
    try:
      msg = conn.recv()
    except EOFError:
      return
    if msg is None:
      return
    index, task = msg
    try:
      result = run_task(task)
    except DecodeError as e:
      result = e
    except Exception:  # noqa: BLE001 -- sent to the parent, which raises it as a WorkerError
      result = _Failure(traceback.format_exc())
    conn.send((index, result))


class _Worker:
  """One decoding process and the task it is on."""

  def __init__(self, ctx: multiprocessing.context.BaseContext) -> None:
    self.conn, child = ctx.Pipe()
    self.process = ctx.Process(target=_worker_main, args=(child,), daemon=True)
    self.process.start()
    child.close()
    self.job: tuple[int, DecodeTask, float] | None = None  # index, task, start time

  def submit(self, index: int, task: DecodeTask) -> None:
    self.conn.send((index, task))
    self.job = (index, task, time.monotonic())

  def stop(self, kill: bool = False) -> None:
    if not kill:
      with contextlib.suppress(OSError):
        self.conn.send(None)
      self.process.join(5)
    if self.process.is_alive():
      self.process.kill()
      self.process.join()
    self.conn.close()


class DecodePool:
  """Runs `run_task` in `num_workers` processes, results in input order (no GIL contention).

  A task that runs longer than `timeout` seconds has its process killed (a file that hangs the
  decoder); its result is `DecodeError(TIMEOUT)` and a fresh process takes its place. A process
  that dies on a task gives `DecodeError(CRASHED)`. Any other exception in a process is raised
  here as a `WorkerError` carrying the process's traceback. Processes come from a fork server
  that has only this module imported (no TensorFlow state is copied). Use as a context manager.
  """

  def __init__(self, num_workers: int, timeout: float | None = None) -> None:
    if num_workers < 1:
      raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    self.timeout = timeout
    self._ctx = multiprocessing.get_context("forkserver")
    self._ctx.set_forkserver_preload([__name__])
    self._workers = [_Worker(self._ctx) for _ in range(num_workers)]

  def __enter__(self) -> "DecodePool":
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()

  def close(self) -> None:
    for w in self._workers:
      w.stop(kill=w.job is not None)
    self._workers = []

  def run(self, task: DecodeTask) -> EncodedVideo | DecodeError:
    """One task, waited for."""
    return next(self.imap([task]))

  def imap(self, tasks: Iterable[DecodeTask]) -> Iterator[EncodedVideo | DecodeError]:
    """The result of every task, in order; at most 4 results per process wait to be yielded."""
    todo = enumerate(tasks)
    done: dict[int, EncodedVideo | DecodeError] = {}
    next_out, more = 0, True
    while True:
      for w in self._workers:
        if w.job is None and more and len(done) < 4 * len(self._workers):
          item = next(todo, None)
          if item is None:
            more = False
          else:
            w.submit(*item)
      while next_out in done:
        yield done.pop(next_out)
        next_out += 1
      if not more and all(w.job is None for w in self._workers):
        return
      self._collect(done)

  def _collect(self, done: dict[int, EncodedVideo | DecodeError]) -> None:
    """Waits for results (or the next time-out) and puts them into `done`."""
    busy = {w.conn: w for w in self._workers if w.job is not None}
    if not busy:
      return
    wait_s = None
    if self.timeout is not None:
      started = min(w.job[2] for w in busy.values())
      wait_s = max(0.0, started + self.timeout - time.monotonic())
    for conn in mp_connection.wait(list(busy), wait_s):
      w = busy[conn]
      try:
        index, result = conn.recv()
      except EOFError:
        index, task, _ = w.job
        w.process.join(5)
        done[index] = DecodeError(
          CRASHED, f"{task.path}: the decoding process died (exit code {w.process.exitcode})"
        )
        self._replace(w)
        continue
      if isinstance(result, _Failure):
        raise WorkerError(f"decoding {w.job[1].path} failed with a bug:\n{result.traceback}")
      done[index] = result
      w.job = None
    now = time.monotonic()
    for w in list(self._workers):
      if w.job is not None and self.timeout is not None and now - w.job[2] >= self.timeout:
        index, task, _ = w.job
        done[index] = DecodeError(
          TIMEOUT, f"{task.path}: no result after {self.timeout:g} s; decoding process killed"
        )
        self._replace(w)

  def _replace(self, worker: _Worker) -> None:
    worker.stop(kill=True)
    self._workers[self._workers.index(worker)] = _Worker(self._ctx)
