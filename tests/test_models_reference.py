"""SE+I3D, TSM and DSA at position IV (res_4): whole-network numbers against independent references.

The backbone is the PyTorch reference of the original code (`convert/torch_reference.py`) with
random weights and BatchNorm statistics, converted into our model. The SE module and TSM's shift
have no original-code counterpart in the reference: they are written here in PyTorch, from their
definitions (SENet; TSM's residual shift), and hooked into the reference's blocks at the positions
our blocks use them (`torch_reference.DSABlock` calls any module at a block position).
"""

import numpy as np
import pytest
import torch
from flax import nnx

from configs.base import DSA_R50_INSERT_FREQ, get_base_config
from dsanet_jax.convert import port, torch_checkpoint
from dsanet_jax.convert import torch_reference as tr
from dsanet_jax.models import build_model

R18_SE_FREQ = (0, (0, 1), (0, 1), 0)


def model_cfg(**kw):
  c = get_base_config().model
  c.update(dict(depth=18, base_width=8, num_classes=5, insert_freq=R18_SE_FREQ))
  c.update(kw)
  return c


class TorchSE(torch.nn.Module):
  """x * sigmoid(W2 relu(W1 mean_{T,H,W}(x) + b1) + b2) on [B, C, T, H, W] (SENet)."""

  def __init__(self, se):
    super().__init__()
    self.w1, self.b1 = (torch.tensor(np.asarray(p[...])) for p in (se.fc1.kernel, se.fc1.bias))
    self.w2, self.b2 = (torch.tensor(np.asarray(p[...])) for p in (se.fc2.kernel, se.fc2.bias))

  def forward(self, x):
    s = x.mean(dim=(2, 3, 4))
    g = torch.sigmoid(torch.relu(s @ self.w1 + self.b1) @ self.w2 + self.b2)
    return x * g[:, :, None, None, None]


class TorchShift(torch.nn.Module):
  """TSM on [N*U, C, T, H, W]: over each video's U*T frames, channels [0, C/d) take the next
  frame's values, [C/d, 2C/d) the previous frame's, zero at the ends; the rest are kept."""

  def __init__(self, num_segments, shift_div):
    super().__init__()
    self.u, self.div = num_segments, shift_div

  def forward(self, x):
    nu, c, t, h, w = x.shape
    v = x.reshape(nu // self.u, self.u, c, t, h, w).permute(0, 2, 1, 3, 4, 5)
    v = v.reshape(nu // self.u, c, self.u * t, h, w)
    fold = c // self.div
    out = v.clone()
    out[:, :fold] = 0
    out[:, :fold, :-1] = v[:, :fold, 1:]
    out[:, fold : 2 * fold] = 0
    out[:, fold : 2 * fold, 1:] = v[:, fold : 2 * fold, :-1]
    out = out.reshape(nu // self.u, c, self.u, t, h, w).permute(0, 2, 1, 3, 4, 5)
    return out.reshape(nu, c, t, h, w)


def _hook(ref, cfg, ours, kind):
  """Wraps the reference's blocks in `DSABlock`s calling our SE (or the shift) where we have it."""
  for s in range(4):
    layer = getattr(ref.backbone, f"layer{s + 1}")
    for b, blk in enumerate(getattr(ours.backbone, f"layer{s + 1}")):
      if kind == "se" and blk.se is not None:
        layer[b] = tr.DSABlock(layer[b], TorchSE(blk.se), cfg.insert_place)
      elif kind == "tsm":
        assert blk.temporal_shift
        layer[b] = tr.DSABlock(layer[b], TorchShift(cfg.num_segments, cfg.tsm.shift_div), "res_1")


def _pair(case):
  """(config, our model, the reference with the same weights, our model without the module under
  test (None for DSA)) for one case."""
  if case == "dsa_res_4":
    cfg = model_cfg(depth=50, base_width=4, insert_freq=DSA_R50_INSERT_FREQ, insert_place="res_4")
    ref_cfg = cfg
  elif case == "se":
    cfg = model_cfg(aggregation="se", insert_place="res_2")
    cfg.se.reduction = 4
    ref_cfg = model_cfg(aggregation="tsn", insert_freq=(0, 0, 0, 0))
  else:  # tsm: the 2D ResNet (no inflation) with the shift at every block's branch input
    cfg = model_cfg(backbone="tsm_resnet", aggregation="tsn", inflate_freq=(0, 0, 0, 0))
    ref_cfg = model_cfg(aggregation="tsn", inflate_freq=(0, 0, 0, 0))
  ref = tr.randomize_(tr.build_reference_from_config(ref_cfg), seed=1).eval()
  sd = {k: torch_checkpoint.to_numpy(v) for k, v in ref.state_dict().items()}
  ours = build_model(cfg, rngs=nnx.Rngs(params=2, dropout=3))
  plain = None
  if case == "dsa_res_4":
    port.convert_state_dict(sd, ours, cfg)
  else:  # the backbone and head from the reference; SE keeps its own random init
    plain = build_model(ref_cfg, rngs=nnx.Rngs(params=2, dropout=3))
    port.convert_state_dict(sd, plain, ref_cfg)
    nnx.update(ours, nnx.state(plain, (nnx.Param, nnx.BatchStat)))
    _hook(ref, cfg, ours, case)
  return cfg, ours, ref, plain


@pytest.mark.parametrize("case", ["se", "tsm", "dsa_res_4"])
def test_network_matches_reference(case):
  """Eval-mode logits and train-mode backbone features (batch statistics) agree to 1e-4."""
  cfg, ours, ref, plain = _pair(case)
  x = np.random.RandomState(0).randn(2, cfg.num_segments, 2, 32, 32, 3).astype(np.float32)
  xt = torch.from_numpy(x).permute(0, 1, 5, 2, 3, 4).contiguous()
  with torch.no_grad():
    want = ref(xt).numpy()
    ref.train()
    want_f = ref.features(xt).permute(0, 2, 3, 4, 1).numpy()
  logits = nnx.jit(lambda m, v: m(v))
  features = nnx.jit(lambda m, v: m.features(v))
  ours.eval()
  got = np.asarray(logits(ours, x))
  ours.train()
  got_f = np.asarray(features(ours, x))
  for g, w in ((got, want), (got_f, want_f)):
    assert g.shape == w.shape
    assert np.abs(g - w).max() / np.abs(w).max() < 1e-4
  if plain is not None:  # the module under test matters: without it the logits are far off
    plain.eval()
    assert np.abs(np.asarray(logits(plain, x)) - want).max() / np.abs(want).max() > 1e-2
