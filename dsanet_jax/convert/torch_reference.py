"""PyTorch reference networks of the original DSANet / V4D code, for parity tests and benchmarks.

Written from `../shared/spec/dsanet.md` (§1-§3, §6, §8), not copied. Module names follow the
original so that `state_dict()` has exactly the original keys:

  backbone.conv1.weight                       (w, 3, 1, 7, 7)          stem
  backbone.bn1.{weight,bias,running_mean,running_var,num_batches_tracked}
  backbone.layer{L}.{b}.conv{1,2,3}.weight    plain block (I3D: '3x1x1' Bottleneck, 3x3x3 Basic)
  backbone.layer{L}.{b}.downsample.{0,1}.*    block 0 of a stage when the shape changes
  backbone.layer{L}.{b}.block.conv1.weight    DSA-wrapped block (`.block.` infix) ...
  backbone.layer{L}.{b}.dsa.generate.{0,1,3}.* ... and its DSA: Linear(U,aU), BN1d(aU), Linear(aU,L)
  backbone.layer{L}.{i}.tsa.weight            V4D: an R4D element inserted in the stage's Sequential
                                              after each flagged block, so later blocks shift by one
                                              index (as research-v4d's `inflate_reslayer`)
  cls_head.fc_cls.{weight,bias}               (K, C), (K,)

The R4D kernel uses V4D's "fast implementation" layout: a Conv3d `(C, C, 3, 3, 1)` over
`(N, C, U, T, H*W)` (kernel over snippets U and frames T, padding (1, 1, 0), no bias), added
residually. research-v4d's loop-based `Conv4d` stores the same kernel pre-permuted as
`(3, C, C, 3, 1, 1)`; the converter accepts both.

`build_reference(...)` returns a `Recognizer` whose `forward` takes `[N, U, 3, T, H, W]` float32 and
returns logits averaged over U `[N, K]` (the original flattens to `[N*U, 3, T, H, W]` video-major);
`features` returns the backbone output `[N*U, C, T', H', W']`.

`ResNet2D` is a torchvision-layout 2D ResNet-18/34/50/101 (`conv1`, `bn1`, `layerX.Y.convZ`, `bnZ`,
`downsample.0/1`, `fc`), for the inflation tests (torchvision itself is not a dependency).
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from ml_collections import ConfigDict
from torch import nn

# ARCH: depth -> (block kind, blocks per stage), shared with the JAX model (a fact, not code)
from dsanet_jax.models.resnet import ARCH, expand_stage_flags

EXPANSION = {"basic": 1, "bottleneck": 4}
INSERT_PLACES = ("res_1", "res_2", "res_3", "res_4", "bottom")


# ------------------------------------------------------------------ temporal modules


class DSA(nn.Module):
  """Dynamic segment aggregation (spec §1). Input/output `[N*U, C, T, H, W]`, video-major."""

  def __init__(
    self,
    in_channels: int,
    num_segments: int = 4,
    kernel_size: int = 3,
    alpha: int = 2,
    split_ratio: float = 1 / 8,
    with_identity: bool = False,
  ) -> None:
    super().__init__()
    self.num_segments = num_segments
    self.kernel_size = kernel_size
    self.split = int(in_channels * split_ratio)
    self.with_identity = with_identity
    hidden = alpha * num_segments
    self.generate = nn.Sequential(
      nn.Linear(num_segments, hidden, bias=False),
      nn.BatchNorm1d(hidden),
      nn.ReLU(inplace=True),
      nn.Linear(hidden, kernel_size, bias=False),
      nn.Softmax(dim=-1),
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    nu, _, t, h, w = x.shape
    u, cp = self.num_segments, self.split
    n = nu // u
    xa, xb = x[:, :cp], x[:, cp:]
    v = xa.reshape(n, u, cp, t, h, w).permute(0, 2, 1, 3, 4, 5).contiguous()  # (N, C', U, T, H, W)
    s = v.mean(dim=(3, 4, 5)).reshape(n * cp, u)  # rows (n, c)
    k = self.generate(s)  # (N*C', L)
    y = F.conv3d(
      v.reshape(1, n * cp, u, t, h * w),
      k.reshape(n * cp, 1, self.kernel_size, 1, 1),
      stride=1,
      padding=((self.kernel_size - 1) // 2, 0, 0),
      groups=n * cp,
    )
    y = y.reshape(n, cp, u, t, h, w).permute(0, 2, 1, 3, 4, 5).reshape(nu, cp, t, h, w)
    if self.with_identity:
      y = y + xa
    return torch.cat([y, xb], dim=1)


class R4D(nn.Module):
  """V4D's residual 4D block (spec §8): x + Conv(3x3 over (U, T)) of x; `[N*U, C, T, H, W]`."""

  def __init__(self, channels: int, num_segments: int = 4) -> None:
    super().__init__()
    self.num_segments = num_segments
    self.tsa = nn.Conv3d(channels, channels, (3, 3, 1), padding=(1, 1, 0), bias=False)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    nu, c, t, h, w = x.shape
    u = self.num_segments
    v = x.reshape(nu // u, u, c, t, h, w).permute(0, 2, 1, 3, 4, 5).reshape(-1, c, u, t, h * w)
    y = self.tsa(v).reshape(-1, c, u, t, h, w).permute(0, 2, 1, 3, 4, 5).reshape(nu, c, t, h, w)
    return x + y


# ------------------------------------------------------------------ I3D blocks


def _conv3d(cin: int, cout: int, k: tuple, s: tuple = (1, 1, 1)) -> nn.Conv3d:
  return nn.Conv3d(cin, cout, k, stride=s, padding=tuple(x // 2 for x in k), bias=False)


Hook = Callable[[str, torch.Tensor], torch.Tensor]


class _Block3d(nn.Module):
  """The residual add shared by both block kinds; `dsa` runs at `place` ('res_1'..'res_4' inside
  the branch, 'bottom' on the block output)."""

  downsample: nn.Module | None
  relu: nn.Module

  def branch(self, x: torch.Tensor, hook: Hook) -> torch.Tensor:
    raise NotImplementedError

  def forward(self, x: torch.Tensor, dsa: nn.Module | None = None, place: str = "") -> torch.Tensor:
    hook = (lambda p, y: dsa(y) if p == place else y) if dsa is not None else (lambda p, y: y)
    identity = x if self.downsample is None else self.downsample(x)
    return hook("bottom", self.relu(self.branch(x, hook) + identity))


class BasicBlock3d(_Block3d):
  """I3D BasicBlock: an inflated block has two 3x3x3 convs, otherwise 1x3x3 (spec §3.1)."""

  expansion = 1

  def __init__(
    self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, inflate: bool
  ) -> None:
    super().__init__()
    k = (3, 3, 3) if inflate else (1, 3, 3)
    self.conv1 = _conv3d(inplanes, planes, k, (1, stride, stride))
    self.bn1 = nn.BatchNorm3d(planes)
    self.conv2 = _conv3d(planes, planes, k)
    self.bn2 = nn.BatchNorm3d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def branch(self, x: torch.Tensor, hook: Hook) -> torch.Tensor:
    out = self.relu(self.bn1(self.conv1(hook("res_1", x))))
    out = self.bn2(self.conv2(hook("res_2", out)))
    return hook("res_3", out)


class Bottleneck3d(_Block3d):
  """I3D Bottleneck, 'pytorch' style (stride on conv2); inflate '3x1x1' or '3x3x3' (spec §3.1)."""

  expansion = 4

  def __init__(
    self,
    inplanes: int,
    planes: int,
    stride: int,
    downsample: nn.Module | None,
    inflate: bool,
    style: str = "3x1x1",
  ) -> None:
    super().__init__()
    if style not in ("3x1x1", "3x3x3"):
      raise ValueError(f"inflate_style {style!r}: expected '3x1x1' or '3x3x3'")
    k1 = (3, 1, 1) if inflate and style == "3x1x1" else (1, 1, 1)
    k2 = (3, 3, 3) if inflate and style == "3x3x3" else (1, 3, 3)
    self.conv1 = _conv3d(inplanes, planes, k1)
    self.bn1 = nn.BatchNorm3d(planes)
    self.conv2 = _conv3d(planes, planes, k2, (1, stride, stride))
    self.bn2 = nn.BatchNorm3d(planes)
    self.conv3 = _conv3d(planes, planes * 4, (1, 1, 1))
    self.bn3 = nn.BatchNorm3d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def branch(self, x: torch.Tensor, hook: Hook) -> torch.Tensor:
    out = self.relu(self.bn1(self.conv1(hook("res_1", x))))
    out = self.relu(self.bn2(self.conv2(hook("res_2", out))))
    out = self.bn3(self.conv3(hook("res_3", out)))
    return hook("res_4", out)


class DSABlock(nn.Module):
  """The original's `DSABasicblock` / `DSABottleneck`: the block as `block`, the DSA as `dsa`."""

  def __init__(self, block: nn.Module, dsa: DSA, place: str) -> None:
    super().__init__()
    self.block = block
    self.dsa = dsa
    self.place = place

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.block(x, self.dsa, self.place)


def _dsa_channels(block: nn.Module, place: str) -> int:
  if place == "res_1":
    return block.conv1.in_channels
  if place == "res_2":
    return block.conv1.out_channels
  if place == "res_3":
    return block.conv2.out_channels
  if place == "res_4":
    if not isinstance(block, Bottleneck3d):
      raise ValueError("insert_place 'res_4' exists only in Bottleneck blocks (depth >= 50)")
    return block.conv3.out_channels
  if place == "bottom":
    return (block.conv3 if isinstance(block, Bottleneck3d) else block.conv2).out_channels
  raise ValueError(f"insert_place {place!r}: expected one of {INSERT_PLACES}")


class ResNetI3D(nn.Module):
  """The original `ResNet_I3D` as configured (spec §3.1), with DSA or R4D inserted.

  Input `[B, 3, T, H, W]`, output `[B, 8w*e, T, H/32, W/32]`; no temporal striding.
  """

  def __init__(
    self,
    depth: int,
    *,
    base_width: int = 64,
    inflate_freq: Sequence = (0, 0, 1, 1),
    inflate_style: str = "3x1x1",
    aggregation: str = "tsn",
    insert_freq: Sequence = (0, 0, 0, 0),
    insert_place: str = "res_2",
    num_segments: int = 4,
    alpha: int = 2,
    beta: float = 1 / 8,
    kernel_size: int = 3,
    with_identity: bool = False,
  ) -> None:
    super().__init__()
    if depth not in ARCH:
      raise ValueError(f"depth {depth}: expected one of {sorted(ARCH)}")
    if aggregation not in ("tsn", "dsa", "v4d"):
      raise ValueError(f"aggregation {aggregation!r}: the reference has 'tsn', 'dsa', 'v4d'")
    kind, blocks = ARCH[depth]
    self.conv1 = nn.Conv3d(3, base_width, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False)
    self.bn1 = nn.BatchNorm3d(base_width)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
    inplanes = base_width
    inflate_all = expand_stage_flags(inflate_freq, blocks, key="inflate_freq")
    insert_all = expand_stage_flags(insert_freq, blocks, key="insert_freq")
    for i, n in enumerate(blocks):
      planes = base_width * 2**i
      stride = 1 if i == 0 else 2
      inflate, insert = inflate_all[i], insert_all[i]
      layers: list[nn.Module] = []
      for b in range(n):
        cout = planes * EXPANSION[kind]
        down = None
        if b == 0 and (stride != 1 or inplanes != cout):
          s = (1, stride, stride)
          down = nn.Sequential(nn.Conv3d(inplanes, cout, 1, s, bias=False), nn.BatchNorm3d(cout))
        st = stride if b == 0 else 1
        if kind == "basic":
          block = BasicBlock3d(inplanes, planes, st, down, bool(inflate[b]))
        else:
          block = Bottleneck3d(inplanes, planes, st, down, bool(inflate[b]), inflate_style)
        inplanes = cout
        if aggregation == "dsa" and insert[b]:
          dsa = DSA(
            _dsa_channels(block, insert_place),
            num_segments,
            kernel_size,
            alpha,
            beta,
            with_identity or insert_place == "bottom",
          )
          block = DSABlock(block, dsa, insert_place)
        layers.append(block)
        if aggregation == "v4d" and insert[b]:
          layers.append(R4D(cout, num_segments))
      self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
    self.out_channels = inplanes

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class I3DClsHead(nn.Module):
  """Global average pool, dropout, `fc_cls`; logits averaged over snippets (spec §3.2)."""

  def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5) -> None:
    super().__init__()
    self.dropout = nn.Dropout(dropout)
    self.fc_cls = nn.Linear(in_channels, num_classes)
    nn.init.normal_(self.fc_cls.weight, 0, 0.01)
    nn.init.zeros_(self.fc_cls.bias)

  def forward(self, x: torch.Tensor, num_segments: int) -> torch.Tensor:
    x = self.fc_cls(self.dropout(x.mean(dim=(2, 3, 4))))
    return x.reshape(-1, num_segments, x.shape[-1]).mean(dim=1)


class Recognizer(nn.Module):
  """`Recognizer3D`: backbone over the N*U snippets, head, logits averaged over U."""

  def __init__(
    self, backbone: ResNetI3D, num_classes: int, num_segments: int, dropout: float
  ) -> None:
    super().__init__()
    self.num_segments = num_segments
    self.backbone = backbone
    self.cls_head = I3DClsHead(backbone.out_channels, num_classes, dropout)

  def _flatten(self, video: torch.Tensor) -> torch.Tensor:
    if video.ndim != 6 or video.shape[1] != self.num_segments or video.shape[2] != 3:
      raise ValueError(
        f"video {tuple(video.shape)}: expected [N, U={self.num_segments}, 3, T, H, W]"
      )
    return video.reshape((-1, *video.shape[2:]))  # [N*U, 3, T, H, W], video-major

  def features(self, video: torch.Tensor) -> torch.Tensor:
    """`[N, U, 3, T, H, W]` -> backbone output `[N*U, C, T', H', W']`."""
    return self.backbone(self._flatten(video))

  def forward(self, video: torch.Tensor) -> torch.Tensor:
    """`[N, U, 3, T, H, W]` -> logits `[N, K]` averaged over the U snippets."""
    return self.cls_head(self.features(video), self.num_segments)


def build_reference(
  depth: int,
  num_classes: int,
  num_segments: int = 4,
  aggregation: str = "dsa",
  insert_freq: Sequence | None = None,
  insert_place: str = "res_2",
  alpha: int = 2,
  beta: float = 1 / 8,
  base_width: int = 64,
  *,
  kernel_size: int = 3,
  with_identity: bool = False,
  inflate_freq: Sequence = (0, 0, 1, 1),
  inflate_style: str = "3x1x1",
  dropout: float = 0.5,
) -> Recognizer:
  """Builds the original network. `insert_freq` defaults to the spec's map for R18/R50.

  DSA is built after the backbone (as in the original, it consumes RNG after the backbone).
  """
  if insert_freq is None:
    insert_freq = (
      (0, (0, 1), (0, 1), 0)
      if ARCH[depth][0] == "basic"
      else (0, (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), 0)
    )
    if aggregation == "v4d" and ARCH[depth][0] == "bottleneck":
      insert_freq = (0, (0, 1, 0, 1), 0, 0)
  backbone = ResNetI3D(
    depth,
    base_width=base_width,
    inflate_freq=inflate_freq,
    inflate_style=inflate_style,
    aggregation=aggregation,
    insert_freq=insert_freq,
    insert_place=insert_place,
    num_segments=num_segments,
    alpha=alpha,
    beta=beta,
    kernel_size=kernel_size,
    with_identity=with_identity,
  )
  return Recognizer(backbone, num_classes, num_segments, dropout)


def build_reference_from_config(model_cfg: ConfigDict) -> Recognizer:
  """`build_reference` from a `config.model` ConfigDict (backbone 'i3d_resnet')."""
  if model_cfg.backbone != "i3d_resnet":
    raise ValueError(f"model.backbone={model_cfg.backbone!r}: the reference has only 'i3d_resnet'")
  return build_reference(
    model_cfg.depth,
    model_cfg.num_classes,
    model_cfg.num_segments,
    model_cfg.aggregation,
    model_cfg.insert_freq,
    model_cfg.insert_place,
    model_cfg.dsa.alpha,
    model_cfg.dsa.beta,
    model_cfg.base_width,
    kernel_size=model_cfg.dsa.kernel_size,
    with_identity=model_cfg.dsa.with_identity,
    inflate_freq=model_cfg.inflate_freq,
    inflate_style=model_cfg.inflate_style,
    dropout=model_cfg.dropout_rate,
  )


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
  """Random weights and random BatchNorm statistics (in place), scaled to keep activations O(1)."""
  g = torch.Generator().manual_seed(seed)
  for m in model.modules():
    if isinstance(m, nn.Conv3d | nn.Conv2d | nn.Linear):
      fan_in = m.weight[0].numel()
      m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
      if m.bias is not None:
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
      c = m.num_features
      m.weight.copy_(0.5 + torch.rand(c, generator=g))
      m.bias.copy_(torch.randn(c, generator=g) * 0.2)
      m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
      m.running_var.copy_(0.5 + torch.rand(c, generator=g))
      m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (), generator=g)))
  return model


# ------------------------------------------------------------------ torchvision-layout 2D ResNet


class BasicBlock2d(nn.Module):
  expansion = 1

  def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck2d(nn.Module):
  expansion = 4

  def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet2D(nn.Module):
  """torchvision-layout ResNet (v1.5: stride on the 3x3 conv). `[B, 3, H, W]` -> `[B, K]`."""

  def __init__(self, depth: int, num_classes: int = 1000, base_width: int = 64) -> None:
    super().__init__()
    kind, blocks = ARCH[depth]
    block_cls = BasicBlock2d if kind == "basic" else Bottleneck2d
    self.conv1 = nn.Conv2d(3, base_width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(base_width)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    inplanes = base_width
    for i, n in enumerate(blocks):
      planes, stride = base_width * 2**i, 1 if i == 0 else 2
      cout = planes * block_cls.expansion
      layers = []
      for b in range(n):
        down = None
        if b == 0 and (stride != 1 or inplanes != cout):
          down = nn.Sequential(
            nn.Conv2d(inplanes, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
          )
        layers.append(block_cls(inplanes, planes, stride if b == 0 else 1, down))
        inplanes = cout
      self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.fc = nn.Linear(inplanes, num_classes)

  def features(self, x: torch.Tensor) -> torch.Tensor:
    """`[B, 3, H, W]` -> `[B, C, H/32, W/32]` (before pooling)."""
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))
