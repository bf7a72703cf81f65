"""Three processes on loopback (jax.distributed, local coordinator), each feeding its own shard.

They train two steps together (global batch over 3 x 1 devices) and evaluate exactly once over
the whole validation split, whose 128 videos split unevenly (43/43/42) over the processes; the
evaluator checks that every video arrives exactly once with all its views.
Wall-clock timeout: a process that loses its peers aborts instead of hanging, and the test kills
everything left after TIMEOUT seconds.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from tests.conftest import TINY_MODEL

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
TIMEOUT = 420
NUM = 3


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_three_processes_train_and_evaluate_exactly_once(tmp_path):
  port = _free_port()
  env = dict(os.environ)
  env.update(
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    TF_CPP_MIN_LOG_LEVEL="2",
    JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla_cache"),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
  )
  procs, logs = [], []
  for i in range(NUM):
    log = open(tmp_path / f"p{i}.log", "w")  # noqa: SIM115
    logs.append(log)
    cmd = [
      sys.executable,
      str(REPO / "main.py"),
      f"--workdir={tmp_path / 'w'}",
      "--config=configs/default.py",
      f"--coordinator_address=127.0.0.1:{port}",
      f"--num_processes={NUM}",
      f"--process_id={i}",
      *TINY_MODEL,
      "--config.eval.batch_size=30",
      "--config.train.global_batch_size=6",
      "--config.train.num_steps=2",
      "--config.train.log_every_steps=1",
      "--config.checkpoint.every_steps=2",
      "--config.train.log_gmacs=False",
    ]
    procs.append(
      subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    )
  try:
    rcs = [p.wait(timeout=TIMEOUT) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
    for log in logs:
      log.close()
  texts = [(tmp_path / f"p{i}.log").read_text() for i in range(NUM)]
  for i, (rc, t) in enumerate(zip(rcs, texts)):
    assert rc == 0, f"process {i} rc {rc}:\n{t[-4000:]}"
  assert "process 1 of 3" in texts[1] and "3 global devices" in texts[0]
  res = json.loads((tmp_path / "w" / "eval" / "results.json").read_text())
  assert res["num_videos"] == 128 and res["step"] == 2
  assert sum(sum(row) for row in res["confusion_matrix"]) == 128
  # the checkpoint has one directory per step with every process's shards committed
  assert (tmp_path / "w" / "checkpoints" / "2").is_dir()
  # only process 0 writes logs
  lines = (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()
  assert sum('"train/loss"' in s for s in lines) == 2
