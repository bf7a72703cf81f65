"""Stand-ins for the trainer tests: a tiny NNX recognizer with the models' contract.

`TinyRecognizer(video [N, U, T, H, W, 3]) -> f32 [N, K]`: conv -> grouped BatchNorm -> relu ->
dropout -> mean over (T, H, W) -> fc, logits averaged over U. BatchNorm statistics are taken per
group of `bn_group_size` videos (0 = whole batch), as the real models do.
"""

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx


class GroupBatchNorm(nnx.Module):
  def __init__(self, c: int, group: int, *, rngs: nnx.Rngs):
    self.bn = nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.group = group

  def __call__(self, x: jax.Array, num_videos: int) -> jax.Array:
    if self.group <= 0 or self.bn.use_running_average:
      return self.bn(x)
    g = num_videos // self.group
    xs = x.reshape(g, -1, *x.shape[1:])
    mean = xs.mean(axis=tuple(range(1, xs.ndim - 1)))  # [g, C]
    var = xs.var(axis=tuple(range(1, xs.ndim - 1)))
    m = self.bn.momentum
    self.bn.mean[...] = m * self.bn.mean[...] + (1 - m) * mean.mean(0)
    self.bn.var[...] = m * self.bn.var[...] + (1 - m) * var.mean(0)
    y = (xs - mean[:, None, None, None]) * jax.lax.rsqrt(var[:, None, None, None] + 1e-5)
    y = y.reshape(x.shape)
    return y * self.bn.scale[...] + self.bn.bias[...]


class TinyRecognizer(nnx.Module):
  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    w = cfg.base_width
    self.num_segments = cfg.num_segments
    self.conv = nnx.Conv(3, w, (3, 3), strides=2, rngs=rngs)
    self.bn = GroupBatchNorm(w, cfg.bn_group_size, rngs=rngs)
    self.dropout = nnx.Dropout(cfg.dropout_rate, rngs=rngs)
    self.fc = nnx.Linear(w, cfg.num_classes, rngs=rngs)

  def __call__(self, video: jax.Array) -> jax.Array:
    n, u, t, h, wd, c = video.shape
    assert u == self.num_segments, (u, self.num_segments)
    x = video.reshape(n * u * t, h, wd, c)
    x = jax.nn.relu(self.bn(self.conv(x), n))
    x = x.reshape(n * u, t, *x.shape[1:]).mean(axis=(1, 2, 3))
    logits = self.fc(self.dropout(x))
    return logits.reshape(n, u, -1).mean(1).astype(jnp.float32)


def tiny_model_cfg(**kw) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(
    dict(base_width=8, num_segments=2, num_classes=5, bn_group_size=0, dropout_rate=0.5)
  )
  c.update(kw)
  return c
