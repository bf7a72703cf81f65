"""The recipe tools: sample_frames (the pipeline's own sampling, as JSON) and fuse_scores (score
fusion of finished runs, refusing mismatched ones by name)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from configs.something_something_v2 import dsa_i3d_r50 as ssv2
from dsanet_jax.common import data_spec
from dsanet_jax.data import pipeline
from dsanet_jax.tools import fuse_scores, sample_frames
from dsanet_jax.train import evaluator

REPO = pathlib.Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
  env = dict(os.environ)
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
  return env


def _tool(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", *args],
    cwd=REPO,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )


# ---------------------------------------------------------------- sample_frames


@pytest.mark.parametrize(
  ("config", "frames"),
  [
    ("configs/something_something_v2/dsa_i3d_r50.py", (16, 24, 32, 48, 64)),
    ("configs/something_something_v1/dsa_i3d_r50.py", (16, 24, 32, 48, 64)),
    ("configs/kinetics400/dsa_i3d_r50.py", (150, 300)),
  ],
)
def test_sample_frames_json_snippets_are_distinct_and_cover(config, frames):
  """The acceptance check: `--json` for each N (the first through the command line, the others
  through the same function in-process, to keep the test short)."""
  import importlib

  cfg = importlib.import_module(config[:-3].replace("/", ".")).get_config()
  for n in frames:
    if n == frames[0]:
      proc = _tool(
        "dsanet_jax.tools.sample_frames", f"--config={config}", f"--num_video_frames={n}", "--json"
      )
      assert proc.returncode == 0, proc.stderr[-2000:]
      out = json.loads(proc.stdout.strip().splitlines()[-1])
      assert out == sample_frames.sample_frames(data_spec.from_config(cfg), n)
    else:
      out = sample_frames.sample_frames(data_spec.from_config(cfg), n)
    for key, count in (("train", 4), ("test", 8)):
      snippets = out[key]
      assert len(snippets) == count and all(len(s) == 8 for s in snippets), (config, n, key)
      assert len({frozenset(s) for s in snippets}) == count, (config, n, key, snippets)
      flat = [i for s in snippets for i in s]
      assert min(flat) >= 0 and max(flat) < n
      assert max(flat) - min(flat) + 1 >= n / 2, (config, n, key, snippets)


def test_sample_frames_are_the_pipelines_own():
  cfg = ssv2.get_config()
  out = sample_frames.sample_frames(data_spec.from_config(cfg), 40, epoch=2, index=5)
  s_time, _ = pipeline.train_seeds(
    data_spec.from_config(cfg), tf.constant(2, tf.int64), tf.constant(5)
  )
  want = (
    pipeline.train_frame_indices(data_spec.from_config(cfg), tf.constant(40), s_time)
    .numpy()
    .tolist()
  )
  assert out["train"] == want
  # a training example's frames in the tf.data pipeline are exactly these (the gather of _read's
  # frames goes through the same train_frame_indices)
  assert (
    out["test"]
    == pipeline.eval_frame_indices(data_spec.from_config(cfg), tf.constant(40), 8).numpy().tolist()
  )
  other = sample_frames.sample_frames(data_spec.from_config(cfg), 40, epoch=3, index=5)
  assert other["test"] == out["test"] and other["train"] != out["train"]


# ---------------------------------------------------------------- fuse_scores


def _write_run(root: pathlib.Path, ids, labels, scores, class_names) -> pathlib.Path:
  metrics = evaluator.classification_metrics(
    np.asarray(scores), np.asarray(labels), len(class_names)
  )
  evaluator.write_results(
    str(root / "eval"),
    metrics,
    {"video_id": list(ids), "scores": np.asarray(scores, np.float64), "label": np.asarray(labels)},
    class_names,
    extra={"split": "validation", "step": 1, "views": "1x1", "checkpoint": f"{root}@1"},
  )
  return root


def test_fuse_scores_averages_aligned_by_video_id(tmp_path):
  names = ["a", "b", "c"]
  # Run A is right on v0, v1; run B on v1, v2; stored in different orders. Their mean is right on
  # all three: v0 (A strong), v1 (both), v2 (B strong).
  a = _write_run(
    tmp_path / "A",
    ["v0", "v1", "v2"],
    [0, 1, 2],
    [[5.0, 0, 0], [0, 2.0, 0], [0, 1.0, 0.5]],
    names,
  )
  b = _write_run(
    tmp_path / "B",
    ["v2", "v0", "v1"],
    [2, 0, 1],
    [[0, 0, 5.0], [0, 1.0, 0], [0, 2.0, 0]],
    names,
  )
  out = fuse_scores.fuse([str(a), str(b)])
  assert out["num_videos"] == 3 and out["top1"] == 1.0 and out["top5"] == 1.0
  only_a = fuse_scores.fuse([str(a), str(b)], weights=[1.0, 0.0])
  assert only_a["top1"] == pytest.approx(2 / 3)
  proc = _tool(
    "dsanet_jax.tools.fuse_scores", str(a), str(b / "eval" / "predictions.npz"), "--json"
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  js = json.loads(proc.stdout.strip().splitlines()[-1])
  assert js["top1"] == 1.0 and js["top5"] == 1.0 and js["num_videos"] == 3


def test_fuse_scores_refuses_mismatched_runs_by_name(tmp_path):
  names = ["a", "b", "c"]
  s = [[1.0, 0, 0], [0, 1.0, 0]]
  a = _write_run(tmp_path / "A", ["v0", "v1"], [0, 1], s, names)
  other_videos = _write_run(tmp_path / "B", ["v0", "v9"], [0, 1], s, names)
  with pytest.raises(ValueError, match=r"different video sets.*'v1'.*'v9'"):
    fuse_scores.fuse([str(a), str(other_videos)])
  other_classes = _write_run(tmp_path / "C", ["v0", "v1"], [0, 1], s, ["a", "b", "z"])
  with pytest.raises(ValueError, match=r"different class lists.*2: 'c' vs 'z'"):
    fuse_scores.fuse([str(a), str(other_classes)])
  other_labels = _write_run(tmp_path / "D", ["v0", "v1"], [0, 2], s, names)
  with pytest.raises(ValueError, match=r"different labels.*'v1'"):
    fuse_scores.fuse([str(a), str(other_labels)])
  with pytest.raises(FileNotFoundError, match="no predictions file"):
    fuse_scores.fuse([str(a), str(tmp_path / "missing")])
  proc = _tool("dsanet_jax.tools.fuse_scores", str(a), str(other_videos), "--json")
  assert proc.returncode != 0 and "different video sets" in proc.stderr
