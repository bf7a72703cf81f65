"""Re-running `prepare`: a changed manual folder or options are reported as stale (issue 12)."""

import dataclasses
import os

import pytest
from absl import flags

from dsanet_jax.data import builders, prepare

SHORT = 16


def _prepare(capsys, *args: str) -> str:
  """`python -m dsanet_jax.data.prepare ARGS` in-process; returns what it printed."""
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["prepare", *args])
  try:
    prepare.main(["prepare"])
  finally:
    flags.FLAGS.unparse_flags()
  return capsys.readouterr().out


@pytest.fixture
def kinetics_manual(realclips, tmp_path):
  """A manual folder with the validation CSV and one clip of it (no train CSV yet)."""
  manual = tmp_path / "manual"
  manual.mkdir()
  os.symlink(realclips / "annotations/kinetics400_val_example.csv", manual / "kinetics-400_val.csv")
  os.symlink(realclips / "kinetics400/YABnJL_bDzw.mp4", manual / "YABnJL_bDzw.mp4")
  return manual


def test_added_train_csv_is_reported_and_overwrite_builds_it(kinetics_manual, tmp_path, capsys):
  """Issue 12 item 7: the re-run printed only the validation split, with no warning."""
  args = [
    "--dataset=kinetics400", f"--manual_dir={kinetics_manual}", f"--data_dir={tmp_path / 'd'}",
    f"--short_side={SHORT}", "--num_workers=1",
  ]  # fmt: skip
  out = _prepare(capsys, *args)
  assert "writing frames at 30 fps" in out
  assert "stale" not in out and "validation: 1 videos" in out
  # Nothing changed: no warning.
  assert "stale" not in _prepare(capsys, *args)
  (kinetics_manual / "kinetics-400_train.csv").write_text(
    "label,youtube_id,time_start,time_end,split,is_cc\nlaughing,YABnJL_bDzw,86,96,train,0\n"
  )
  out = _prepare(capsys, *args)
  assert "is stale" in out and "split train" in out and "kinetics-400_train.csv is new" in out
  assert "--overwrite" in out and "train: 1 videos" not in out  # not rebuilt
  out = _prepare(capsys, *args, "--overwrite")
  assert "train: 1 videos" in out and "validation: 1 videos" in out
  assert "stale" not in _prepare(capsys, *args)


def test_edited_csv_and_changed_options_are_stale(realclips, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  os.symlink(realclips / "ssv2/webm_derived/3201.webm", manual / "a.webm")
  (manual / "names.txt").write_text("x\ny\n")
  (manual / "list.txt").write_text("a.webm x\n")
  cfg = builders.labelled_videos.LabelledVideosConfig(
    name="s", class_names_file="names.txt", split_files={"train": "list.txt"}, short_side=SHORT
  )
  data = str(tmp_path / "d")
  b = builders.ensure_prepared("labelled_videos", data, manual_dir=str(manual), config=cfg)
  assert b.stale_reasons(str(manual)) == []
  assert b.info.metadata["build"]["files"]["split train"]["lines"] == 1
  assert b.info.metadata["target_fps"] is None  # native rates
  (manual / "list.txt").write_text("a.webm x\na.webm y\n")
  (reason,) = b.stale_reasons(str(manual))
  assert reason.startswith("split train:") and "lines 1 -> 2" in reason
  other = builders.get_builder(
    "labelled_videos", data, manual_dir=str(manual), config=dataclasses.replace(cfg, label_offset=1)
  )
  assert "option label_offset: built with 0, now 1" in other.stale_reasons(str(manual))


def test_check_lists_unreferenced_files_and_splits_without_annotations(
  kinetics_manual, realclips, capsys
):
  os.symlink(realclips / "other/vtest.avi", kinetics_manual / "stray.avi")
  out = _prepare(capsys, "--dataset=kinetics400", f"--manual_dir={kinetics_manual}", "--check")
  assert "train: no annotation file" in out and "test: no annotation file" in out
  assert "1 video files / frame folders that no annotation references" in out
  assert str(kinetics_manual / "stray.avi") in out
