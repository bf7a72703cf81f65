"""A run's files on `gs://`, against a real GCS API (the gcp-storage-emulator package; issue 15).

The emulator runs as a subprocess on a free port, file-backed under tmp; gcsfs (epath's `gs://`
backend here) reaches it through STORAGE_EMULATOR_HOST.
"""

import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

# Before gcsfs is imported: no zonal-bucket probe (the emulator has no storage-control API) and
# no GCE metadata-server probe for credentials (each costs seconds here).
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
os.environ.setdefault("NO_GCE_CHECK", "true")

import pytest
from etils import epath

from dsanet_jax.common import paths
from dsanet_jax.tools import fuse_scores, plot_runs, results_table
from tests.test_tools_viz import _write_run

BUCKET = "bkt"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """STORAGE_EMULATOR_HOST of a running emulator holding an empty bucket `bkt`."""
  port, store = _free_port(), tmp_path_factory.mktemp("gcs")
  env = dict(os.environ, STORAGE_BASE=str(store), STORAGE_DIR="store")
  cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1"]
  proc = subprocess.Popen(
    [*cmd, f"--port={port}", f"--default-bucket={BUCKET}"],
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  url = f"http://127.0.0.1:{port}"
  for _ in range(200):
    try:
      urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}")
      break
    except (urllib.error.URLError, ConnectionError):
      time.sleep(0.05)
  else:
    proc.kill()
    pytest.fail("the GCS emulator did not start")
  old = os.environ.get("STORAGE_EMULATOR_HOST")
  os.environ["STORAGE_EMULATOR_HOST"] = url
  yield url
  proc.terminate()
  proc.wait()
  if old is None:
    os.environ.pop("STORAGE_EMULATOR_HOST")
  else:
    os.environ["STORAGE_EMULATOR_HOST"] = old


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
  from dsanet_jax.train.logging import JsonlWriter, read_jsonl

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
