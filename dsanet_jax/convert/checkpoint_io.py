"""The model checkpoint directory: what `convert` writes and `predict` / `--config.init_from` read.

Layout of `DIR/` (format "dsanet_jax.model/1"):

  DIR/metadata.json   {"format": "dsanet_jax.model/1",
                       "config": {...the `model` section of the config...},
                       "class_names": ["abseiling", ...] | null,
                       "source": {...free-form: where the weights came from...}}
  DIR/state/          an Orbax (StandardCheckpointer, OCDBT) pytree:
                        {"params":      nnx.to_pure_dict(nnx.state(model, nnx.Param)),
                         "batch_stats": nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))}
                      float32 arrays under the model's own attribute names (nnx.List entries as
                      integer keys), e.g. params/backbone/layer2/1/dsa/fc1/kernel.

`save_model(dir, model, metadata)` writes it; `load_model(dir, model_cfg)` builds the model from the
config, checks the architecture against the stored config and restores the arrays into it. A trainer
can instead restore `state` partially with Orbax's PyTreeCheckpointHandler (e.g. only "params").
"""

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from dsanet_jax.common import paths
from dsanet_jax.models import build_model, rng_seeds
from dsanet_jax.models.config_fields import architecture_differences, model_config, plain

FORMAT = "dsanet_jax.model/1"
METADATA_FILE = "metadata.json"
STATE_DIR = "state"


def read_class_names(path: str | os.PathLike, num_classes: int) -> list[str]:
  """A class list from a text file (one per line, blank lines ignored) or a JSON list."""
  path = paths.resolve(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such class-names file")
  text = path.read_text()
  if path.suffix == ".json":
    names = json.loads(text)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
      raise ValueError(f"{path}: expected a JSON list of strings")
  else:
    names = [ln.strip() for ln in text.splitlines() if ln.strip()]
  if len(names) != num_classes:
    raise ValueError(f"{path}: {len(names)} class names, but model.num_classes={num_classes}")
  if len(set(names)) != len(names):
    raise ValueError(f"{path}: duplicate class names")
  return names


def abstract_model(model_cfg: ml_collections.ConfigDict, seed: int = 0) -> nnx.Module:
  """The model of `model_cfg` without initialising it: cheap (no per-shape init compiles).

  Params and BatchStats are `jax.ShapeDtypeStruct` placeholders to be filled (restore, convert);
  the RNG state is concrete, as `build_model(..., rngs=models.model_rngs(seed))`.
  """
  seeds = rng_seeds(seed)
  model = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(**seeds)))
  rng_state = nnx.state(model, nnx.RngState)
  for _, var in nnx.to_flat_state(rng_state):
    x = var.get_value()
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      var.set_value(jax.random.key(seeds.get(getattr(var, "tag", None), seed)))
    else:
      var.set_value(jnp.zeros(x.shape, x.dtype))
  nnx.update(model, rng_state)
  return model


def initialise_missing(
  model: nnx.Module, model_cfg: ml_collections.ConfigDict, seed: int = 0
) -> list:
  """Gives the placeholders left in `model` (see `abstract_model`) their values from the model's
  own initialisation, as `build_model(..., rngs=models.model_rngs(seed))` would.

  Only the requested leaves are computed: the init is traced once and XLA drops the rest, so this
  is cheap even for a full-size network. Returns the paths filled.
  """
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  todo = [
    (p, v) for p, v in nnx.to_flat_state(state) if isinstance(v.get_value(), jax.ShapeDtypeStruct)
  ]
  if not todo:
    return []
  paths = [p for p, _ in todo]
  seeds = rng_seeds(seed)

  def init() -> list[jax.Array]:
    fresh = build_model(model_cfg, rngs=nnx.Rngs(**seeds))
    flat = dict(nnx.to_flat_state(nnx.state(fresh, (nnx.Param, nnx.BatchStat))))
    return [flat[p].get_value() for p in paths]

  for (_, var), value in zip(todo, jax.jit(init)()):
    var.set_value(value)
  nnx.update(model, state)
  return paths


def abstract_leaves(model: nnx.Module) -> list[str]:
  """Paths of Params / BatchStats still without values (see `abstract_model`)."""
  state = nnx.state(model, (nnx.Param, nnx.BatchStat))
  return [
    ".".join(map(str, p))
    for p, v in nnx.to_flat_state(state)
    if isinstance(v.get_value(), jax.ShapeDtypeStruct)
  ]


def read_metadata(ckpt_dir: str | os.PathLike) -> dict:
  """Reads and checks `DIR/metadata.json`."""
  path = paths.resolve(ckpt_dir) / METADATA_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path}: missing; is {ckpt_dir} a dsanet_jax model checkpoint?")
  meta = json.loads(path.read_text())
  if meta.get("format") != FORMAT:
    raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
  if not isinstance(meta.get("config"), dict):
    raise ValueError(f"{path}: no 'config' dict (the model section of the config)")
  return meta


def save_model(
  ckpt_dir: str | os.PathLike, model: nnx.Module, metadata: Mapping[str, Any]
) -> epath.Path:
  """Writes `model`'s Params and BatchStats and `metadata` (needs 'config') to `ckpt_dir`.

  `metadata['config']`: the model ConfigDict (or dict); 'class_names' (list or None) and any other
  JSON-able entries are stored as given. Overwrites an existing checkpoint directory.
  """
  ckpt_dir = paths.resolve(ckpt_dir)
  if "config" not in metadata:
    raise ValueError("save_model: metadata needs 'config' (the model section of the config)")
  meta = {"format": FORMAT, "class_names": None, **plain(dict(metadata))}
  names = meta["class_names"]
  if names is not None:
    k = meta["config"].get("num_classes")
    if not isinstance(names, list) or len(names) != k:
      raise ValueError(f"save_model: {len(names)} class names for model.num_classes={k}")
  params, batch_stats = nnx.state(model, nnx.Param, nnx.BatchStat)
  tree = {"params": nnx.to_pure_dict(params), "batch_stats": nnx.to_pure_dict(batch_stats)}
  ckpt_dir.mkdir(parents=True, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(ckpt_dir / STATE_DIR, tree, force=True)
  checkpointer.wait_until_finished()
  paths.write_whole(ckpt_dir / METADATA_FILE, json.dumps(meta, indent=1) + "\n")
  return ckpt_dir


def load_model(
  ckpt_dir: str | os.PathLike,
  model_cfg: ml_collections.ConfigDict | None = None,
  *,
  sharding: jax.sharding.Sharding | None = None,
  seed: int = 0,
) -> tuple[nnx.Module, dict]:
  """Builds the model of `model_cfg` (default: the stored config) and restores `ckpt_dir` into it.

  Raises ValueError listing the architecture fields where `model_cfg` and the stored config
  differ. `sharding`: where to place the arrays (default: the first local device).
  Returns (model, metadata).
  """
  ckpt_dir = paths.resolve(ckpt_dir)
  meta = read_metadata(ckpt_dir)
  if model_cfg is None:
    model_cfg = model_config(meta["config"])
  else:
    diffs = architecture_differences(meta["config"], model_cfg)
    if diffs:
      raise ValueError(f"{ckpt_dir}: made for another architecture: " + "; ".join(diffs))
  model = abstract_model(model_cfg, seed)
  params, batch_stats = nnx.state(model, nnx.Param, nnx.BatchStat)
  target = {"params": nnx.to_pure_dict(params), "batch_stats": nnx.to_pure_dict(batch_stats)}
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), target
  )
  try:
    restored = ocp.StandardCheckpointer().restore(ckpt_dir / STATE_DIR, abstract)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{ckpt_dir / STATE_DIR}: does not fit the model of the config: {e}") from e
  nnx.replace_by_pure_dict(params, restored["params"])
  nnx.replace_by_pure_dict(batch_stats, restored["batch_stats"])
  nnx.update(model, params, batch_stats)
  if abstract_leaves(model):
    raise ValueError(f"{ckpt_dir}: not restored: {abstract_leaves(model)}")
  return model, meta
