"""Metric writers: TensorBoard (clu SummaryWriter) + JSON lines + absl logging; process 0 only.

`WORKDIR/metrics.jsonl` gets one JSON object per `write_scalars` call:
`{"step": s, "time": t, "train/loss": ...}`.
"""

import json
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from clu import metric_writers
from clu.metric_writers import interface


def _to_py(v: Any) -> Any:
  v = np.asarray(v)
  return v.item() if v.ndim == 0 else v.tolist()


class JsonlWriter(interface.MetricWriter):
  """Appends scalars (and texts, hparams) as JSON lines to one file."""

  def __init__(self, path: str):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    self._f = open(path, "a")  # noqa: SIM115 (closed in close())

  def _write(self, step: int, kind: str, values: Mapping[str, Any]) -> None:
    rec = {"step": int(step), "time": round(time.time(), 3)}
    if kind != "scalars":
      rec["kind"] = kind
    rec.update({k: _to_py(v) if kind != "texts" else str(v) for k, v in values.items()})
    self._f.write(json.dumps(rec) + "\n")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._write(step, "scalars", scalars)

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    self._write(step, "texts", texts)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self._f.write(json.dumps({"kind": "hparams", **{k: str(v) for k, v in hparams.items()}}) + "\n")

  def write_summaries(self, step, values, metadata=None) -> None:
    pass

  def write_images(self, step, images) -> None:
    pass

  def write_videos(self, step, videos) -> None:
    pass

  def write_audios(self, step, audios, *, sample_rate) -> None:
    pass

  def write_histograms(self, step, arrays, num_buckets=None) -> None:
    pass

  def flush(self) -> None:
    self._f.flush()

  def close(self) -> None:
    if not self._f.closed:
      self._f.close()


def create_writer(workdir: str, *, is_main: bool) -> interface.MetricWriter:
  """absl logging everywhere; on process 0 also TensorBoard events and `metrics.jsonl`."""
  if not is_main:
    return metric_writers.MultiWriter([])
  return metric_writers.MultiWriter(
    [
      metric_writers.LoggingWriter(),
      metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard")),
      JsonlWriter(os.path.join(workdir, "metrics.jsonl")),
    ]
  )


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads back a `metrics.jsonl` (for tests and plots)."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
