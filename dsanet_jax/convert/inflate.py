"""Inflating a torchvision-layout 2D ImageNet ResNet into the I3D backbone, as the original does.

The original (`ResNet_I3D.init_weights`, spec §3.1) builds the 2D ResNet, then for every Conv3d
whose dotted name exists in the 2D model sets W3d[o, i, t, h, w] = W2d[o, i, h, w] / kT (the same
for every t: a video of identical frames gives the 2D features on every frame), and copies
BatchNorm weight, bias, running_mean and running_var. The 2D `fc` is ignored; DSA / R4D and the
head are not in the 2D model and keep their fresh initialisation.
"""

from collections.abc import Mapping

import numpy as np

from dsanet_jax.convert.keymap import ConversionError, Entry

# 2D keys that are dropped on purpose.
DROPPED_2D = ("fc.weight", "fc.bias")


def is_fresh(entry: Entry) -> bool:
  """Parts the 2D network does not have: the head, DSA and R4D."""
  return (
    not entry.key.startswith("backbone.")
    or entry.kind == "r4d"
    or ".dsa." in entry.key
    or ".se." in entry.plain
  )


def inflate_resnet2d(
  sd2d: Mapping[str, np.ndarray], table: Mapping[str, Entry]
) -> tuple[dict[str, np.ndarray], list[str]]:
  """2D state dict -> {original 3D key: inflated tensor} for every backbone entry of `table`.

  Returns the 3D tensors (PyTorch layout, original keys) and the list of 2D keys dropped on
  purpose. Raises ConversionError listing every missing 2D key, unexpected 2D key and shape
  mismatch.
  """
  out: dict[str, np.ndarray] = {}
  used: set[str] = set()
  missing, mismatched = [], []
  for key, entry in table.items():
    if is_fresh(entry):
      continue
    k2 = entry.plain[len("backbone.") :]
    w = sd2d.get(k2)
    if w is None:
      missing.append(f"{k2} (for {key}, shape {entry.torch_shape})")
      continue
    used.add(k2)
    want = entry.torch_shape
    if entry.kind == "conv":
      o, i, kt, kh, kw = want
      if tuple(w.shape) != (o, i, kh, kw):
        mismatched.append(f"{k2}: shape {tuple(w.shape)}, expected {(o, i, kh, kw)} for {key}")
        continue
      out[key] = np.repeat(np.asarray(w, np.float32)[:, :, None], kt, axis=2) / kt
    else:
      if tuple(w.shape) != want:
        mismatched.append(f"{k2}: shape {tuple(w.shape)}, expected {want} for {key}")
        continue
      out[key] = np.asarray(w, np.float32)
  dropped = sorted(
    k for k in sd2d if k not in used and (k in DROPPED_2D or k.endswith("num_batches_tracked"))
  )
  unexpected = sorted(k for k in sd2d if k not in used and k not in dropped)
  if missing or unexpected or mismatched:
    raise ConversionError(
      format_problems("2D ResNet -> I3D inflation", missing, unexpected, mismatched)
    )
  return out, dropped


def format_problems(
  what: str, missing: list[str], unexpected: list[str], mismatched: list[str]
) -> str:
  """One message listing every offending key, by section."""
  lines = [f"{what}: refused"]
  for title, items in (
    ("missing (the model needs them, the checkpoint lacks them)", missing),
    ("unexpected (in the checkpoint, not in the model)", unexpected),
    ("shape mismatches", mismatched),
  ):
    if items:
      lines.append(f"  {len(items)} {title}:")
      lines += [f"    {x}" for x in items]
  return "\n".join(lines)
