r"""Converts a PyTorch checkpoint into a dsanet_jax model checkpoint directory.

  python -m dsanet_jax.convert --torch_checkpoint=IN.pth|IN.safetensors \
    --config=configs/kinetics400/dsa_i3d_r50.py [--config.model.x=...] --output=DIR \
    [--class_names=FILE] [--allow_new_head] [--source=auto|dsanet|v4d|torchvision]

Sources: the original DSANet / mmaction checkpoints (`backbone.*`, `cls_head.fc_cls.*`, bare or in
{'state_dict', 'meta', 'optimizer'}, optional `module.` prefix), research-v4d checkpoints
(`base_model.*`, `new_fc.*`) and torchvision-layout 2D ImageNet ResNets (inflated to I3D; the head,
DSA and R4D are initialised fresh). The output is read by `python -m dsanet_jax.predict`,
`main.py --mode=predict|eval|export` and `main.py --config.init_from=DIR` (layout:
`dsanet_jax/convert/checkpoint_io.py`). A training run can also take the PyTorch file itself:
`--config.init_from=IN.pth` converts it the same way at start-up.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from dsanet_jax.common import paths
from dsanet_jax.convert import checkpoint_io, port, torch_checkpoint

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file.", lock_config=True
)
_TORCH_CKPT = flags.DEFINE_string("torch_checkpoint", None, "PyTorch .pth/.pt or .safetensors.")
_OUTPUT = flags.DEFINE_string("output", None, "Output checkpoint directory.")
_CLASS_NAMES = flags.DEFINE_string(
  "class_names", None, "Optional class list: a text file (one name per line) or a JSON list."
)
_ALLOW_NEW_HEAD = flags.DEFINE_bool(
  "allow_new_head", False, "Initialise the head fresh when the checkpoint's class count differs."
)
_SOURCE = flags.DEFINE_enum(
  "source", "auto", list(torch_checkpoint.SOURCES), "Checkpoint layout (auto: from the keys)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the parts initialised fresh.")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:  # Orbax's INFO lines unless -v is asked for
    logging.set_verbosity(logging.WARNING)
  for name, flag in (("config", _CONFIG), ("torch_checkpoint", _TORCH_CKPT), ("output", _OUTPUT)):
    if flag.value is None:
      raise app.UsageError(f"--{name} is required")
  cfg = _CONFIG.value
  names = None
  if _CLASS_NAMES.value:
    names = checkpoint_io.read_class_names(_CLASS_NAMES.value, cfg.model.num_classes)
  try:
    model, report = port.convert_checkpoint(
      _TORCH_CKPT.value,
      cfg.model,
      source=_SOURCE.value,
      allow_new_head=_ALLOW_NEW_HEAD.value,
      seed=_SEED.value,
    )
  except torch_checkpoint.CheckpointError as e:  # a refused checkpoint: the message says it all
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"inferred from the checkpoint: {report.inferred}")
  print(report.summary())
  out = checkpoint_io.save_model(
    _OUTPUT.value,
    model,
    {
      "config": cfg.model,
      "class_names": names,
      "source": {
        "torch_checkpoint": str(paths.resolve(_TORCH_CKPT.value)),
        "layout": report.source,
        "allow_new_head": _ALLOW_NEW_HEAD.value,
        "fresh": report.fresh,
        "notes": report.notes,
      },
    },
  )
  print(f"wrote {out} ({report.source}: {len(report.loaded)} tensors, {len(report.fresh)} fresh)")


if __name__ == "__main__":
  app.run(main)
