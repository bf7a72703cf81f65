"""Bad input: every failure is recorded with the right reason and skipped; broken annotation
files fail naming the file and the line."""

import json
import os
import pathlib

import av
import numpy as np
import pytest
import tensorflow_datasets as tfds

from dsanet_jax.data import annotations, builders, decode
from dsanet_jax.data.builders import labelled_videos


def make_video(
  path: pathlib.Path, num_frames: int, *, fmt: str = "mp4", options: dict | None = None,
  codec: str = "libx264",
) -> pathlib.Path:  # fmt: skip
  """A small noisy 64x48 12-fps video (noise so that the frames are not tiny packets)."""
  rng = np.random.default_rng(0)
  with av.open(str(path), "w", format=fmt, options=options or {}) as c:
    s = c.add_stream(codec, rate=12)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    c.start_encoding()
    for _ in range(num_frames):
      img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
      for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)
  return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, pathlib.Path]:
  """name -> file; the name says what is wrong with it (or 'good')."""
  d = tmp_path_factory.mktemp("bad")
  files = {"good": make_video(d / "good.mp4", 20)}
  full = make_video(d / "full.mp4", 40, options={"movflags": "faststart"})  # index first
  data = full.read_bytes()
  (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # a cut download
  files["truncated"] = d / "truncated.mp4"
  (d / "corrupt.mp4").write_bytes(np.random.default_rng(1).bytes(4000))  # not a video
  files["corrupt"] = d / "corrupt.mp4"
  (d / "empty.mp4").write_bytes(b"")
  files["empty"] = d / "empty.mp4"
  # A video stream that holds no frames (fragmented mp4 with an empty index).
  files["zero_frames"] = make_video(
    d / "zero.mp4", 0, options={"movflags": "frag_keyframe+empty_moov"}
  )
  # A codec FFmpeg does not know (the sample entry 'avc1' renamed).
  (d / "codec.mp4").write_bytes(files["good"].read_bytes().replace(b"avc1", b"zzzz"))
  files["unknown_codec"] = d / "codec.mp4"
  with av.open(str(d / "audio.wav"), "w") as c:  # no video stream at all
    s = c.add_stream("pcm_s16le", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.sample_rate = 8000
    for p in s.encode(frame):
      c.mux(p)
  files["audio_only"] = d / "audio.wav"
  files["missing"] = d / "missing.mp4"
  (d / "empty_dir").mkdir()
  files["empty_dir"] = d / "empty_dir"
  (d / "broken_jpeg_dir").mkdir()
  (d / "broken_jpeg_dir" / "00001.jpg").write_bytes(
    decode.encode_jpeg(np.zeros((8, 8, 3), np.uint8))
  )
  (d / "broken_jpeg_dir" / "00002.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  files["broken_jpeg_dir"] = d / "broken_jpeg_dir"
  return files


EXPECTED = {
  "truncated": decode.TRUNCATED,
  "corrupt": decode.CORRUPT,
  "empty": decode.CORRUPT,
  "zero_frames": decode.ZERO_FRAMES,
  "unknown_codec": decode.UNDECODABLE,
  "audio_only": decode.UNDECODABLE,
  "missing": decode.MISSING,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_read_video_failure_reasons(bad_files, name):
  with pytest.raises(decode.DecodeError) as e:
    decode.read_video(bad_files[name], short_side=16)
  assert e.value.reason == EXPECTED[name], e.value.detail
  assert str(bad_files[name]) in e.value.detail


def test_good_file_decodes(bad_files):
  assert decode.read_video(bad_files["good"], short_side=16).num_frames == 20


@pytest.mark.parametrize(
  "name,reason",
  [
    ("empty_dir", decode.ZERO_FRAMES),
    ("broken_jpeg_dir", decode.CORRUPT),
    ("missing", decode.MISSING),
  ],
)
def test_read_frame_dir_failure_reasons(bad_files, name, reason):
  with pytest.raises(decode.DecodeError) as e:
    decode.read_frame_dir(bad_files[name], fps=12.0, short_side=16)
  assert e.value.reason == reason


def test_build_records_and_skips_every_bad_video(bad_files, tmp_path):
  """One build over good and bad entries: it finishes, keeps the good, lists the bad."""
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "classes.txt").write_text("a\nb\n")
  lines = [f"{bad_files['good']}\ta", f"{bad_files['good'].parent / 'good_copy.mp4'}\tnot_a_class"]
  lines += [f"{bad_files[n]}\tb" for n in [*sorted(EXPECTED), "empty_dir", "broken_jpeg_dir"]]
  lines.append(f"{bad_files['good']}\tb")  # the same video id twice
  (manual / "train.txt").write_text("\n".join(lines) + "\n")
  cfg = labelled_videos.LabelledVideosConfig(
    name="bad", class_names_file="classes.txt", split_files={"train": "train.txt"}, short_side=16
  )
  b = builders.ensure_prepared(
    "labelled_videos", str(tmp_path / "data"), manual_dir=str(manual), config=cfg
  )
  (ex,) = tfds.as_numpy(b.as_dataset(split="train"))
  assert ex["label"] == 0 and ex["num_frames"] == 20
  skipped = json.loads((pathlib.Path(b.data_dir) / "skipped_train.json").read_text())
  by_path = {s["path"]: s["reason"] for s in skipped if s["reason"] != decode.DUPLICATE_ID}
  for name, reason in [
    *EXPECTED.items(),
    ("empty_dir", decode.ZERO_FRAMES),
    ("broken_jpeg_dir", decode.CORRUPT),
  ]:
    assert by_path[str(bad_files[name])] == reason, name
  assert by_path[str(bad_files["good"].parent / "good_copy.mp4")] == decode.UNKNOWN_LABEL
  assert [s["video_id"] for s in skipped if s["reason"] == decode.DUPLICATE_ID] == [
    str(bad_files["good"])
  ]
  assert all(s["detail"] for s in skipped)
  counts = b.info.metadata["skipped"]["train"]
  assert counts["total"] == len(skipped) == 11 and counts["listed"] == 12
  assert counts["by_reason"] == {
    "corrupt": 3, "duplicate_id": 1, "missing": 1, "truncated": 1, "undecodable": 2,
    "unknown_label": 1, "zero_frames": 2,
  }  # fmt: skip


# ------------------------------------------------------------------------- annotation files
def _write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
  p = tmp_path / name
  p.write_text(text)
  return p


def test_kinetics_csv_row_with_missing_column_names_file_and_line(tmp_path):
  p = _write(
    tmp_path, "val.csv",
    "label,youtube_id,time_start,time_end,split\nyoga,Tw2yXa6CzWE,491,501,val\nyoga,abc,5,val\n",
  )  # fmt: skip
  with pytest.raises(annotations.AnnotationError, match=rf"{p}:3: expected 5 columns"):
    annotations.read_kinetics_csv(p)


def test_kinetics_csv_header_without_required_column(tmp_path):
  p = _write(tmp_path, "val.csv", "label,time_start,time_end,split\nyoga,491,501,val\n")
  with pytest.raises(annotations.AnnotationError, match=rf"{p}:1: .*lacks column.*youtube_id"):
    annotations.read_kinetics_csv(p)


def test_kinetics_csv_non_numeric_time(tmp_path):
  p = _write(tmp_path, "val.csv", "label,youtube_id,time_start,time_end\nyoga,a,x,10\n")
  with pytest.raises(annotations.AnnotationError, match=rf"{p}:2: time_start"):
    annotations.read_kinetics_csv(p)


def test_kinetics_test_csv_without_labels(tmp_path):
  p = _write(tmp_path, "test.csv", "youtube_id,time_start,time_end,split\n-abc,0,10,test\n")
  (row,) = annotations.read_kinetics_csv(p)
  assert row.label is None and row.youtube_id == "-abc"


def test_ssv2_broken_json_names_file_and_line(tmp_path):
  p = _write(
    tmp_path, "val.json",
    '[\n{"id":"1","label":"a","template":"A [something]","placeholders":["a"]},\n'
    '{"id":"2","label":"b" "template":"B","placeholders":[]}\n]\n',
  )  # fmt: skip
  with pytest.raises(annotations.AnnotationError, match=rf"{p}:3: invalid JSON"):
    annotations.read_ssv2_json(p)


def test_ssv2_truncated_json(tmp_path):
  p = _write(tmp_path, "val.json", '[\n{"id":"1","template":"A"},\n{"id":"2","templ')
  with pytest.raises(annotations.AnnotationError, match=rf"{p}:3: invalid JSON"):
    annotations.read_ssv2_json(p)


def test_ssv2_entry_missing_key_names_its_line(tmp_path):
  p = _write(
    tmp_path, "val.json",
    '[\n{"id":"1","template":"A [x]"},\n{"id":"2","template":"B"},\n'
    '{"label":"c","template":"C"}\n]',
  )  # fmt: skip
  with pytest.raises(annotations.AnnotationError, match=rf"{p}:4: entry lacks key 'id'"):
    annotations.read_ssv2_json(p)
  q = _write(tmp_path, "val2.json", '[{"id":"1","template":"A"},\n {"id":"2"}]')
  with pytest.raises(annotations.AnnotationError, match=rf"{q}:2: entry lacks key 'template'"):
    annotations.read_ssv2_json(q)


def test_ssv2_labels_json_with_bad_ids(tmp_path):
  p = _write(tmp_path, "labels.json", '{"A": "0", "B": "2"}')
  with pytest.raises(annotations.AnnotationError, match=rf"{p}: ids must be 0..1"):
    annotations.read_class_names(p)
  q = _write(tmp_path, "labels2.json", '{"A": "0",\n "B": }')
  with pytest.raises(annotations.AnnotationError, match=rf"{q}:2: invalid JSON"):
    annotations.read_class_names(q)


def test_ssv1_csv_line_without_label(tmp_path):
  p = _write(tmp_path, "train.csv", "1;Holding something\n2\n")
  with pytest.raises(annotations.AnnotationError, match=rf"{p}:2: expected 'id;label'"):
    annotations.read_ssv1_csv(p)
  assert annotations.read_ssv1_csv(p, labelled=False)[1][:2] == ("2", None)


def test_class_names_formats_and_duplicates(tmp_path):
  assert annotations.read_class_names(_write(tmp_path, "a.txt", "2 b\n1 a\n")) == ["a", "b"]
  assert annotations.read_class_names(_write(tmp_path, "b.txt", "x y\nz\n")) == ["x y", "z"]
  with pytest.raises(annotations.AnnotationError, match="appears twice"):
    annotations.read_class_names(_write(tmp_path, "c.txt", "a\nb\na\n"))
  with pytest.raises(annotations.AnnotationError, match="not found"):
    annotations.read_class_names(tmp_path / "nope.txt")


def test_broken_annotation_fails_the_build_naming_the_file(realclips, tmp_path):
  """Unlike a bad video, a broken annotation file stops the build, with file and line."""
  manual = tmp_path / "manual"
  manual.mkdir()
  os.symlink(
    realclips / "labels/something-something-v2-labels.json",
    manual / "something-something-v2-labels.json",
  )
  bad = _write(
    manual, "something-something-v2-validation.json", '[\n{"id": "2",\n "template": }\n]'
  )
  with pytest.raises(annotations.AnnotationError, match=rf"{bad}:3"):
    builders.ensure_prepared(
      "something_something_v2", str(tmp_path / "data"), manual_dir=str(manual), short_side=16
    )


def test_split_with_no_good_video_fails_saying_why(bad_files, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "classes.txt").write_text("a\n")
  (manual / "train.txt").write_text(f"{bad_files['missing']}\ta\n{bad_files['corrupt']}\ta\n")
  cfg = labelled_videos.LabelledVideosConfig(
    name="allbad", class_names_file="classes.txt", split_files={"train": "train.txt"}
  )
  with pytest.raises(ValueError, match=r"every one of the 2 videos .* 'train' was skipped"):
    builders.ensure_prepared(
      "labelled_videos", str(tmp_path / "data"), manual_dir=str(manual), config=cfg
    )
