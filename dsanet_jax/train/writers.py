"""Metric writers (TensorBoard + JSON lines, process 0 only), on clu's `MetricWriter`.

`WORKDIR/metrics.jsonl` gets one JSON object per `write_scalars` call:
`{"step": s, "time": t, "train/loss": ...}`. A resumed run truncates the records after its start
step (they are replayed), so that every step appears once.

clu's writers import TensorFlow (its summary API), so this module is imported by the trainer only;
`train.logging` (console, log file) and everything inference needs stay free of TensorFlow.
"""

import json
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging
from clu import metric_writers
from clu.metric_writers import interface
from etils import epath

from dsanet_jax.common import paths
from dsanet_jax.train.logging import WholeObjectText


def _to_py(v: Any) -> Any:
  v = np.asarray(v)
  return v.item() if v.ndim == 0 else v.tolist()


class JsonlWriter(interface.MetricWriter):
  """Appends scalars (and texts, hparams) as JSON lines to one file.

  Args:
    path: the file (created if missing).
    resume_step: if given, records of later steps already in the file are dropped first (a
      resumed run replays them).
  """

  def __init__(self, path: str, resume_step: int | None = None) -> None:
    self._path = paths.resolve(path)
    self._path.parent.mkdir(parents=True, exist_ok=True)
    if resume_step is not None and self._path.exists():
      _truncate_after(str(self._path), resume_step)
    # Local: appended and flushed line by line (a killed run keeps its records). Object storage
    # has no append: the whole object is rewritten at most every 10 s, and at flush and close.
    self._obj = WholeObjectText(self._path) if paths.is_url(self._path) else None
    self._f = None if self._obj else self._path.open("a")
    self.closed = False

  def _write(self, step: int, kind: str, values: Mapping[str, Any]) -> None:
    rec = {"step": int(step), "time": round(time.time(), 3)}
    if kind != "scalars":
      rec["kind"] = kind
    rec.update({k: _to_py(v) if kind != "texts" else str(v) for k, v in values.items()})
    self._append(json.dumps(rec) + "\n")

  def _append(self, line: str) -> None:
    if self._obj is not None:
      self._obj.append(line)
    else:
      self._f.write(line)
      self._f.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._write(step, "scalars", scalars)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    self._write(step, "texts", texts)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self._append(json.dumps({"kind": "hparams", **{k: str(v) for k, v in hparams.items()}}) + "\n")

  def write_summaries(self, step: int, values: Mapping[str, Any], metadata: Any = None) -> None:
    pass

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    pass

  def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
    pass

  def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
    pass

  def write_histograms(self, step: int, arrays: Mapping[str, Any], num_buckets: Any = None) -> None:
    pass

  def flush(self) -> None:
    if self._obj is not None:
      self._obj.flush()
    else:
      self._f.flush()

  def close(self) -> None:
    if not self.closed:
      self.flush()
      if self._f is not None:
        self._f.close()
      self.closed = True


def _truncate_after(path: str, step: int) -> None:
  """Drops the records of `path` whose step is after `step` (rewritten atomically)."""
  p = paths.resolve(path)
  lines = [s for s in p.read_text().splitlines(keepends=True) if s.strip()]
  keep = [s for s in lines if json.loads(s).get("step", 0) <= step]
  if len(keep) == len(lines):
    return
  paths.write_whole(p, "".join(keep))
  logging.info(
    "%s: dropped %d records after step %d (replayed by this resumed run)",
    path,
    len(lines) - len(keep),
    step,
  )


def create_writer(
  workdir: str, *, is_main: bool, resume_step: int | None = None
) -> interface.MetricWriter:
  """On process 0: TensorBoard events and `metrics.jsonl` (truncated after `resume_step`).

  Nothing goes to the console: the trainer prints one line per log step itself.
  """
  if not is_main:
    return metric_writers.MultiWriter([])
  root = paths.resolve(workdir)
  tensorboard = (
    StagedSummaryWriter(root / "tensorboard")
    if paths.is_url(root)
    else metric_writers.SummaryWriter(str(root / "tensorboard"))
  )
  return metric_writers.MultiWriter(
    [tensorboard, JsonlWriter(str(root / "metrics.jsonl"), resume_step)]
  )


class StagedSummaryWriter(metric_writers.SummaryWriter):
  """TensorBoard events for a workdir on object storage, written locally and uploaded.

  clu's SummaryWriter writes through TensorFlow's own file system, whose `gs://` client is a
  second GCS client with no endpoint setting. Here the events go to a local temporary folder and
  each event file is uploaded whole (through epath, like every other file of the run) to `target` at
  most every `interval` seconds after a write, at `flush` and at `close`; the temporary folder is
  removed at close. A killed run loses at most the last `interval` seconds of events.
  """

  def __init__(self, target: epath.Path, interval: float = 10.0) -> None:
    self._staging = tempfile.TemporaryDirectory(prefix="dsanet_tensorboard_")
    super().__init__(self._staging.name)
    self._target, self._interval = target, interval
    self._uploaded: dict[str, int] = {}  # event file name -> size uploaded
    self._written = time.monotonic()
    self._closed = False

  def _upload(self) -> None:
    super().flush()
    self._copy()

  def _copy(self) -> None:
    for f in sorted(epath.Path(self._staging.name).iterdir()):  # clu writes one flat folder
      size = f.stat().length
      if self._uploaded.get(f.name) != size:
        paths.write_whole(self._target / f.name, f.read_bytes())
        self._uploaded[f.name] = size
    self._written = time.monotonic()

  def _wrote(self) -> None:
    if time.monotonic() - self._written > self._interval:
      self._upload()

  def write_summaries(self, step: int, values: Mapping[str, Any], metadata: Any = None) -> None:
    super().write_summaries(step, values, metadata)
    self._wrote()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    super().write_scalars(step, scalars)
    self._wrote()

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    super().write_images(step, images)
    self._wrote()

  def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
    super().write_videos(step, videos)
    self._wrote()

  def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int) -> None:
    super().write_audios(step, audios, sample_rate=sample_rate)
    self._wrote()

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    super().write_texts(step, texts)
    self._wrote()

  def write_histograms(self, step: int, arrays: Mapping[str, Any], num_buckets: Any = None) -> None:
    super().write_histograms(step, arrays, num_buckets)
    self._wrote()

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    super().write_hparams(hparams)
    self._wrote()

  def flush(self) -> None:
    if not self._closed:
      self._upload()

  def close(self) -> None:
    if not self._closed:
      super().close()  # writes out the last events
      self._copy()
      self._staging.cleanup()
      self._closed = True
