"""The Beam build (DirectRunner, 2 worker processes) and the plain build make the same dataset."""

import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions

from dsanet_jax.data import builders
from dsanet_jax.data.builders import labelled_videos, video

REPO = pathlib.Path(__file__).resolve().parents[1]
# Short real clips of every kind (mp4/h264, avi/mpeg4, webm/vp9, a frame folder), a bad file, a
# file that is not there.
CLIPS = {
  "a.mp4": "kinetics400/Tw2yXa6CzWE.mp4",
  "b.avi": "other/mmaction2_test.avi",
  "c.webm": "ssv2/webm_derived/3201.webm",
  "d": "ssv2/frames/2",
}


def _manual(realclips: pathlib.Path, root: pathlib.Path) -> pathlib.Path:
  root.mkdir()
  for name, rel in CLIPS.items():
    os.symlink(realclips / rel, root / name)
  (root / "bad.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
  (root / "names.txt").write_text("x\ny\n")
  (root / "list.txt").write_text("a.mp4 x\nb.avi y\nbad.mp4 y\nc.webm x\ngone.mp4 x\nd y\n")
  return root


def _build(manual: pathlib.Path, data_dir: pathlib.Path, beam_options: PipelineOptions | None):
  cfg = labelled_videos.LabelledVideosConfig(
    name="eq", class_names_file="names.txt", split_files={"train": "list.txt"}, short_side=16
  )
  b = builders.ensure_prepared(
    "labelled_videos", str(data_dir), manual_dir=str(manual), config=cfg, num_workers=2,
    beam_options=beam_options,
  )  # fmt: skip
  assert not list(pathlib.Path(b.data_dir).glob("beam_items_*"))  # Beam's work files are gone
  ds = b.as_dataset(split="train", decoders={"video": tfds.decode.SkipDecoding()})
  examples = {
    ex["video_id"].decode(): (int(ex["label"]), int(ex["num_frames"]), list(ex["video"]))
    for ex in tfds.as_numpy(ds)
  }
  return examples, video.read_skipped(b.data_dir, "train"), b.info.metadata["skipped"]


def test_beam_and_plain_builds_are_equal(realclips, tmp_path, monkeypatch):
  manual = _manual(realclips, tmp_path / "manual")
  monkeypatch.setenv("PYTHONPATH", str(REPO))  # the Beam workers import dsanet_jax
  plain = _build(manual, tmp_path / "plain", None)
  options = PipelineOptions(
    ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
  )
  beam = _build(manual, tmp_path / "beam", options)
  examples, skipped, counts = plain
  assert sorted(examples) == ["a.mp4", "b.avi", "c.webm", "d"]
  assert [(e[0], e[1]) for e in map(examples.get, sorted(examples))] == [
    (0, 300), (1, 164), (0, 43), (1, 48)
  ]  # fmt: skip
  assert [(s["video_id"], s["reason"]) for s in skipped] == [
    ("bad.mp4", "corrupt"), ("gone.mp4", "missing")
  ]  # fmt: skip
  assert counts == {"train": {"total": 2, "by_reason": {"corrupt": 1, "missing": 1}, "listed": 6}}
  assert beam[0].keys() == examples.keys()
  for k in examples:  # ids, labels, frame counts, frame bytes
    assert beam[0][k] == examples[k], k
  assert beam[1] == skipped
  assert beam[2] == counts
