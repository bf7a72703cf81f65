"""I3D ResNet-18/34/50/101 (spec dsanet.md §3.1) and the TSM ResNet, with insertable modules.

Snippet features are [B, T, H, W, C], B = N*U (video-major, snippet-minor). No temporal
down-sampling anywhere; spatial strides (1, 2, 2, 2) on the stages, the 'pytorch' style (stride on
the 3x3 conv).

Insertable per block (`Insert`): 'dsa' / 'se' at `place` inside the block ('res_1'..'res_4' = the
paper's positions I-IV, 'bottom' = on the block output), 'r4d' after the block (V4D).
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dsanet_jax.models.aggregation import R4D, SE, temporal_shift
from dsanet_jax.models.dsa import DSA
from dsanet_jax.models.layers import BatchNorm, Conv, max_pool_1x3x3

# depth -> (block kind, blocks per stage)
ARCH = {
  18: ("basic", (2, 2, 2, 2)),
  34: ("basic", (3, 4, 6, 3)),
  50: ("bottleneck", (3, 4, 6, 3)),
  101: ("bottleneck", (3, 4, 23, 3)),
}
PLACES = ("res_1", "res_2", "res_3", "res_4", "bottom")


@dataclasses.dataclass(frozen=True)
class Insert:
  """What goes into one block. kind: 'none' | 'dsa' | 'se' | 'r4d'."""

  kind: str = "none"
  place: str = "res_2"
  num_segments: int = 4
  dsa_alpha: int = 2
  dsa_beta: float = 1 / 8
  dsa_kernel_size: int = 3
  dsa_with_identity: bool = False
  se_reduction: int = 16
  temporal_shift: bool = False  # TSM: shift the residual branch input
  shift_div: int = 8


@dataclasses.dataclass(frozen=True)
class Common:
  """Build settings shared by every layer."""

  dtype: jnp.dtype = jnp.float32
  conv_impl: str = "auto"
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5


def _bn(c: int, cm: Common) -> BatchNorm:
  return BatchNorm(c, momentum=cm.bn_momentum, epsilon=cm.bn_epsilon, dtype=cm.dtype)


def _conv(
  cin: int,
  cout: int,
  k: tuple[int, int, int],
  cm: Common,
  rngs: nnx.Rngs,
  stride: tuple[int, int, int] = (1, 1, 1),
  padding: tuple[int, int, int] = (0, 0, 0),
) -> Conv:
  return Conv(
    cin, cout, k, stride=stride, padding=padding, impl=cm.conv_impl, dtype=cm.dtype, rngs=rngs
  )


def _make_module(ins: Insert, channels: int, cm: Common, where: str, rngs: nnx.Rngs) -> DSA | SE:
  if ins.kind == "dsa":
    return DSA(
      channels,
      ins.num_segments,
      alpha=ins.dsa_alpha,
      beta=ins.dsa_beta,
      kernel_size=ins.dsa_kernel_size,
      with_identity=ins.dsa_with_identity or ins.place == "bottom",
      bn_momentum=cm.bn_momentum,
      bn_epsilon=cm.bn_epsilon,
      dtype=cm.dtype,
      where=where,
      rngs=rngs,
    )
  if ins.kind == "se":
    return SE(channels, reduction=ins.se_reduction, dtype=cm.dtype, rngs=rngs)
  raise ValueError(f"{where}: cannot place {ins.kind!r} inside a block")


class _Block(nnx.Module):
  """Shared plumbing of both block kinds: the inserted modules and the residual add."""

  expansion = 1

  def _init_inserts(
    self,
    ins: Insert,
    place_channels: dict[str, int],
    out_c: int,
    cm: Common,
    where: str,
    rngs: nnx.Rngs,
  ) -> None:
    self.place = ins.place if ins.kind in ("dsa", "se") else None
    self.temporal_shift = ins.temporal_shift
    self.shift_div = ins.shift_div
    self.num_segments = ins.num_segments
    mods = {"dsa": None, "se": None, "r4d": None}
    if ins.kind in ("dsa", "se"):
      if ins.place not in place_channels:
        raise ValueError(
          f"{where}: model.insert_place={ins.place!r} is not available in a "
          f"{type(self).__name__}; choose one of {sorted(place_channels)}"
        )
      mods[ins.kind] = _make_module(ins, place_channels[ins.place], cm, where, rngs)
    elif ins.kind == "r4d":
      mods["r4d"] = R4D(out_c, ins.num_segments, dtype=cm.dtype, rngs=rngs)
    elif ins.kind != "none":
      raise ValueError(f"{where}: unknown insert kind {ins.kind!r}")
    self.dsa = nnx.data(mods["dsa"])
    self.se = nnx.data(mods["se"])
    self.r4d = nnx.data(mods["r4d"])

  def _at(self, place: str, x: jax.Array, num_groups: int) -> jax.Array:
    if self.place != place:
      return x
    mod = self.dsa if self.dsa is not None else self.se
    return mod(x, num_groups=num_groups)

  def _branch_input(self, x: jax.Array, num_groups: int) -> jax.Array:
    x = self._at("res_1", x, num_groups)
    if self.temporal_shift:
      x = temporal_shift(x, self.num_segments, self.shift_div)
    return x

  def _finish(self, x: jax.Array, out: jax.Array, num_groups: int) -> jax.Array:
    identity = x
    if self.downsample_conv is not None:
      identity = self.downsample_bn(self.downsample_conv(x), num_groups=num_groups)
    out = jax.nn.relu(out + identity.astype(out.dtype))
    out = self._at("bottom", out, num_groups)
    if self.r4d is not None:
      out = self.r4d(out)
    return out


class BasicBlock(_Block):
  """ResNet-18/34 block: 2 convs (3x3x3 when inflated, else 1x3x3), each followed by BN."""

  expansion = 1

  def __init__(
    self,
    inplanes: int,
    planes: int,
    *,
    stride: int,
    inflate: bool,
    inflate_style: str,
    ins: Insert,
    cm: Common,
    where: str,
    rngs: nnx.Rngs,
  ) -> None:
    del inflate_style  # BasicBlocks always inflate to 3x3x3 (the original ignores the style)
    kt = 3 if inflate else 1
    pt = 1 if inflate else 0
    self.conv1 = _conv(inplanes, planes, (kt, 3, 3), cm, rngs, (1, stride, stride), (pt, 1, 1))
    self.bn1 = _bn(planes, cm)
    self.conv2 = _conv(planes, planes, (kt, 3, 3), cm, rngs, (1, 1, 1), (pt, 1, 1))
    self.bn2 = _bn(planes, cm)
    ds = stride != 1 or inplanes != planes
    self.downsample_conv = nnx.data(
      _conv(inplanes, planes, (1, 1, 1), cm, rngs, (1, stride, stride)) if ds else None
    )
    self.downsample_bn = nnx.data(_bn(planes, cm) if ds else None)
    places = {"res_1": inplanes, "res_2": planes, "res_3": planes, "bottom": planes}
    self._init_inserts(ins, places, planes, cm, where, rngs)

  def __call__(self, x: jax.Array, *, num_groups: int = 1) -> jax.Array:
    out = self._branch_input(x, num_groups)
    out = jax.nn.relu(self.bn1(self.conv1(out), num_groups=num_groups))
    out = self._at("res_2", out, num_groups)
    out = self.bn2(self.conv2(out), num_groups=num_groups)
    out = self._at("res_3", out, num_groups)
    return self._finish(x, out, num_groups)


class Bottleneck(_Block):
  """ResNet-50/101 block: 1x1x1 (3x1x1 if inflated '3x1x1') -> 1x3x3 (3x3x3 if '3x3x3') -> 1x1x1."""

  expansion = 4

  def __init__(
    self,
    inplanes: int,
    planes: int,
    *,
    stride: int,
    inflate: bool,
    inflate_style: str,
    ins: Insert,
    cm: Common,
    where: str,
    rngs: nnx.Rngs,
  ) -> None:
    if inflate_style not in ("3x1x1", "3x3x3"):
      raise ValueError(f"model.inflate_style={inflate_style!r}; choose '3x1x1' or '3x3x3'")
    k1, p1, k2, p2 = (1, 1, 1), (0, 0, 0), (1, 3, 3), (0, 1, 1)
    if inflate and inflate_style == "3x1x1":
      k1, p1 = (3, 1, 1), (1, 0, 0)
    elif inflate:
      k2, p2 = (3, 3, 3), (1, 1, 1)
    out_c = planes * self.expansion
    self.conv1 = _conv(inplanes, planes, k1, cm, rngs, (1, 1, 1), p1)
    self.bn1 = _bn(planes, cm)
    self.conv2 = _conv(planes, planes, k2, cm, rngs, (1, stride, stride), p2)
    self.bn2 = _bn(planes, cm)
    self.conv3 = _conv(planes, out_c, (1, 1, 1), cm, rngs)
    self.bn3 = _bn(out_c, cm)
    ds = stride != 1 or inplanes != out_c
    self.downsample_conv = nnx.data(
      _conv(inplanes, out_c, (1, 1, 1), cm, rngs, (1, stride, stride)) if ds else None
    )
    self.downsample_bn = nnx.data(_bn(out_c, cm) if ds else None)
    places = {"res_1": inplanes, "res_2": planes, "res_3": planes, "res_4": out_c, "bottom": out_c}
    self._init_inserts(ins, places, out_c, cm, where, rngs)

  def __call__(self, x: jax.Array, *, num_groups: int = 1) -> jax.Array:
    out = self._branch_input(x, num_groups)
    out = jax.nn.relu(self.bn1(self.conv1(out), num_groups=num_groups))
    out = self._at("res_2", out, num_groups)
    out = jax.nn.relu(self.bn2(self.conv2(out), num_groups=num_groups))
    out = self._at("res_3", out, num_groups)
    out = self.bn3(self.conv3(out), num_groups=num_groups)
    out = self._at("res_4", out, num_groups)
    return self._finish(x, out, num_groups)


def expand_stage_flags(freq: Any, num_blocks: Sequence[int], *, key: str) -> list[tuple[int, ...]]:
  """Per-stage 0 / 1 / tuple-of-flags -> one tuple of 0/1 flags per stage.

  Raises:
    ValueError: naming `key`, for a wrong stage count, a flag tuple whose length differs from the
      stage's block count, or a value other than 0/1.
  """
  if isinstance(freq, int) or len(freq) != len(num_blocks):
    raise ValueError(
      f"{key}={freq!r} must have one entry per stage ({len(num_blocks)} stages: res2..res5)"
    )
  out = []
  for s, (f, nb) in enumerate(zip(freq, num_blocks)):
    if isinstance(f, (int, bool)):
      if f not in (0, 1):
        raise ValueError(f"{key}[{s}]={f!r}: use 0, 1 or a tuple of 0/1 flags, one per block")
      out.append((int(f),) * nb)
      continue
    f = tuple(f)
    if len(f) != nb:
      raise ValueError(
        f"{key}[{s}]={f!r} has {len(f)} flags but stage res{s + 2} has {nb} blocks "
        f"(block indices 0..{nb - 1})"
      )
    if any(v not in (0, 1) for v in f):
      raise ValueError(f"{key}[{s}]={f!r}: flags must be 0 or 1")
    out.append(tuple(int(v) for v in f))
  return out


def compress_stage_flags(freq: Any) -> Any:
  """The config's canonical form of per-stage flags: all-0 -> 0, all-1 -> 1, else a tuple of 0/1.

  Accepts `expand_stage_flags`'s output or a config value (`(0, (1, 1), (0, 1), 0)` ->
  `(0, 1, (0, 1), 0)`); anything that is not a sequence (None, a missing field) is returned as is.
  """
  if not isinstance(freq, Sequence) or isinstance(freq, str):
    return freq
  out = []
  for f in freq:
    if isinstance(f, Sequence) and f and all(v == f[0] for v in f):
      f = int(f[0])
    out.append(int(f) if isinstance(f, int | bool) else tuple(int(v) for v in f))
  return tuple(out)


class ResNet3d(nnx.Module):
  """The I3D ResNet (or TSM ResNet when `temporal_shift`) backbone.

  x [B, T, H, W, 3] -> [B, T, H/32, W/32, C_out] (C_out = 512 * expansion) in `cm.dtype`.
  Attributes: conv1, bn1, layer1..layer4 (nnx.List of blocks).
  """

  def __init__(
    self,
    depth: int,
    *,
    base_width: int,
    inflate_freq: Any,
    inflate_style: str,
    inserts: Sequence[Sequence[Insert]],
    remat: bool,
    cm: Common,
    rngs: nnx.Rngs,
  ) -> None:
    if depth not in ARCH:
      raise ValueError(f"model.depth={depth!r} is not supported; choose one of {sorted(ARCH)}")
    kind, num_blocks = ARCH[depth]
    block_cls = BasicBlock if kind == "basic" else Bottleneck
    inflate = expand_stage_flags(inflate_freq, num_blocks, key="model.inflate_freq")
    self.conv1 = _conv(3, base_width, (1, 7, 7), cm, rngs, (1, 2, 2), (0, 3, 3))
    self.bn1 = _bn(base_width, cm)
    self.remat = remat
    inplanes = base_width
    for s, nb in enumerate(num_blocks):
      planes = base_width * 2**s
      blocks = []
      for b in range(nb):
        blocks.append(
          block_cls(
            inplanes,
            planes,
            stride=(2 if s > 0 and b == 0 else 1),
            inflate=bool(inflate[s][b]),
            inflate_style=inflate_style,
            ins=inserts[s][b],
            cm=cm,
            where=f"backbone.layer{s + 1}[{b}]",
            rngs=rngs,
          )
        )
        inplanes = planes * block_cls.expansion
      setattr(self, f"layer{s + 1}", nnx.List(blocks))
    self.out_channels = inplanes

  def stages(self) -> list[nnx.List]:
    return [self.layer1, self.layer2, self.layer3, self.layer4]

  def stem(self, x: jax.Array, *, num_groups: int = 1) -> jax.Array:
    x = jax.nn.relu(self.bn1(self.conv1(x), num_groups=num_groups))
    return max_pool_1x3x3(x)

  def __call__(self, x: jax.Array, *, num_groups: int = 1) -> jax.Array:
    with jax.named_scope("stem"):
      x = self.stem(x, num_groups=num_groups)
    for s, layer in enumerate(self.stages()):
      with jax.named_scope(f"layer{s + 1}"):
        for blk in layer:
          if self.remat:
            x = nnx.remat(lambda m, y: m(y, num_groups=num_groups))(blk, x)
          else:
            x = blk(x, num_groups=num_groups)
    return x
