"""`config.init_from`: where a run's weights come from when it has no checkpoint of its own.

  None or ''    nothing (fresh init; refused at start-up when `config.init_expected` names what the
                recipe starts from);
  'scratch'     fresh init, asked for;
  a directory   a converted model directory (`dsanet_jax.convert.checkpoint_io`);
  a file        a PyTorch `.pth` / `.safetensors` checkpoint converted at start-up by
                `dsanet_jax.convert.port` (a torchvision 2D ImageNet ResNet is inflated to I3D as
                the original does; DSA / SE / R4D and the head start fresh).

This is the train package's one door to `dsanet_jax.convert`.
"""

from typing import Any

import ml_collections
from absl import logging
from flax import nnx

from dsanet_jax.common import paths
from dsanet_jax.convert import checkpoint_io
from dsanet_jax.convert.checkpoint_io import METADATA_FILE
from dsanet_jax.train import logging as log_lib
from dsanet_jax.train.restore import StateError

SCRATCH = "scratch"
TORCH_SUFFIXES = (".pth", ".pt", ".tar", ".bin", ".safetensors")


def init_source(
  config: ml_collections.ConfigDict, *, for_training: bool = True
) -> tuple[str, str | None]:
  """('none' | 'scratch' | 'converted' | 'torch', path) of `config.init_from`; checks it exists.

  Raises StateError (one line, naming the field) for a missing path, an unknown kind of file, or
  (`for_training`) a missing init_from where `config.init_expected` names what the recipe starts
  from.
  """
  src = config.get("init_from")
  expected = config.get("init_expected", "")
  if src is None or src == "":
    if expected and for_training:
      raise StateError(
        f"config.init_from is not set, but this recipe starts from {expected} "
        "(config.init_expected): pass --config.init_from=PATH (a converted model directory or "
        "the .pth / .safetensors file), or --config.init_from=scratch to train from scratch"
      )
    return "none", None
  if src == SCRATCH:
    return SCRATCH, None
  path = paths.resolve(src)
  hint = f" ({expected})" if expected else ""
  if not path.exists():
    raise StateError(
      f"config.init_from={src}: no such file or directory{hint}; "
      "pass --config.init_from=scratch to train from scratch"
    )
  if path.is_dir():
    checkpoint_io.read_metadata(path)  # fails naming metadata.json if it is not one
    return "converted", str(path)
  if path.name.endswith(TORCH_SUFFIXES):
    return "torch", str(path)
  raise StateError(
    f"config.init_from={src}: expected a converted model directory or a PyTorch "
    f"{'/'.join(TORCH_SUFFIXES)} file"
  )


def check_init_source(config: ml_collections.ConfigDict, *, for_training: bool = True) -> None:
  """Start-up check of `config.init_from` / `config.init_expected` (see `init_source`)."""
  init_source(config, for_training=for_training)


def init_model(config: ml_collections.ConfigDict) -> tuple[nnx.Module | None, dict, str]:
  """(model or None for scratch, metadata, source) of `config.init_from`."""
  kind, path = init_source(config)
  if kind in ("none", SCRATCH):
    return None, {}, SCRATCH
  if kind == "converted":
    try:
      model, meta = checkpoint_io.load_model(path, config.model, seed=config.seed)
    except ValueError as e:
      raise StateError(f"config.init_from={path}: {e}") from e
    return model, meta, f"converted:{path}"
  from dsanet_jax.convert import port, torch_checkpoint

  try:
    model, report = port.convert_checkpoint(path, config.model, seed=config.seed)
  except torch_checkpoint.CheckpointError as e:  # CheckpointError and ConversionError: ValueErrors
    raise StateError(f"config.init_from={path}: {e}") from e
  except ValueError as e:
    raise StateError(f"config.init_from={path}: {e}") from e
  logging.info("init_from %s: %s", path, report.summary(list_fresh=False))
  if report.fresh:
    log_lib.file_only("init_from %s: initialised fresh: %s", path, ", ".join(report.fresh))
  return model, {"class_names": None, "report": report}, f"{report.source}:{path}"


def is_model_dir(path: str) -> bool:
  """Whether `path` is a converted model directory (holds METADATA_FILE)."""
  return (paths.resolve(path) / METADATA_FILE).is_file()


def model_dir_config(path: str) -> dict[str, Any]:
  """The stored model section of the converted model directory `path`."""
  return checkpoint_io.read_metadata(path)["config"]
