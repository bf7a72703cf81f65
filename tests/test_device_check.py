"""`tools.device_check` in its reduced form (CPU): every part runs, every figure is finite with a
unit, and each parity passes its tolerance."""

import json
import math

import pytest

from configs.kinetics400 import dsa_i3d_r50
from dsanet_jax.tools import device_check


@pytest.mark.slow
def test_device_check_reduced_form(tmp_path):
  r = device_check.check(
    dsa_i3d_r50.get_config(), str(tmp_path), reduced=True, data_dir=str(tmp_path / "tfds")
  )
  on_disk = json.loads((tmp_path / device_check.JSON_FILE).read_text())
  assert on_disk["parts"].keys() == {"benchmark", "parity", "export", "input"}
  assert on_disk["form"] == "reduced" and on_disk["devices"]["jax_device_kind"]
  assert on_disk["versions"]["jax"] != "absent"
  assert r["failed"] == [], {k: p.get("error") for k, p in r["parts"].items()}
  for name, part in on_disk["parts"].items():
    assert "error" not in part and "skipped" not in part, (name, part)
    figs = device_check.figures(part)
    assert figs, name
    for key, f in figs:
      assert math.isfinite(f["value"]) and f["unit"] and f["compared"], (name, key, f)
  b = on_disk["parts"]["benchmark"]
  assert {"float32", "bfloat16"} <= b.keys()
  assert b["bfloat16"]["jax_step_s"]["value"] > 0 and b["float32"]["torch_step_s"]["value"] > 0
  for name in ("parity", "export"):
    part = on_disk["parts"][name]
    assert part["passed"] is True, part
    assert all(f["value"] < part["tolerance"] for _, f in device_check.figures(part))
  inp = on_disk["parts"]["input"]
  assert 0 <= inp["data_wait_share"]["value"] <= 1
  text = (tmp_path / device_check.TEXT_FILE).read_text()
  assert "parity.eval_logits_rel" in text and "input.data_wait_share" in text
