"""A run's files on `gs://`, against a real GCS API (the gcp-storage-emulator package; issue 15).

The emulator (tests/gcs_emulator.py) runs as a subprocess on a free port, file-backed under tmp;
gcsfs (epath's `gs://` backend here) reaches it through STORAGE_EMULATOR_HOST, TensorStore
(Orbax's checkpoints) through TENSORSTORE_GCS_HTTP_URL.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from dsanet_jax.common import paths
from dsanet_jax.tools import fuse_scores, plot_runs, results_table
from tests.conftest import TINY_MODEL
from tests.gcs_emulator import Emulator
from tests.test_tools_viz import _write_run

REPO = pathlib.Path(__file__).resolve().parents[1]
BUCKET = "bkt"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """A running emulator holding an empty bucket `bkt`; this process's clients point at it."""
  emu = Emulator(tmp_path_factory.mktemp("gcs"), BUCKET)
  emu.start()
  old = {k: os.environ.get(k) for k in emu.env()}
  os.environ.update(emu.env())
  yield emu
  emu.stop()
  for k, v in old.items():
    if v is None:
      os.environ.pop(k)
    else:
      os.environ[k] = v


def _listing(prefix: str) -> list[str]:
  """Every object under `prefix`, relative to it."""
  out, todo = [], [epath.Path(prefix)]
  while todo:
    for p in todo.pop().iterdir():
      (todo if p.is_dir() else out).append(p)
  return sorted(str(p)[len(prefix) + 1 :] for p in out)


def test_run_files_live_in_the_bucket_and_tools_read_them(gcs, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  run = paths.resolve(f"gs://{BUCKET}/runs/run_dsa")
  _write_run(run, resumed=True, base_width=8, aggregation="dsa")  # JsonlWriter + write_results
  assert _listing(str(run)) == ["eval/predictions.npz", "eval/results.json", "metrics.jsonl"]
  assert not (tmp_path / "gs:").exists()
  loaded = plot_runs.load_run(str(run))
  assert loaded.path == str(run) and loaded.config["model"]["aggregation"] == "dsa"
  cells = [c.strip() for c in results_table.results_table([str(run)]).splitlines()[2].split("|")]
  assert cells[1:5] == ["run_dsa (dsa i3d_resnet18 w8)", "4x4", "8x3", "87.5"]
  fused = fuse_scores.load_run(str(run))
  assert fused["ids"] == ["v0"] and fused["class_names"] == ["a-b", "b-a", "c-d", "d-c"]
  out = f"gs://{BUCKET}/runs/curves.png"
  plot_runs.plot_runs([str(run)], out, ["train/loss"])
  assert epath.Path(out).read_bytes()[:4] == b"\x89PNG"
  assert not (tmp_path / "gs:").exists()


def test_jsonl_writer_resume_truncates_in_the_bucket(gcs):
  from dsanet_jax.train.logging import read_jsonl
  from dsanet_jax.train.writers import JsonlWriter

  path = f"gs://{BUCKET}/resume/metrics.jsonl"
  w = JsonlWriter(path)
  for s in (1, 2, 3, 4):
    w.write_scalars(s, {"train/loss": float(s)})
  w.close()
  w = JsonlWriter(path, resume_step=2)  # a run resumed from step 2 replays 3 and 4
  w.write_scalars(3, {"train/loss": 30.0})
  w.close()
  assert [(r["step"], r["train/loss"]) for r in read_jsonl(path)] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_log_file_in_the_bucket_keeps_every_line_at_exit(gcs, tmp_path):
  """log.txt on gs:// (rewritten whole, no append there): the last lines reach the bucket at exit,
  with no traceback from the storage client's own exit clean-up."""
  code = (
    "from absl import logging\n"
    "from dsanet_jax.train import logging as log_lib\n"
    "log_lib.setup_console()\n"
    f"log_lib.add_log_file('gs://{BUCKET}/logrun')\n"
    "logging.info('first line')\n"
    "logging.info('last line')\n"
  )
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
  p = subprocess.run(
    [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
  )
  assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
  text = epath.Path(f"gs://{BUCKET}/logrun/log.txt").read_text()
  assert "first line" in text and "last line" in text
  assert not (tmp_path / "gs:").exists()


def _scalars(event_file: epath.Path, tmp_path: pathlib.Path) -> list[tuple[int, str, float]]:
  """(step, tag, value) of every scalar in a TensorBoard event file (read from a local copy)."""
  import tensorflow as tf

  local = tmp_path / event_file.name
  local.write_bytes(event_file.read_bytes())
  return [
    (e.step, v.tag, float(tf.make_ndarray(v.tensor)))
    for e in tf.compat.v1.train.summary_iterator(str(local))
    for v in e.summary.value
  ]


def test_tensorboard_events_reach_the_bucket(gcs, tmp_path, monkeypatch):
  """TensorBoard events of a gs:// workdir: staged locally, uploaded at flush and close (the
  events so far are in the bucket mid-run), the staging folder removed at close."""
  from dsanet_jax.train import writers

  staging = tmp_path / "staging"
  staging.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(staging))
  monkeypatch.chdir(tmp_path)
  w = writers.create_writer(f"gs://{BUCKET}/tbrun", is_main=True)
  w.write_scalars(1, {"train/loss": 0.5})
  w.write_scalars(2, {"train/loss": 0.25})
  w.flush()
  (events,) = epath.Path(f"gs://{BUCKET}/tbrun/tensorboard").iterdir()
  assert events.name.startswith("events.out.tfevents.")
  assert _scalars(events, tmp_path) == [(1, "train/loss", 0.5), (2, "train/loss", 0.25)]
  w.write_scalars(3, {"train/loss": 0.125})
  w.close()
  assert [s for s, _, _ in _scalars(events, tmp_path)] == [1, 2, 3]
  assert list(staging.iterdir()) == []
  assert not (tmp_path / "gs:").exists()


# ========================================================== the default config, trained on gs://

TINY = [
  f"--config={REPO / 'configs' / 'default.py'}",
  *TINY_MODEL,
  "--config.eval.batch_size=64",
  "--config.train.global_batch_size=8",
  "--config.train.log_every_steps=1",
  "--config.train.num_steps=8",
  "--config.checkpoint.every_steps=2",
  "--config.checkpoint.async_save=True",
  "--config.train.log_gmacs=False",
]


def _main(workdir: str, *extra: str) -> list[str]:
  data_dir = os.environ["TFDS_DATA_DIR"]  # the test run's one build, in its temporary home
  return [
    sys.executable, str(REPO / "main.py"), f"--workdir={workdir}", *TINY,
    f"--config.data.data_dir={data_dir}", *extra,
  ]  # fmt: skip


def _env() -> dict[str, str]:
  return dict(
    os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=str(REPO)
  )


def _run(cwd: pathlib.Path, workdir: str, *extra: str) -> subprocess.CompletedProcess:
  p = subprocess.run(
    _main(workdir, *extra), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600
  )
  assert p.returncode == 0, p.stderr[-4000:]
  return p


def _state(step_dir: str) -> list[tuple[str, np.ndarray]]:
  tree = ocp.PyTreeCheckpointer().restore(f"{step_dir}/state")
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  assert len(leaves) > 10
  return [(jax.tree_util.keystr(k), np.asarray(v)) for k, v in leaves]


def _sigterm_at_step_3(
  run: str, cwd: pathlib.Path, ref: pathlib.Path
) -> tuple[str, subprocess.Popen]:
  """Starts the run; once its first step is logged (its programs compiled and in the test run's
  XLA cache) starts the uninterrupted reference run in `ref`; sends SIGTERM once step 3 is logged.
  Returns the console (exit status 0 asserted) and the reference process, still running."""
  console = cwd / "console.txt"
  ref_proc = None
  with open(console, "w") as out:
    proc = subprocess.Popen(
      _main(run), cwd=cwd, env=_env(), stdout=out, stderr=subprocess.STDOUT, text=True
    )
    try:
      t0 = time.time()
      while "step 3/8" not in console.read_text():
        assert proc.poll() is None, console.read_text()[-3000:]
        assert time.time() - t0 < 900, "no step 3 within 900 s:\n" + console.read_text()[-3000:]
        if ref_proc is None and "step 1/8" in console.read_text():
          with open(cwd / "reference.txt", "w") as ref_out:
            ref_proc = subprocess.Popen(
              _main(str(ref)), cwd=cwd, env=_env(), stdout=ref_out, stderr=subprocess.STDOUT
            )
        time.sleep(0.05)
      proc.send_signal(signal.SIGTERM)
      rc = proc.wait(timeout=120)
    except BaseException:
      if ref_proc is not None:
        ref_proc.kill()
        ref_proc.wait()
      raise
    finally:
      proc.kill()  # a no-op once it has exited
      proc.wait()
  text = console.read_text()
  assert rc == 0 and "Traceback" not in text, text[-3000:]
  assert ref_proc is not None
  return text, ref_proc


def _check_bucket(run: str) -> None:
  """The bucket holds the whole run: checkpoints, logs, metrics, events, results, export."""
  listing = _listing(run)
  print("\n".join(listing))  # the bucket after the run (pytest -s shows it)
  files = [s for s in listing if not s.startswith(("checkpoints/", "tensorboard/"))]
  assert files == [
    "eval/predictions.npz", "eval/results.json", "export/model.jax", "export/signature.json",
    "log.txt", "metrics.jsonl",
  ], files  # fmt: skip
  steps = {s.split("/")[1] for s in listing if s.startswith("checkpoints/")}
  assert steps == {"6", "8"}, steps  # the last two (checkpoint.keep), each committed
  for step in steps:
    for f in ("commit_success.txt", "meta/metadata", "state/manifest.ocdbt"):
      assert f"checkpoints/{step}/{f}" in listing, (step, f)
  events = [s for s in listing if s.startswith("tensorboard/")]
  assert len(events) == 2 and all(  # one events file per process run (stopped, resumed)
    s.startswith("tensorboard/events.out.tfevents.") for s in events
  ), events
  log = epath.Path(f"{run}/log.txt").read_text()
  assert "pre-empted: checkpoint saved" in log and "resumed from" in log
  sig = json.loads(epath.Path(f"{run}/export/signature.json").read_text())
  assert sig["step"] == 8 and sig["source"] == f"{run}/checkpoints@8"
  records = [json.loads(s) for s in epath.Path(f"{run}/metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if "train/loss" in r] == list(range(1, 9))  # each step once


@pytest.mark.slow
def test_default_config_on_gs_sigterm_resume_eval_export_tools(gcs, tmp_path):
  """The default config (tiny) with --workdir=gs://: SIGTERMed, resumed bit-identical to an
  uninterrupted local run, evaluated and exported; the tools read the run from the bucket, which
  holds all of it; no local `gs:` folder anywhere."""
  run = f"gs://{BUCKET}/run"
  ref = tmp_path / "reference"  # the same run uninterrupted, on local disk, alongside
  ref_proc = None
  try:
    text, ref_proc = _sigterm_at_step_3(run, tmp_path, ref)
    print(text)  # the console of the SIGTERMed run (pytest -s shows it)
    assert "pre-empted: checkpoint saved at step" in text, text[-3000:]
    stopped = int(text.split("pre-empted: checkpoint saved at step ")[1].split()[0])
    assert 3 <= stopped < 8
    assert not epath.Path(f"{run}/eval/results.json").exists()  # stopped, not finished
    p = _run(tmp_path, run)  # resumes, trains to the end, evaluates
    print(p.stderr)  # the console of the resumed run
    print(_run(tmp_path, run, "--mode=export").stderr)
    assert ref_proc.wait(timeout=600) == 0, (tmp_path / "reference.txt").read_text()[-3000:]
  finally:
    if ref_proc is not None:
      ref_proc.kill()  # a no-op once it has exited
      ref_proc.wait()
  assert f"at step {stopped}" in p.stderr and f"{run}/eval/results.json" in p.stderr, p.stderr
  a, b = _state(str(ref / "checkpoints" / "8")), _state(f"{run}/checkpoints/8")
  assert [k for k, _ in a] == [k for k, _ in b]
  for (k, x), (_, y) in zip(a, b):
    np.testing.assert_array_equal(x, y, err_msg=k)
  _check_bucket(run)

  assert plot_runs.load_run(run).path == run
  plot_runs.plot_runs([run], f"{run}/curves.png", ["train/loss"])
  assert epath.Path(f"{run}/curves.png").read_bytes()[:4] == b"\x89PNG"
  row = results_table.results_table([run]).splitlines()[2]
  top1 = json.loads(epath.Path(f"{run}/eval/results.json").read_text())["top1"]
  assert f"{100 * top1:.1f}" in row, row
  for where in (tmp_path, REPO):
    assert not (where / "gs:").exists(), where
