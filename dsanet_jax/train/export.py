"""The exported model: the eval-mode forward serialised with `jax.export`, and its signature.

`export_model(config, workdir=..., checkpoint=..., out_dir=...)` writes `out_dir/`:

  model.jax       `jax.export.Exported.serialize()` of `x -> logits` with the weights inside:
                  input float32 [B, U, T, S, S, 3] (B symbolic), normalised as
                  `python -m dsanet_jax.predict --input_npy` expects (RGB, (x - mean) / std on the
                  0-255 scale); output float32 logits [B, K] (averaged over the U snippets).
                  Lowered for the platforms in signature.json (cpu and cuda at least).
  signature.json  shapes, dtype, normalisation, crop size, U, T, class names, platforms, source.

Reading it needs jax alone:
  exp = jax.export.deserialize(open("model.jax", "rb").read()); logits = exp.call(x)
"""

import json
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from dsanet_jax.common import paths
from dsanet_jax.train import inference

FORMAT = "dsanet_jax.export/1"
MODEL_FILE = "model.jax"
SIGNATURE_FILE = "signature.json"
PLATFORMS = ("cpu", "cuda")


def export_model(
  config: ml_collections.ConfigDict,
  *,
  out_dir: str,
  workdir: str | None = None,
  checkpoint: str | None = None,
  platforms: Sequence[str] = PLATFORMS,
) -> str:
  """Exports the model of the workdir's latest checkpoint (or `checkpoint` / `config.init_from`).

  Returns `out_dir`.
  """
  pred = inference.load_predictor(config, checkpoint=checkpoint, workdir=workdir)
  cfg = pred.config
  u, t, s = int(cfg.model.num_segments), int(cfg.data.num_frames), int(cfg.eval.crop_size)
  graph, variables = nnx.split(pred.model)  # eval mode; the arrays become constants

  def forward(x: jax.Array) -> jax.Array:
    return nnx.merge(graph, variables)(x).astype(jnp.float32)

  (b,) = jax.export.symbolic_shape("B")
  spec = jax.ShapeDtypeStruct((b, u, t, s, s, 3), jnp.float32)
  exported = jax.export.export(jax.jit(forward), platforms=platforms)(spec)
  out = paths.resolve(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / MODEL_FILE).write_bytes(exported.serialize())
  k = int(cfg.model.num_classes)
  signature = {
    "format": FORMAT,
    "input": {
      "shape": ["B", u, t, s, s, 3],
      "dtype": "float32",
      "layout": "[batch, snippets U, frames T, height, width, RGB]",
      "normalisation": {
        "mean": list(cfg.data.mean),
        "std": list(cfg.data.std),
        "formula": "(rgb_0_255 - mean) / std",
      },
    },
    "output": {"shape": ["B", k], "dtype": "float32", "meaning": "logits averaged over U"},
    "num_segments": u,
    "num_frames": t,
    "crop_size": s,
    "short_side": int(cfg.eval.short_side),
    "class_names": pred.class_names,
    "platforms": list(platforms),
    "source": pred.loaded.source,
    "step": pred.loaded.step,
    "model": cfg.model.to_dict(),
  }
  (out / SIGNATURE_FILE).write_text(json.dumps(signature, indent=1, default=list))
  return out_dir
