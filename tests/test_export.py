"""`main.py --mode=export`: model.jax (jax.export) + signature.json, read back with jax alone.

The golden logits are `python -m dsanet_jax.predict --input_npy` on the same model; the exported
file must give them to 1e-5 in a fresh process that imports only jax and numpy.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from dsanet_jax.convert import checkpoint_io
from dsanet_jax.models import build_model, model_rngs

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = ["a", "b", "c", "d", "e"]
CONFIG = """
from configs.base import get_base_config


def get_config():
  c = get_base_config()
  c.model.depth = 18
  c.model.base_width = 4
  c.model.num_classes = 5
  c.model.aggregation = "dsa"
  c.model.insert_freq = (0, (0, 1), (0, 1), 0)
  c.data.num_frames = 2
  c.eval.short_side = 32
  c.eval.crop_size = 32
  return c
"""

READER = r"""
import json, sys
import jax, numpy as np
exp = jax.export.deserialize(open(sys.argv[1] + "/model.jax", "rb").read())
sig = json.load(open(sys.argv[1] + "/signature.json"))
x = np.load(sys.argv[2])
out = {}
for n in (1, x.shape[0]):  # the batch is symbolic: any B
  out[n] = np.asarray(exp.call(x[:n]))
np.save(sys.argv[3], out[x.shape[0]])
np.save(sys.argv[3] + ".first.npy", out[1])
mods = sorted(m.split(".")[0] for m in sys.modules)
print(json.dumps({"flax": "flax" in mods, "dsanet_jax": "dsanet_jax" in mods,
                  "tensorflow": "tensorflow" in mods, "torch": "torch" in mods,
                  "platforms": list(exp.platforms), "in": str(exp.in_avals[0].shape)}))
"""


def _run(*cmd: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", **(env_extra or {}))
  env.pop("XLA_FLAGS", None)
  p = subprocess.run(
    [sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
  )
  assert p.returncode == 0, f"{cmd[:2]} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
  return p


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
  d = tmp_path_factory.mktemp("export")
  (d / "cfg.py").write_text(CONFIG)
  import importlib.util

  spec = importlib.util.spec_from_file_location("cfg", d / "cfg.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = mod.get_config()
  model = build_model(cfg.model, rngs=model_rngs(7))
  # random parameters and BatchNorm statistics (the init has zero heads and unit statistics)
  rng = np.random.RandomState(1)
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  for path, var in nnx.to_flat_state(state):
    v = np.asarray(var.get_value())
    noise = rng.uniform(0.5, 1.5, v.shape) if path[-1] == "var" else rng.normal(0, 0.1, v.shape)
    var.set_value((v * (path[-1] != "var") + noise).astype(np.float32))
  nnx.update(model, state)
  checkpoint_io.save_model(d / "model", model, {"config": cfg.model, "class_names": NAMES})
  return d / "cfg.py", d / "model"


def test_exported_model_matches_predict_in_a_jax_only_process(converted, tmp_path):
  cfg, model = converted
  out = tmp_path / "exp"
  p = _run(
    str(REPO / "main.py"),
    "--mode=export",
    f"--config={cfg}",
    f"--config.init_from={model}",
    f"--export_dir={out}",
  )
  assert f"exported -> {out}" in p.stdout
  sig = json.loads((out / "signature.json").read_text())
  assert sig["input"]["shape"] == ["B", 4, 2, 32, 32, 3] and sig["input"]["dtype"] == "float32"
  assert sig["output"]["shape"] == ["B", 5] and sig["class_names"] == NAMES
  assert sig["input"]["normalisation"]["mean"] == [123.675, 116.28, 103.53]
  assert sig["crop_size"] == 32 and sig["num_segments"] == 4 and sig["num_frames"] == 2
  assert {"cpu", "cuda"} <= set(sig["platforms"])

  x = np.random.RandomState(0).randn(3, 4, 2, 32, 32, 3).astype(np.float32)
  np.save(tmp_path / "x.npy", x)
  _run(
    "-m",
    "dsanet_jax.predict",
    f"--config={cfg}",
    f"--checkpoint={model}",
    f"--input_npy={tmp_path / 'x.npy'}",
    f"--output_npy={tmp_path / 'golden.npy'}",
    "--batch_size=2",
  )
  golden = np.load(tmp_path / "golden.npy")
  (tmp_path / "reader.py").write_text(READER)
  r = _run(str(tmp_path / "reader.py"), str(out), str(tmp_path / "x.npy"), str(tmp_path / "e.npy"))
  info = json.loads(r.stdout.strip().splitlines()[-1])
  assert not info["flax"] and not info["dsanet_jax"] and not info["tensorflow"], info
  assert not info["torch"], info
  assert {"cpu", "cuda"} <= {p.lower() for p in info["platforms"]}, info
  got = np.load(tmp_path / "e.npy")
  assert got.shape == (3, 5) and got.dtype == np.float32
  np.testing.assert_allclose(got, golden, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.load(str(tmp_path / "e.npy") + ".first.npy"), golden[:1], atol=1e-5)
  assert np.abs(golden).max() > 1e-3  # not a degenerate model


def test_export_without_workdir_or_export_dir_is_a_usage_error(converted):
  cfg, _ = converted
  p = subprocess.run(
    [sys.executable, str(REPO / "main.py"), "--mode=export", f"--config={cfg}"],
    cwd=REPO,
    env=dict(os.environ, PYTHONPATH=str(REPO)),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert p.returncode == 2 and "--mode=export needs --workdir" in p.stderr
