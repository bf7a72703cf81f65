"""Weight conversion: parity with the PyTorch reference of the original code, safety, strictness."""

import builtins
import importlib

import numpy as np
import pytest
import torch
from flax import nnx

from configs.base import get_base_config
from dsanet_jax.convert import checkpoint_io, inflate, keymap, port, torch_checkpoint
from dsanet_jax.convert import torch_reference as tr
from dsanet_jax.convert.keymap import ConversionError
from dsanet_jax.convert.torch_checkpoint import CheckpointError
from dsanet_jax.models.resnet import compress_stage_flags

BW = 8  # reduced base width: same shapes across tests, so JAX compiles are shared
R18_FREQ = (0, (0, 1), (0, 1), 0)
R50_FREQ = (0, (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), 0)
CASES = {
  "dsa_i3d_r18": (18, "dsa", R18_FREQ),
  "dsa_i3d_r50": (50, "dsa", R50_FREQ),
  "i3d_r50": (50, "tsn", (0, 0, 0, 0)),
  "v4d_i3d_r18": (18, "v4d", R18_FREQ),
}


def model_config(depth: int, aggregation: str, insert_freq, *, width: int = BW, classes: int = 7):
  c = get_base_config().model
  c.depth, c.aggregation, c.insert_freq = depth, aggregation, insert_freq
  c.base_width, c.num_classes = width, classes
  return c


def reference(cfg, seed: int = 1) -> torch.nn.Module:
  """The original network with random weights and random BatchNorm statistics."""
  return tr.randomize_(tr.build_reference_from_config(cfg), seed=seed).eval()


def numpy_sd(ref: torch.nn.Module) -> dict[str, np.ndarray]:
  return {k: torch_checkpoint.to_numpy(v) for k, v in ref.state_dict().items()}


def video(n: int = 2, t: int = 4, hw: int = 32, seed: int = 0) -> np.ndarray:
  """float32 [N, U=4, T, H, W, 3]."""
  return np.random.RandomState(seed).randn(n, 4, t, hw, hw, 3).astype(np.float32)


def to_torch_video(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(x).permute(0, 1, 5, 2, 3, 4).contiguous()  # [N, U, 3, T, H, W]


def rel(got, want) -> float:
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape, (got.shape, want.shape)
  return float(np.abs(got - want).max() / np.abs(want).max())


def new_model(cfg, seed: int = 3):
  """The model of `cfg` with placeholders for the conversion to fill (no slow initialisation)."""
  return checkpoint_io.abstract_model(cfg, seed)


@pytest.mark.parametrize("case", list(CASES))
def test_parity_with_reference(case, tmp_path):
  """Reference -> saved state_dict -> convert: eval logits and train-mode features agree."""
  cfg = model_config(*CASES[case])
  ref = reference(cfg)
  path = tmp_path / "ckpt.pth"
  torch.save(ref.state_dict(), path)
  model, report = port.convert_checkpoint(path, cfg)
  assert report.source == "dsanet" and not report.fresh
  assert report.inferred["depth"] == cfg.depth
  assert report.inferred["aggregation"] == cfg.aggregation
  x = video()
  with torch.no_grad():
    want = ref(to_torch_video(x)).numpy()
  model.eval()
  got = nnx.jit(lambda m, v: m(v))(model, x)
  assert rel(got, want) < 1e-4
  # Train mode: BatchNorm (DSA's included) on batch statistics; dropout does not touch features.
  ref.train()
  model.train()
  with torch.no_grad():
    want_f = ref.features(to_torch_video(x)).permute(0, 2, 3, 4, 1).numpy()
  got_f = nnx.jit(lambda m, v: m.features(v))(model, x)
  assert rel(got_f, want_f) < 1e-4


def test_export_inverts_conversion():
  cfg = model_config(*CASES["v4d_i3d_r18"])
  sd = numpy_sd(reference(cfg))
  model = new_model(cfg)
  port.convert_state_dict(sd, model, cfg)
  back = port.export_state_dict(model)
  sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
  assert sorted(back) == sorted(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


@pytest.mark.parametrize(
  "depth,place", [(18, "res_1"), (18, "res_3"), (18, "bottom"), (50, "res_4")]
)
def test_parity_at_other_insert_places(depth, place):
  """DSA at the other positions (and with its own identity at 'bottom'): eval logits agree."""
  cfg = model_config(depth, "dsa", R18_FREQ if depth == 18 else R50_FREQ)
  cfg.insert_place = place
  ref = reference(cfg)
  model = new_model(cfg)
  port.convert_state_dict(numpy_sd(ref), model, cfg)
  x = video(n=2, t=2)
  with torch.no_grad():
    want = ref(to_torch_video(x)).numpy()
  model.eval()
  assert rel(nnx.jit(lambda m, v: m(v))(model, x), want) < 1e-4


def test_converted_values_do_not_share_memory_with_the_input():
  """Converting from a live torch model, then training it, must not change our copy."""
  cfg = model_config(*CASES["dsa_i3d_r18"])
  ref = reference(cfg)
  live = {k: v.numpy() for k, v in ref.state_dict().items()}  # shares the tensors' memory
  model = new_model(cfg)
  port.convert_state_dict(live, model, cfg)
  before = np.asarray(model.backbone.bn1.mean[...]).copy()
  with torch.no_grad():
    ref.backbone.bn1.running_mean.add_(1.0)
  np.testing.assert_array_equal(model.backbone.bn1.mean[...], before)


def test_table_names_the_original_keys():
  """Our table reproduces the original key set exactly (spec §6.2), R4D index shift included."""
  for case, (depth, agg, freq) in CASES.items():
    cfg = model_config(depth, agg, freq)
    want = {k for k in reference(cfg).state_dict() if not k.endswith("num_batches_tracked")}
    got = set(port.model_table(new_model(cfg)))
    assert got == want, (case, sorted(got ^ want)[:10])
  table = port.model_table(new_model(model_config(*CASES["v4d_i3d_r18"])))
  assert table["backbone.layer2.2.tsa.weight"].path == ("backbone", "layer2", 1, "r4d", "kernel")


@pytest.mark.parametrize("name", ["dsa_i3d_r18", "dsa_i3d_r50", "i3d_r50", "v4d_i3d_r18"])
def test_shipped_configs_fit_original_checkpoints(name):
  """Full-size networks of the shipped configs: the original's keys and shapes, one to one, and
  the ImageNet 2D ResNet of the same depth inflates into them (table checks only, no forward)."""
  cfg = importlib.import_module(f"configs.kinetics400.{name}").get_config().model
  sd = {k: v.shape for k, v in tr.build_reference_from_config(cfg).state_dict().items()}
  table = port.model_table(new_model(cfg))
  assert set(table) == {k for k in sd if not k.endswith("num_batches_tracked")}
  for k, e in table.items():
    assert e.torch_shape == tuple(sd[k]), k
  net2d = tr.ResNet2D(cfg.depth)
  sd2d = {k: np.zeros(v.shape, np.float32) for k, v in net2d.state_dict().items()}
  sd3d, dropped = inflate.inflate_resnet2d(sd2d, table)
  assert "fc.weight" in dropped
  fresh = {k for k, e in table.items() if inflate.is_fresh(e)}
  assert set(sd3d) == set(table) - fresh
  assert all(k.startswith("cls_head") or ".dsa." in k or ".tsa." in k for k in fresh)


def test_wrapped_dict_and_module_prefix(tmp_path):
  cfg = model_config(*CASES["dsa_i3d_r18"])
  ref = reference(cfg)
  bare = numpy_sd(ref)
  wrapped = {
    "meta": {"epoch": 3, "mmcv_version": "0.4.3", "config": "model = dict(...)"},
    "state_dict": {"module." + k: v for k, v in ref.state_dict().items()},
    "optimizer": {"state": {}, "param_groups": [{"lr": 0.015, "momentum": 0.9}]},
  }
  torch.save(wrapped, tmp_path / "wrapped.pth")
  loaded = torch_checkpoint.load_state_dict(tmp_path / "wrapped.pth")
  assert sorted(loaded) == sorted(bare)
  for k in bare:
    np.testing.assert_array_equal(loaded[k], bare[k])
  # research-v4d style: {'epoch', 'arch', 'state_dict', 'best_prec1' (a tensor)}, legacy format
  v4d_style = {
    "epoch": 5,
    "arch": "x",
    "state_dict": ref.state_dict(),
    "best_prec1": torch.ones(()),
  }
  torch.save(v4d_style, tmp_path / "v4d.pth", _use_new_zipfile_serialization=False)
  assert sorted(torch_checkpoint.load_state_dict(tmp_path / "v4d.pth")) == sorted(bare)
  torch.save({"module." + k: v for k, v in ref.state_dict().items()}, tmp_path / "prefixed.pth")
  assert sorted(torch_checkpoint.load_state_dict(tmp_path / "prefixed.pth")) == sorted(bare)


def test_safetensors_and_half_precision(tmp_path):
  import safetensors.torch

  cfg = model_config(*CASES["dsa_i3d_r18"])
  ref = reference(cfg)
  sd = {
    k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in ref.state_dict().items()
  }
  safetensors.torch.save_file(sd, str(tmp_path / "w.safetensors"))
  loaded = torch_checkpoint.load_state_dict(tmp_path / "w.safetensors")
  w = loaded["backbone.layer2.1.dsa.generate.0.weight"]
  assert w.dtype == np.float32
  np.testing.assert_array_equal(w, sd["backbone.layer2.1.dsa.generate.0.weight"].float().numpy())


class _Evil:
  def __init__(self, target: str):
    self.target = target

  def __reduce__(self):
    return (builtins.open, (self.target, "w"))  # creates a file when unpickled


def test_malicious_pickle_is_refused(tmp_path):
  marker = tmp_path / "pwned"
  sd = numpy_sd(reference(model_config(*CASES["dsa_i3d_r18"])))
  evil = {"state_dict": {k: torch.from_numpy(v) for k, v in sd.items()}, "meta": _Evil(str(marker))}
  torch.save(evil, tmp_path / "evil.pth")
  # The file really is malicious: an unrestricted unpickler would create the marker.
  with pytest.raises(CheckpointError, match="refused to unpickle"):
    torch_checkpoint.load_state_dict(tmp_path / "evil.pth")
  with pytest.raises(CheckpointError, match="refused to unpickle"):
    port.convert_checkpoint(tmp_path / "evil.pth", model_config(*CASES["dsa_i3d_r18"]))
  assert not marker.exists()
  torch.load(tmp_path / "evil.pth", weights_only=False)  # the control: it does run code
  assert marker.exists()


def test_missing_unexpected_and_mismatched_keys_are_listed():
  cfg = model_config(*CASES["dsa_i3d_r18"])
  sd = numpy_sd(reference(cfg))
  del sd["backbone.layer1.0.bn2.running_var"]
  del sd["backbone.layer3.1.block.conv2.weight"]
  sd["backbone.layer1.0.extra.weight"] = np.zeros((3,), np.float32)
  sd["backbone.layer4.1.bn1.bias"] = np.zeros((5,), np.float32)
  with pytest.raises(ConversionError) as e:
    port.convert_state_dict(sd, new_model(cfg), cfg)
  msg = str(e.value)
  for key in (
    "backbone.layer1.0.bn2.running_var",
    "backbone.layer3.1.block.conv2.weight",
    "backbone.layer1.0.extra.weight",
    "backbone.layer4.1.bn1.bias",
  ):
    assert key in msg, (key, msg)
  assert "2 missing" in msg and "1 unexpected" in msg and "1 shape mismatches" in msg


def test_architecture_checked_against_config():
  cfg = model_config(*CASES["dsa_i3d_r18"])
  sd = numpy_sd(reference(cfg))
  other = model_config(18, "dsa", (0, 1, (0, 1), 0))
  with pytest.raises(ConversionError, match=r"model\.insert_freq"):
    port.convert_state_dict(sd, new_model(other), other)
  other = model_config(18, "dsa", R18_FREQ, classes=5)
  with pytest.raises(ConversionError, match=r"model\.num_classes: the config says 5"):
    port.convert_state_dict(sd, new_model(other), other)
  other = model_config(18, "tsn", R18_FREQ)
  with pytest.raises(ConversionError, match=r"model\.aggregation"):
    port.convert_state_dict(sd, new_model(other), other)
  info = keymap.infer_architecture(sd)
  assert info["num_segments"] == 4 and info["dsa.alpha"] == 2 and info["dsa.kernel_size"] == 3
  assert compress_stage_flags(info["insert_flags"]) == R18_FREQ


def test_allow_new_head_reinitialises_only_the_head(tmp_path):
  cfg = model_config(*CASES["dsa_i3d_r18"])
  sd = numpy_sd(reference(cfg))
  new = model_config(18, "dsa", R18_FREQ, classes=5)
  with pytest.raises(ConversionError, match=r"model\.num_classes(.|\n)*--allow_new_head"):
    port.convert_state_dict(sd, new_model(new), new)
  backbone_only = {k: v for k, v in sd.items() if not k.startswith("cls_head")}
  with pytest.raises(ConversionError, match=r"2 missing(.|\n)*cls_head.fc_cls.weight"):
    port.convert_state_dict(backbone_only, new_model(new), new)
  report = port.convert_state_dict(backbone_only, new_model(new), new, allow_new_head=True)
  assert "no head" in report.notes[-1]
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "k7.pth")
  model, report = port.convert_checkpoint(tmp_path / "k7.pth", new, allow_new_head=True)
  assert report.fresh == ["cls_head.fc_cls.bias", "cls_head.fc_cls.kernel"]
  assert any("initialised fresh" in n for n in report.notes)
  kernel = np.asarray(model.cls_head.fc_cls.kernel[...])
  assert kernel.shape == (64, 5) and 0.005 < kernel.std() < 0.02  # N(0, 0.01), the original's
  np.testing.assert_array_equal(model.cls_head.fc_cls.bias[...], np.zeros(5))
  np.testing.assert_array_equal(
    model.backbone.layer2[1].dsa.fc1.kernel[...], sd["backbone.layer2.1.dsa.generate.0.weight"].T
  )


def test_fresh_parts_get_the_models_init():
  """Parts absent from the checkpoint (here V4D's R4D and the head) get the model's own init."""
  cfg = model_config(18, "v4d", (0, 0, (0, 1), 0))
  sd = numpy_sd(reference(cfg))
  fresh = [k for k in sd if "tsa" in k or "cls_head" in k]
  values = []
  for seed in (4, 4, 5):
    model = new_model(cfg, seed=seed)
    partial = {k: v for k, v in sd.items() if k not in fresh}
    with pytest.raises(ConversionError, match=r"model\.aggregation: the config says 'v4d'"):
      port.convert_state_dict(partial, model, cfg)  # no R4D in the checkpoint
    table = port.model_table(model)
    port._assign(
      model,
      {
        table[k].path: keymap.to_ours(table[k], v)
        for k, v in partial.items()
        if not k.endswith("num_batches_tracked")
      },
    )
    filled = checkpoint_io.initialise_missing(model, cfg, seed=seed)
    assert sorted(keymap.path_str(p) for p in filled) == [
      "backbone.layer3.1.r4d.kernel",
      "cls_head.fc_cls.bias",
      "cls_head.fc_cls.kernel",
    ]
    assert not checkpoint_io.abstract_leaves(model)
    values.append(np.asarray(model.backbone.layer3[1].r4d.kernel[...]))
  bound = 1 / np.sqrt(9 * 4 * BW)  # PyTorch's default conv init, fan_in = 9 * C
  assert np.abs(values[0]).max() <= bound and values[0].std() > bound / 3
  np.testing.assert_array_equal(values[0], values[1])  # the same seed gives the same init
  assert not np.array_equal(values[0], values[2])


def test_v4d_native_layout_and_conv4d_kernels():
  """research-v4d keys (`base_model.`, `new_fc.`) and its pre-permuted Conv4d weight."""
  cfg = model_config(*CASES["v4d_i3d_r18"])
  ref = reference(cfg)
  sd = numpy_sd(ref)
  native = {}
  for k, v in sd.items():
    if k.endswith("tsa.weight"):
      # Conv4d: _ConvNd weight (O, I, kU, kT, 1, 1), stored permuted (2, 0, 1, 3, 4, 5).
      v = v[..., None].transpose(2, 0, 1, 3, 4, 5)
    k = k.replace("backbone.", "base_model.").replace("cls_head.fc_cls.", "new_fc.")
    native[k] = v
  a, b = new_model(cfg), new_model(cfg, seed=9)
  assert port.convert_state_dict(native, a, cfg).source == "v4d"
  port.convert_state_dict(sd, b, cfg)
  for (p, va), (_, vb) in zip(port.state_leaves(a), port.state_leaves(b)):
    np.testing.assert_array_equal(va.get_value(), vb.get_value(), err_msg=str(p))


def test_inflated_torchvision_resnet50_matches_2d_per_frame(tmp_path):
  """T identical frames through the inflated I3D give the 2D ResNet's features on each frame.

  Exactly so on the frames the temporal zero padding does not reach: R50 has 9 inflated 3x1x1
  convs (res4 + res5), so frames 9..T-10 are exact; the original pads with zeros too, so frames
  nearer the ends are attenuated (checked below, so the test would notice replicate padding).
  """
  cfg = model_config(50, "tsn", (0, 0, 0, 0))
  net2d = tr.randomize_(tr.ResNet2D(50, num_classes=1000, base_width=BW), seed=5).eval()
  torch.save(net2d.state_dict(), tmp_path / "resnet50.pth")
  sd2d = numpy_sd(net2d)
  model, report = port.convert_checkpoint(tmp_path / "resnet50.pth", cfg)
  assert report.source == "torchvision"
  assert report.fresh == ["cls_head.fc_cls.bias", "cls_head.fc_cls.kernel"]
  assert "fc.weight" in report.dropped
  assert 0.005 < float(np.std(model.cls_head.fc_cls.kernel[...])) < 0.02
  t = 20
  frames = np.random.RandomState(2).randn(4, 32, 32, 3).astype(np.float32)  # N*U = 1*4 frames
  x = np.repeat(frames[:, None], t, axis=1).reshape(1, 4, t, 32, 32, 3)  # T identical frames
  model.eval()
  got = np.asarray(nnx.jit(lambda m, v: m.features(v))(model, x))  # [4, T, 1, 1, C]
  with torch.no_grad():
    want = net2d.features(torch.from_numpy(frames).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  for i in range(9, t - 9):
    assert rel(got[:, i], want) < 1e-4, i
  assert rel(got[:, 0], want) > 1e-2  # zero padding at the ends, as the original
  # A 3x1x1 kernel is the 2D kernel / 3 on each tap (res4 is inflated).
  w2d = sd2d["layer3.0.conv1.weight"]
  k = np.asarray(model.backbone.layer3[0].conv1.kernel[...])
  np.testing.assert_allclose(k, np.repeat(w2d.transpose(2, 3, 1, 0)[None], 3, axis=0) / 3)


def test_inflation_refuses_a_2d_net_of_another_depth():
  cfg = model_config(50, "tsn", (0, 0, 0, 0))
  sd2d = numpy_sd(tr.ResNet2D(18, base_width=BW))
  with pytest.raises(ConversionError, match=r"model\.depth: the config says 50"):
    port.convert_state_dict(sd2d, new_model(cfg), cfg)


def test_save_and_load_model(tmp_path):
  cfg = model_config(*CASES["dsa_i3d_r18"])
  model = new_model(cfg)
  port.convert_state_dict(numpy_sd(reference(cfg)), model, cfg)
  names = [f"class {i}" for i in range(7)]
  checkpoint_io.save_model(tmp_path / "m", model, {"config": cfg, "class_names": names})
  loaded, meta = checkpoint_io.load_model(tmp_path / "m", cfg)
  assert meta["class_names"] == names
  for (p, a), (_, b) in zip(port.state_leaves(model), port.state_leaves(loaded)):
    np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(p))
  again, _ = checkpoint_io.load_model(tmp_path / "m")  # the stored config
  np.testing.assert_array_equal(again.backbone.conv1.kernel[...], model.backbone.conv1.kernel[...])
  other = model_config(18, "dsa", R18_FREQ)
  other.insert_place = "res_3"
  with pytest.raises(ValueError, match=r"model\.insert_place"):
    checkpoint_io.load_model(tmp_path / "m", other)


@pytest.mark.slow
def test_full_width_r50_conversion():
  """One full-width (base_width 64) DSA+I3D R50 at a small input."""
  cfg = model_config(50, "dsa", R50_FREQ, width=64, classes=400)
  ref = reference(cfg)
  model = new_model(cfg)
  port.convert_state_dict(numpy_sd(ref), model, cfg)
  x = video(n=1, t=2, hw=32)
  with torch.no_grad():
    want = ref(to_torch_video(x)).numpy()
  model.eval()
  got = nnx.jit(lambda m, v: m(v))(model, x)
  assert rel(got, want) < 1e-4


def test_reference_matches_spec_counts():
  """The reference has the spec's key counts and parameter counts (§6.2, §7.2)."""
  r50 = tr.build_reference(50, 400)
  r18 = tr.build_reference(18, 400)
  assert len(r50.state_dict()) == 355 and len(r18.state_dict()) == 136
  assert sum(p.numel() for p in r50.parameters()) == 32_454_456
  assert sum(p.numel() for p in r18.parameters()) == 32_025_696
  v4d = tr.build_reference(18, 400, aggregation="v4d")
  assert sum(p.numel() for p in v4d.parameters()) == 32_025_552 + 737_280
