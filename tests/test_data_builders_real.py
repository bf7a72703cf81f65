"""Builders and decoding on the real clips in ../shared/data/realclips (see its PROVENANCE.md)."""

import io
import json
import os
import pathlib

import av
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from dsanet_jax.data import annotations, builders, decode
from dsanet_jax.data.builders import kinetics, labelled_videos

SHORT = 32  # small frames keep the builds fast

# file -> (container codec, decoded frames, fps), as PyAV 18.1.0 reported in PROVENANCE.md.
CLIPS = {
  "kinetics400/YABnJL_bDzw.mp4": ("h264", 302, 25.0),
  "kinetics400/Tw2yXa6CzWE.mp4": ("h264", 300, 30.0),
  "kinetics400/mmaction2_demo.mp4": ("h264", 280, 28.0),
  "kinetics400/9r8wpMS2iEk_000048_000058.mp4": ("h264", 252, 25.0),
  "other/flipping_a_pancake.mkv": ("h264", 310, 30.0),
  "other/mmaction2_test.avi": ("mpeg4", 164, 25.0),
  "other/vtest.avi": ("msmpeg4", 795, 10.0),
  "ssv2/webm_derived/3201.webm": ("vp9", 43, 12.0),
}
# SSv2 ids in ssv2/ -> (official class id, frames), PROVENANCE.md.
SSV2 = {"2": (68, 48), "3201": (32, 43), "13201": (79, 49), "57082": (10, 38), "80962": (55, 58)}


@pytest.mark.parametrize("rel", sorted(CLIPS))
def test_read_video_every_container_and_codec(realclips, rel):
  codec, frames, fps = CLIPS[rel]
  path = realclips / rel
  with av.open(str(path)) as c:
    assert c.streams.video[0].codec_context.name == codec
  video = decode.read_video(path, short_side=SHORT)
  assert video.num_frames == frames
  assert video.fps == pytest.approx(fps, rel=1e-3)
  assert min(video.height, video.width) == SHORT
  img = np.asarray(Image.open(io.BytesIO(video.frames[0])))
  assert img.shape == (video.height, video.width, 3)
  assert img.std() > 5  # a real picture, not a blank frame


def test_mkv_without_frame_count_is_counted_by_decoding(realclips):
  path = realclips / "other/flipping_a_pancake.mkv"
  with av.open(str(path)) as c:
    assert c.streams.video[0].frames == 0  # the container does not say
  assert decode.read_video(path, short_side=SHORT).num_frames == 310


def test_target_fps_resamples_by_time(realclips):
  video = decode.read_video(
    realclips / "other/flipping_a_pancake.mkv", short_side=SHORT, target_fps=10
  )
  assert video.fps == 10.0
  assert abs(video.num_frames - 310 / 3) <= 1


def test_frame_folder_native_size_passes_jpegs_through(realclips):
  folder = realclips / "ssv2/frames/2"
  video = decode.read_frame_dir(folder, fps=12.0, short_side=None)
  files = decode.list_frame_files(folder)
  assert video.num_frames == len(files) == 48
  assert video.frames[0] == pathlib.Path(files[0]).read_bytes()
  small = decode.read_frame_dir(folder, fps=12.0, short_side=SHORT)
  assert (small.height, small.width) == (SHORT, 57)


def test_kinetics_csv_both_forms(realclips):
  ann = realclips / "annotations"
  six = annotations.read_kinetics_csv(ann / "kinetics400_val_example.csv")
  five = annotations.read_kinetics_csv(ann / "kinetics400_val_example_5col.csv")
  assert [(r.youtube_id, r.label, r.time_start) for r in six] == [
    (r.youtube_id, r.label, r.time_start) for r in five
  ]
  ids = {r.youtube_id: r for r in six}
  assert "--nQbRBEz2s" in ids  # an id starting with '-'
  assert ids["YABnJL_bDzw"].label == "laughing" and ids["YABnJL_bDzw"].clip_name == (
    "YABnJL_bDzw_000086_000096"
  )
  classes = set(kinetics.kinetics400_classes())
  assert all(r.label in classes for r in six)  # quoted labels, parentheses


def test_kinetics_full_val_csv_matches_the_label_map(realclips):
  rows = annotations.read_kinetics_csv(realclips / "annotations/kinetics-400_val.csv")
  assert len(rows) == 19906
  names = kinetics.kinetics400_classes()
  assert len(names) == 400 and names == sorted({r.label for r in rows})
  assert names[180] == "laughing" and names[398] == "yoga" and names[6] == "arm wrestling"


@pytest.mark.parametrize(
  "csv_name", ["kinetics400_val_example.csv", "kinetics400_val_example_5col.csv"]
)
def test_kinetics_builder_layouts_and_labels(realclips, tmp_path, csv_name):
  manual = tmp_path / "manual"
  (manual / "val" / "laughing").mkdir(parents=True)
  os.symlink(realclips / "annotations" / csv_name, manual / "validate.csv")
  # {label}/{id}_{start}_{end}.mp4 and bare {id}.mp4 layouts.
  os.symlink(
    realclips / "kinetics400/YABnJL_bDzw.mp4",
    manual / "val/laughing/YABnJL_bDzw_000086_000096.mp4",
  )
  os.symlink(realclips / "kinetics400/Tw2yXa6CzWE.mp4", manual / "val/Tw2yXa6CzWE.mp4")
  b = builders.ensure_prepared(
    "kinetics400", str(tmp_path / "data"), manual_dir=str(manual), short_side=SHORT, num_workers=2
  )
  got = {ex["video_id"].decode(): ex for ex in tfds.as_numpy(b.as_dataset(split="validation"))}
  assert sorted(got) == ["Tw2yXa6CzWE", "YABnJL_bDzw"]
  assert got["YABnJL_bDzw"]["label"] == 180 and got["Tw2yXa6CzWE"]["label"] == 398
  # Kinetics is resampled to 30 fps by default (spec §4.1): 302 frames at 25 fps -> 362.
  assert got["YABnJL_bDzw"]["num_frames"] == 362 and got["YABnJL_bDzw"]["fps"] == 30.0
  assert got["YABnJL_bDzw"]["video"].shape == (362, SHORT, 57, 3)
  assert b.info.metadata["target_fps"] == 30.0
  assert got["Tw2yXa6CzWE"]["start_time"] == 491
  # The 7 other rows have no file: recorded, not fatal.
  skipped = json.loads((pathlib.Path(b.data_dir) / "skipped_validation.json").read_text())
  assert len(skipped) == 7 and {s["reason"] for s in skipped} == {"missing"}
  assert "--nQbRBEz2s" in {s["video_id"] for s in skipped}
  assert b.info.metadata["skipped"]["validation"]["by_reason"] == {"missing": 7}


def test_kinetics_mini200_is_a_subset_config(realclips, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  os.symlink(realclips / "annotations/kinetics400_val_example.csv", manual / "kinetics-400_val.csv")
  os.symlink(realclips / "kinetics400/YABnJL_bDzw.mp4", manual / "YABnJL_bDzw.mp4")
  # Listed: a kept clip, an abseiling clip without file, a clip whose class is not in the subset.
  (manual / "val_ytid_list.txt").write_text("YABnJL_bDzw\n0wR5jVB-WPk\n--nQbRBEz2s\n")
  (manual / "mini_kinetics200_classes.txt").write_text("abseiling\nlaughing\n")
  b = builders.get_builder(
    "kinetics400/mini200", str(tmp_path / "data"), manual_dir=str(manual), num_classes=2,
    short_side=SHORT,
  )  # fmt: skip
  b.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual), try_download_gcs=False)
  )
  assert b.info.features["label"].names == ["abseiling", "laughing"]
  (ex,) = tfds.as_numpy(b.as_dataset(split="validation"))
  assert ex["video_id"] == b"YABnJL_bDzw" and ex["label"] == 1
  assert b.info.metadata["skipped"]["validation"] == {
    "total": 2, "by_reason": {"missing": 1, "unknown_label": 1}, "listed": 3
  }  # fmt: skip


def _ssv2_manual(realclips: pathlib.Path, root: pathlib.Path) -> pathlib.Path:
  """SSv2 layout: 2 ids as webm videos, 3 as frame folders."""
  manual = root / "manual"
  (manual / "20bn-something-something-v2").mkdir(parents=True)
  (manual / "frames").mkdir()
  os.symlink(
    realclips / "labels/something-something-v2-labels.json",
    manual / "something-something-v2-labels.json",
  )
  os.symlink(
    realclips / "annotations/ssv2_example.json", manual / "something-something-v2-validation.json"
  )
  for i in ("2", "3201"):
    os.symlink(
      realclips / f"ssv2/webm_derived/{i}.webm", manual / f"20bn-something-something-v2/{i}.webm"
    )
  for i in ("13201", "57082", "80962"):
    os.symlink(realclips / f"ssv2/frames/{i}", manual / f"frames/{i}")
  return manual


def test_ssv2_builder_webm_and_frame_folders(realclips, tmp_path):
  manual = _ssv2_manual(realclips, tmp_path)
  b = builders.ensure_prepared(
    "something_something_v2", str(tmp_path / "data"), manual_dir=str(manual), short_side=SHORT,
  )  # fmt: skip
  got = {ex["video_id"].decode(): ex for ex in tfds.as_numpy(b.as_dataset(split="validation"))}
  assert {k: (int(v["label"]), int(v["num_frames"])) for k, v in got.items()} == SSV2
  assert got["57082"]["placeholders"].tolist() == [b"comb", b"small box"]
  assert got["2"]["template"] == b"Pretending to pick [something] up"
  assert all(v["fps"] == 12.0 for v in got.values())
  # Reading back needs no manual folder: the names come from the prepared dataset.
  again = builders.get_builder("something_something_v2", str(tmp_path / "data"), short_side=SHORT)
  assert again.info.features["label"].names[68] == "Pretending to pick something up"


def test_ssv2_full_validation_json_parses(realclips):
  entries = annotations.read_ssv2_json(
    realclips / "annotations/something-something-v2-validation.json"
  )
  names = set(annotations.read_class_names(realclips / "labels/something-something-v2-labels.json"))
  assert len(entries) == 24777 and len(names) == 174
  assert all(e.class_name in names for e in entries)
  assert {e.video_id: e.line for e in entries}["3201"] > 1


def test_ssv1_builder_frame_folders(realclips, tmp_path):
  """SSv1 layout {id}/{:05d}.jpg with `;` CSVs, made from the SSv2 frames (renumbered)."""
  manual = tmp_path / "manual"
  for i in ("2", "3201"):
    d = manual / "20bn-something-something-v1" / i
    d.mkdir(parents=True)
    for k, f in enumerate(decode.list_frame_files(realclips / f"ssv2/frames/{i}"), 1):
      os.symlink(f, d / f"{k:05d}.jpg")
  (manual / "something-something-v1-labels.csv").write_text(
    "Moving away from something with your camera\nPretending to pick something up\n"
  )
  (manual / "something-something-v1-validation.csv").write_text(
    "2;Pretending to pick something up\n3201;Moving away from something with your camera\n"
  )
  b = builders.ensure_prepared(
    "something_something_v1", str(tmp_path / "data"), manual_dir=str(manual), short_side=SHORT
  )
  got = {ex["video_id"].decode(): ex for ex in tfds.as_numpy(b.as_dataset(split="validation"))}
  assert {k: (int(v["label"]), int(v["num_frames"])) for k, v in got.items()} == {
    "2": (1, 48), "3201": (0, 43)
  }  # fmt: skip


def test_labelled_videos_generic_builder(realclips, tmp_path):
  manual = tmp_path / "manual"
  (manual / "videos" / "ApplyEyeMakeup").mkdir(parents=True)
  os.symlink(realclips / "other/mmaction2_test.avi", manual / "videos/ApplyEyeMakeup/a.avi")
  os.symlink(realclips / "other/flipping_a_pancake.mkv", manual / "videos/pancake.mkv")
  os.symlink(realclips / "kinetics400/mmaction2_demo.mp4", manual / "videos/arm.mp4")
  (manual / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 FlippingPancake\n3 ArmWrestling\n")
  (manual / "train.txt").write_text(
    "pancake.mkv FlippingPancake\narm.mp4 3\nApplyEyeMakeup/a.avi\n"
  )
  cfg = labelled_videos.LabelledVideosConfig(
    name="mine", class_names_file="classInd.txt", split_files={"train": "train.txt"},
    video_root="videos", label_offset=1, short_side=SHORT,
  )  # fmt: skip
  data = str(tmp_path / "data")
  builders.ensure_prepared("labelled_videos", data, manual_dir=str(manual), config=cfg)
  b = builders.get_builder("labelled_videos/mine", data)  # from the prepared folder
  got = {ex["video_id"].decode(): ex for ex in tfds.as_numpy(b.as_dataset(split="train"))}
  assert {k: int(v["label"]) for k, v in got.items()} == {
    "pancake.mkv": 1, "arm.mp4": 2, "ApplyEyeMakeup/a.avi": 0
  }  # fmt: skip
  assert b.info.features["label"].names == ["ApplyEyeMakeup", "FlippingPancake", "ArmWrestling"]
  assert got["ApplyEyeMakeup/a.avi"]["num_frames"] == 164


def test_frame_folder_target_fps(realclips, tmp_path):
  """target_fps also resamples frame folders (12 -> 6 fps: every other frame, floor(F / 2))."""
  manual = _ssv2_manual(realclips, tmp_path)
  b = builders.ensure_prepared(
    "something_something_v2", str(tmp_path / "data"), manual_dir=str(manual), short_side=SHORT,
    target_fps=6.0, source="frames",
  )  # fmt: skip
  got = {ex["video_id"].decode(): ex for ex in tfds.as_numpy(b.as_dataset(split="validation"))}
  assert sorted(got) == ["13201", "57082", "80962"]  # source='frames': the webm-only ids missing
  assert {k: int(v["num_frames"]) for k, v in got.items()} == {
    "13201": 24,
    "57082": 19,
    "80962": 29,
  }
  assert all(v["fps"] == 6.0 for v in got.values())
  assert b.info.metadata["skipped"]["validation"]["by_reason"] == {"missing": 2}


def test_prepare_command_line(realclips, tmp_path):
  """`python -m dsanet_jax.data.prepare` for a labelled_videos set, in-process."""
  from absl import flags

  from dsanet_jax.data import prepare

  manual = tmp_path / "manual"
  (manual / "v").mkdir(parents=True)
  os.symlink(realclips / "other/mmaction2_test.avi", manual / "v/a.avi")
  (manual / "names.txt").write_text("makeup\nother\n")
  (manual / "list.txt").write_text("a.avi makeup\nmissing.avi other\n")
  argv = [
    "prepare", "--dataset=labelled_videos", "--config_name=cli", f"--manual_dir={manual}",
    f"--data_dir={tmp_path / 'data'}", "--class_names=names.txt", "--validation_list=list.txt",
    "--video_root=v", f"--short_side={SHORT}", "--num_workers=1",
  ]  # fmt: skip
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv)
  try:
    prepare.main(["prepare"])
  finally:
    flags.FLAGS.unparse_flags()
  b = builders.get_builder("labelled_videos/cli", str(tmp_path / "data"))
  assert b.info.splits["validation"].num_examples == 1
  assert b.info.metadata["skipped"]["validation"]["by_reason"] == {"missing": 1}


@pytest.mark.parametrize(
  "rel,window,frames",
  [
    ("other/vtest.avi", (20, 30), 100),  # 79.5 s file >= end: the whole source, cut (10 fps)
    ("other/flipping_a_pancake.mkv", (2, 5), 90),  # duration from the container only
    ("kinetics400/YABnJL_bDzw.mp4", (86, 96), 302),  # a 12 s file for 86-96: already cut
    ("kinetics400/Tw2yXa6CzWE.mp4", (0, 10), 300),  # a 10 s clip of 0-10: kept whole
  ],
)
def test_read_video_cuts_whole_source_videos_to_the_window(realclips, rel, window, frames):
  video = decode.read_video(realclips / rel, short_side=SHORT, window=window)
  assert video.num_frames == frames


def test_kinetics_builder_cuts_a_full_length_download(realclips, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "validate.csv").write_text(
    "label,youtube_id,time_start,time_end,split\n"
    '"walking the dog",vtestvtest1,20,30,val\n'
    "yoga,Tw2yXa6CzWE,491,501,val\n"
  )
  os.symlink(realclips / "other/vtest.avi", manual / "vtestvtest1.avi")  # a 79.5 s "source"
  os.symlink(realclips / "kinetics400/Tw2yXa6CzWE.mp4", manual / "Tw2yXa6CzWE.mp4")
  b = builders.ensure_prepared(
    "kinetics400", str(tmp_path / "data"), manual_dir=str(manual), short_side=SHORT
  )
  got = {ex["video_id"].decode(): ex for ex in tfds.as_numpy(b.as_dataset(split="validation"))}
  # The 10 s window, resampled from 10 to 30 fps (the Kinetics default).
  assert int(got["vtestvtest1"]["num_frames"]) == 300 and got["vtestvtest1"]["label"] == 378
  assert int(got["Tw2yXa6CzWE"]["num_frames"]) == 300


def test_check_is_a_dry_run(realclips, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  os.symlink(realclips / "annotations/kinetics400_val_example.csv", manual / "validate.csv")
  os.symlink(realclips / "kinetics400/YABnJL_bDzw.mp4", manual / "YABnJL_bDzw.mp4")
  os.symlink(realclips / "kinetics400/mmaction2_demo.mp4", manual / "not_annotated.mp4")
  b = builders.get_builder("kinetics400", str(tmp_path / "data"))
  check = b.check(str(manual))
  (report,) = check["splits"].values()
  assert (report["listed"], report["found"], report["problems"]) == (9, 1, {"missing": 8})
  assert check["no_annotation"] == ["train", "test"]
  assert check["unreferenced"] == [str(manual / "not_annotated.mp4")]
  assert not (tmp_path / "data").exists()  # nothing built


def test_mini200_builds_only_the_listed_splits(realclips, tmp_path):
  """A test CSV without an id list is not part of an id-list subset (no empty split)."""
  manual = tmp_path / "manual"
  manual.mkdir()
  os.symlink(realclips / "annotations/kinetics400_val_example.csv", manual / "val.csv")
  (manual / "test.csv").write_text("youtube_id,time_start,time_end,split\nabc,0,10,test\n")
  os.symlink(realclips / "kinetics400/YABnJL_bDzw.mp4", manual / "YABnJL_bDzw.mp4")
  (manual / "val_ytid_list.txt").write_text("YABnJL_bDzw\n")
  b = builders.get_builder("kinetics400/mini200", str(tmp_path / "d"), manual_dir=str(manual))
  assert list(b.check(str(manual))["splits"]) == ["validation"]
  assert b.info.features["label"].names == ["laughing"]  # classes of the listed videos
