"""`tools.device_check` in its reduced form (CPU), run as the CLI: every part runs, every figure is
finite with a unit, each parity passes its tolerance, the table is printed and written."""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from dsanet_jax.tools import device_check

REPO = pathlib.Path(__file__).resolve().parents[1]

# One CPU device, and XLA:CPU's LLVM passes at their cheapest: the reduced form's time is mostly
# compilation (six programs), and its step speeds are not figures anyone reads.
XLA_FLAGS = (
  "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0 "
  "--xla_llvm_disable_expensive_passes=true"
)


@pytest.mark.slow
def test_device_check_reduced_form(tmp_path):
  out = tmp_path / "out"
  env = dict(os.environ, XLA_FLAGS=XLA_FLAGS)
  cmd = [
    sys.executable,
    "-m",
    "dsanet_jax.tools.device_check",
    f"--out={out}",
    # the test run's one build of the embedded order_of_events (conftest's temp home)
    f"--data_dir={os.environ['TFDS_DATA_DIR']}",
  ]
  proc = subprocess.run(
    cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  on_disk = json.loads((out / device_check.JSON_FILE).read_text())
  assert on_disk["parts"].keys() == {"benchmark", "parity", "export", "input"}
  assert on_disk["form"] == "reduced" and on_disk["devices"]["jax_device_kind"]
  assert on_disk["versions"]["jax"] != "absent"
  assert on_disk["failed"] == [], {k: p.get("error") for k, p in on_disk["parts"].items()}
  for name, part in on_disk["parts"].items():
    assert "error" not in part and "skipped" not in part, (name, part)
    figs = device_check.figures(part)
    assert figs, name
    for key, f in figs:
      assert math.isfinite(f["value"]) and f["unit"] and f["compared"], (name, key, f)
  b = on_disk["parts"]["benchmark"]
  assert b.keys() >= {"float32", "bfloat16"}
  for dtype in ("float32", "bfloat16"):
    for key in ("jax_step_s", "torch_step_s", "ratio_step", "jax_gflops", "jax_compile_s"):
      assert b[dtype][key]["value"] > 0, (dtype, key)
  for name in ("parity", "export"):
    part = on_disk["parts"][name]
    assert part["passed"] is True, part
    assert all(f["value"] < part["tolerance"] for _, f in device_check.figures(part))
  inp = on_disk["parts"]["input"]
  for key in ("synthetic_step_s", "host_fed_step_s", "h2d_s", "h2d_gb_s", "fed_step_s"):
    assert inp[key]["value"] > 0, key
  assert "pipeline_skipped" not in inp  # TensorFlow imports here: the tf.data half ran
  assert 0 <= inp["data_wait_share"]["value"] <= 1
  assert inp["input_bound"] is (inp["data_wait_share"]["value"] > 0.1)
  text = (out / device_check.TEXT_FILE).read_text()
  assert text in proc.stdout  # the CLI prints the table it writes
  for row in (
    "benchmark.float32.ratio_step",
    "benchmark.bfloat16.ratio_step",
    "parity.eval_logits_rel",
    "parity.passed",
    "export.logits_rel",
    "export.passed",
    "input.h2d_gb_s",
    "input.data_wait_share",
    "input.input_bound",
  ):
    assert row in text, row
  assert "failed: none" in text
