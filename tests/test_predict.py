"""The command-line round trip: PyTorch checkpoint -> `convert` -> `predict` -> reference logits."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dsanet_jax import predict
from dsanet_jax.convert import torch_reference as tr

from .conftest import REPO

CONFIG = """
from configs.base import get_base_config


def get_config():
  c = get_base_config()
  c.model.depth = 18
  c.model.base_width = 8
  c.model.num_classes = 7
  c.model.aggregation = "dsa"
  c.model.insert_freq = (0, (0, 1), (0, 1), 0)
  return c
"""


def run(*args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.run(
    [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout}\n{proc.stderr}"
  return proc


def test_convert_then_predict_cli(tmp_path):
  (tmp_path / "cfg.py").write_text(CONFIG)
  ref = tr.randomize_(
    tr.build_reference(18, 7, aggregation="dsa", insert_freq=(0, (0, 1), (0, 1), 0), base_width=8)
  ).eval()
  torch.save(
    {"meta": {"epoch": 100}, "state_dict": ref.state_dict(), "optimizer": {}},
    tmp_path / "epoch_100.pth",
  )
  names = [f"class_{i}" for i in range(7)]
  (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
  run(
    "dsanet_jax.convert",
    f"--torch_checkpoint={tmp_path / 'epoch_100.pth'}",
    f"--config={tmp_path / 'cfg.py'}",
    f"--output={tmp_path / 'converted'}",
    f"--class_names={tmp_path / 'names.txt'}",
  )
  meta = json.loads((tmp_path / "converted" / "metadata.json").read_text())
  assert meta["class_names"] == names and meta["config"]["depth"] == 18
  assert meta["source"]["layout"] == "dsanet"

  x = np.random.RandomState(0).randn(3, 4, 4, 32, 32, 3).astype(np.float32)  # N=3, T=4 at 32^2
  np.save(tmp_path / "x.npy", x)
  proc = run(
    "dsanet_jax.predict",
    f"--config={tmp_path / 'cfg.py'}",
    f"--checkpoint={tmp_path / 'converted'}",
    f"--input_npy={tmp_path / 'x.npy'}",
    f"--output_npy={tmp_path / 'logits.npy'}",
    "--batch_size=2",  # 2 batches, the last one padded
  )
  assert "top-1 class_" in proc.stdout  # the stored class names are used
  got = np.load(tmp_path / "logits.npy")
  with torch.no_grad():
    want = ref(torch.from_numpy(x).permute(0, 1, 5, 2, 3, 4).contiguous()).numpy()
  assert got.shape == (3, 7) and got.dtype == np.float32
  assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


def test_predict_input_checks():
  x = np.zeros((2, 4, 4, 32, 32, 3), np.float64)
  assert predict.check_input(x, 4).dtype == np.float32
  with pytest.raises(ValueError, match="U=4 snippets"):
    predict.check_input(x, 8)
  with pytest.raises(ValueError, match="channels last"):
    predict.check_input(np.zeros((2, 4, 3, 4, 32, 32), np.float32), 4)
  with pytest.raises(ValueError, match="already normalised"):
    predict.check_input(x.astype(np.uint8), 4)


def test_class_names_checkpoint_then_file_then_dataset_then_index(tmp_path, caplog):
  from configs.base import get_base_config
  from dsanet_jax.train import inference

  cfg = get_base_config()
  cfg.model.num_classes = 3
  cfg.data.name = "kinetics400"
  cfg.data.data_dir = str(tmp_path)  # not prepared there
  assert inference.resolve_class_names(cfg, ["x", "y", "z"], None) == ["x", "y", "z"]
  (tmp_path / "names.txt").write_text("a\nb\nc\n")
  assert inference.resolve_class_names(cfg, None, str(tmp_path / "names.txt")) == ["a", "b", "c"]
  with pytest.raises(ValueError, match=r"2 class names, but model\.num_classes=3"):
    (tmp_path / "two.txt").write_text("a\nb\n")
    inference.resolve_class_names(cfg, None, str(tmp_path / "two.txt"))
  with caplog.at_level("WARNING"):
    names = inference.resolve_class_names(cfg, None, None)
  assert names == ["class_0", "class_1", "class_2"]
  assert "classes are named by index" in caplog.text
