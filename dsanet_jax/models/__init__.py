"""Models: `build_model(model_cfg, rngs=...) -> Recognizer` (see docs/design.md and README.md)."""

import ml_collections
from flax import nnx

from dsanet_jax.common.config_checks import check_choice
from dsanet_jax.common.dtypes import parse_dtype
from dsanet_jax.models.layers import resolve_conv_impl
from dsanet_jax.models.recognizer import ClsHead, Recognizer
from dsanet_jax.models.resnet import ARCH, PLACES, Common, Insert, ResNet3d, expand_stage_flags

BACKBONES = ("i3d_resnet", "tsm_resnet")
AGGREGATIONS = ("tsn", "dsa", "v4d", "se")

__all__ = [
  "AGGREGATIONS",
  "BACKBONES",
  "Recognizer",
  "build_model",
  "make_inserts",
  "model_rngs",
  "rng_seeds",
]


def rng_seeds(seed: int) -> dict[str, int]:
  """The project's one seed convention: parameters from `seed`, dropout masks from `seed + 1`."""
  return {"params": int(seed), "dropout": int(seed) + 1}


def model_rngs(seed: int) -> nnx.Rngs:
  """`nnx.Rngs` for `build_model` under the seed convention of `rng_seeds`."""
  return nnx.Rngs(**rng_seeds(seed))


def make_inserts(model_cfg: ml_collections.ConfigDict) -> list[list[Insert]]:
  """The per-stage, per-block `Insert` table from the config's aggregation and insert_freq."""
  backbone = check_choice(model_cfg.backbone, BACKBONES, key="model.backbone")
  agg = check_choice(model_cfg.aggregation, AGGREGATIONS, key="model.aggregation")
  depth = check_choice(model_cfg.depth, sorted(ARCH), key="model.depth")
  num_blocks = ARCH[depth][1]
  kind = {"tsn": "none", "dsa": "dsa", "se": "se", "v4d": "r4d"}[agg]
  if kind in ("dsa", "se"):
    check_choice(model_cfg.insert_place, PLACES, key="model.insert_place")
  if kind == "none":
    flags = [(0,) * nb for nb in num_blocks]
  else:
    flags = expand_stage_flags(model_cfg.insert_freq, num_blocks, key="model.insert_freq")
  u = int(model_cfg.num_segments)
  if u < 1:
    raise ValueError(f"model.num_segments={u} must be >= 1")
  tsm = backbone == "tsm_resnet"
  out = []
  for s, nb in enumerate(num_blocks):
    row = []
    for b in range(nb):
      row.append(
        Insert(
          kind=kind if flags[s][b] else "none",
          place=model_cfg.insert_place,
          num_segments=u,
          dsa_alpha=int(model_cfg.dsa.alpha),
          dsa_beta=float(model_cfg.dsa.beta),
          dsa_kernel_size=int(model_cfg.dsa.kernel_size),
          dsa_with_identity=bool(model_cfg.dsa.with_identity),
          se_reduction=int(model_cfg.se.reduction),
          temporal_shift=tsm,
          shift_div=int(model_cfg.tsm.shift_div),
        )
      )
    out.append(row)
  return out


def build_model(model_cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> Recognizer:
  """Builds the recognizer described by `model_cfg` (the config's `model` section).

  `rngs` needs a `params` stream and a `dropout` stream (e.g. `nnx.Rngs(params=0, dropout=1)`).
  Raises ValueError naming the config key for unknown names or impossible insertion maps.
  """
  inserts = make_inserts(model_cfg)
  dtype = parse_dtype(model_cfg.dtype)
  cm = Common(
    dtype=dtype,
    conv_impl=resolve_conv_impl(model_cfg.conv_impl),
    bn_momentum=float(model_cfg.bn_momentum),
    bn_epsilon=float(model_cfg.bn_epsilon),
  )
  inflate = expand_stage_flags(
    model_cfg.inflate_freq, ARCH[model_cfg.depth][1], key="model.inflate_freq"
  )
  if model_cfg.backbone == "tsm_resnet" and any(any(row) for row in inflate):
    raise ValueError(
      "model.backbone='tsm_resnet' is a 2D ResNet: set model.inflate_freq=(0, 0, 0, 0), "
      f"got {model_cfg.inflate_freq!r}"
    )
  if int(model_cfg.base_width) < 1:
    raise ValueError(f"model.base_width={model_cfg.base_width} must be >= 1")
  if int(model_cfg.bn_group_size) < 0:
    raise ValueError(f"model.bn_group_size={model_cfg.bn_group_size} must be >= 0")
  backbone = ResNet3d(
    int(model_cfg.depth),
    base_width=int(model_cfg.base_width),
    inflate_freq=model_cfg.inflate_freq,
    inflate_style=model_cfg.inflate_style,
    inserts=inserts,
    remat=bool(model_cfg.remat),
    cm=cm,
    rngs=rngs,
  )
  head = ClsHead(
    backbone.out_channels,
    int(model_cfg.num_classes),
    dropout_rate=float(model_cfg.dropout_rate),
    dtype=dtype,
    rngs=rngs,
  )
  return Recognizer(
    backbone,
    head,
    num_segments=int(model_cfg.num_segments),
    bn_group_size=int(model_cfg.bn_group_size),
    dtype=dtype,
  )
