"""main.py start-up validation: config mistakes fail in one line, exit 2, before JAX works or the
workdir is touched (issue 12 item 8)."""

import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def _main(*args: str) -> tuple[subprocess.CompletedProcess, float]:
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
  t0 = time.time()
  p = subprocess.run(
    [sys.executable, str(REPO / "main.py"), *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  return p, time.time() - t0


def _one_error_line(p: subprocess.CompletedProcess) -> str:
  assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
  assert "Traceback" not in p.stderr, p.stderr[-3000:]
  lines = [s for s in p.stderr.splitlines() if s.startswith("error:")]
  assert len(lines) == 1, p.stderr[-3000:]
  assert "xla_bridge" not in p.stderr  # no JAX backend was started
  return lines[0]


def test_wrong_config_path(tmp_path):
  w = tmp_path / "w"
  p, _ = _main("--config=configs/kinetics400/no_such.py", f"--workdir={w}")
  assert _one_error_line(p) == "error: --config=configs/kinetics400/no_such.py: no such file"
  assert not w.exists()


def test_misspelt_override_names_the_field_and_the_fix(tmp_path):
  w = tmp_path / "w"
  p, _ = _main("--config=configs/default.py", f"--workdir={w}", "--config.train.global_batchsize=8")
  line = _one_error_line(p)
  assert line == (
    "error: --config.train.global_batchsize: no such field; did you mean global_batch_size?"
  ), line
  assert not w.exists()
  p, _ = _main("--config=configs/default.py", f"--workdir={w}", "--config.trian.num_steps=8")
  assert "--config.trian.num_steps: no such field; did you mean train?" in _one_error_line(p)


def test_bad_override_value_is_one_line(tmp_path):
  p, _ = _main("--config=configs/default.py", f"--workdir={tmp_path}", "--config.train.num_steps=x")
  assert "--config.train.num_steps=x" in _one_error_line(p)


def test_data_dir_without_the_dataset(tmp_path):
  w = tmp_path / "w"
  (tmp_path / "empty").mkdir()
  p, _ = _main(
    "--config=configs/kinetics400/dsa_i3d_r18.py",
    f"--workdir={w}",
    f"--config.data.data_dir={tmp_path / 'empty'}",
    "--config.init_from=scratch",
  )
  line = _one_error_line(p)
  assert "kinetics400" in line and "not prepared" in line, line
  assert not w.exists()
