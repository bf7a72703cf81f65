"""MAC counting from the compiled HLO, and the model_info tool."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from configs.base import DSA_R50_INSERT_FREQ, get_base_config
from dsanet_jax.models.flops import count_gmacs, hlo_macs
from tests.conftest import REPO


@pytest.mark.parametrize("stage", ["lowered", "compiled"])
def test_hlo_macs_conv_and_dot(stage):
  def f(x, k, w):
    with jax.named_scope("layer2"):
      y = jax.lax.conv_general_dilated(
        x, k, (2, 2), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC")
      )
    with jax.named_scope("cls_head"):
      return y.mean((1, 2)) @ w

  args = (
    jax.ShapeDtypeStruct((2, 16, 16, 5), jnp.float32),
    jax.ShapeDtypeStruct((3, 3, 5, 7), jnp.float32),
    jax.ShapeDtypeStruct((7, 11), jnp.float32),
  )
  lowered = jax.jit(f).lower(*args)
  if stage == "lowered":
    text = lowered.as_text(dialect="hlo", debug_info=True)
  else:
    text = lowered.compile().as_text()
  macs = hlo_macs(text)
  assert macs == {"layer2": 2 * 8 * 8 * 7 * 3 * 3 * 5, "cls_head": 2 * 11 * 7}


@pytest.mark.parametrize(
  "agg,freq,want,tol",
  [
    ("dsa", DSA_R50_INSERT_FREQ, 83.48, 0.01),  # the original's conv+matmul count (spec §7.3)
    ("v4d", (0, (0, 1, 0, 1), 0, 0), 143.0, 0.02),  # the paper's table (i)
  ],
)
def test_gmacs_r50_acceptance(agg, freq, want, tol):
  c = get_base_config().model
  c.depth, c.aggregation, c.insert_freq = 50, agg, freq
  g = count_gmacs(c, num_frames=4, crop_size=224)
  assert abs(g["gmacs_per_view"] - want) / want < tol, g
  assert g["input_shape"] == [4, 4, 224, 224, 3]
  assert abs(sum(g["per_stage"].values()) - g["gmacs_per_view"]) < 1e-6
  assert g["per_stage"]["layer1"] > 0 and g["per_stage"]["cls_head"] > 0


def test_model_info_tool_json():
  cmd = [
    sys.executable,
    "-m",
    "dsanet_jax.tools.model_info",
    "--config=configs/kinetics400/dsa_i3d_r18.py",
    "--config.data.crop_size=112",
    "--json",
  ]
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True, timeout=300)
  info = json.loads(out.stdout)
  assert info["params"] == 32_025_696
  assert info["input_shape"] == [4, 4, 112, 112, 3]
  assert abs(info["gmacs_per_view"] - 15.223) / 15.223 < 0.01  # spec §7.3, U4 x T4 @ 112
