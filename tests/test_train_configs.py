"""Every experiment config loads, locks and is consistent (views, batches, flip, docstring)."""

import importlib
import pathlib

import pytest

from dsanet_jax.data import pipeline
from dsanet_jax.models import make_inserts
from dsanet_jax.train import evaluator

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(
  p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
  for p in (REPO / "configs").rglob("*.py")
  if p.name not in ("__init__.py", "base.py")
)
VARIANTS = {
  "configs.mini_kinetics200.dsa_i3d_r50_ablation": [
    "pos=I",
    "pos=IV",
    "alpha=8",
    "stage=res2",
    "beta=1/2",
    "blocks=res34",
    "blocks=res23",
  ],
  "configs.mini_kinetics200.i3d_r18": ["16"],
  "configs.mini_kinetics200.tsm_r50": ["dsa"],
  "configs.something_something_v1.dsa_i3d_r50": ["i3d"],
}


def _cases():
  for name in CONFIGS:
    yield name, None
    for arg in VARIANTS.get(name, ()):
      yield name, arg


@pytest.mark.parametrize("name,arg", list(_cases()))
def test_config_is_consistent(name, arg):
  mod = importlib.import_module(name)
  assert "Command:" in mod.__doc__ and "python main.py" in mod.__doc__, name
  c = mod.get_config(arg) if arg is not None else mod.get_config()
  c.lock()
  with pytest.raises(AttributeError):
    c.train.nonexistent_field = 1
  make_inserts(c.model)  # the insertion map fits the depth
  u = c.model.num_segments
  assert c.eval.num_segments % u == 0 and c.eval.val_num_segments % u == 0
  g = c.model.bn_group_size
  assert g == 0 or c.train.global_batch_size % g == 0
  if "something" in c.data.name:
    assert not c.data.flip or c.data.flip_label_pairs
  assert c.data.train_crop in pipeline.TRAIN_CROPS
  assert c.eval.grouping in evaluator.GROUPINGS
  assert c.data.fps is None or c.data.fps > 0


def test_ablation_rows_differ_as_the_table_says():
  abl = importlib.import_module("configs.mini_kinetics200.dsa_i3d_r50_ablation")
  assert abl.get_config("pos=III").model.insert_place == "res_3"
  assert abl.get_config("alpha=4").model.dsa.alpha == 4
  assert abl.get_config("beta=1/4").model.dsa.beta == 0.25
  f = abl.get_config("blocks=res34").model.insert_freq
  assert f == (0, (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), 0)  # the original's 5-module map
  assert abl.get_config("stage=res5").model.insert_freq == (0, 0, 0, (0, 1, 0))
  with pytest.raises(ValueError, match="expected pos"):
    abl.get_config("pos=V")
