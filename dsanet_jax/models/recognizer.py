"""The video-level recognizer: backbone over N*U snippets, then the I3D head averaged over U."""

import jax
import jax.numpy as jnp
from flax import nnx

from dsanet_jax.models.layers import Linear
from dsanet_jax.models.resnet import ResNet3d


class ClsHead(nnx.Module):
  """Global average pool over (T, H, W), dropout, fc_cls. [B, T, H, W, C] -> f32 [B, K]."""

  def __init__(
    self,
    in_channels: int,
    num_classes: int,
    *,
    dropout_rate: float,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
  ) -> None:
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.fc_cls = Linear(in_channels, num_classes, init="normal_0.01", dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    pooled = x.astype(jnp.float32).mean(axis=(1, 2, 3))
    return self.fc_cls(self.dropout(pooled)).astype(jnp.float32)


class Recognizer(nnx.Module):
  """DSANet-style recognizer. Attributes `backbone`, `cls_head` (original names).

  `__call__(video [N, U, T, H, W, 3]) -> f32 logits [N, K]` (averaged over the U snippets).
  """

  def __init__(
    self,
    backbone: ResNet3d,
    cls_head: ClsHead,
    *,
    num_segments: int,
    bn_group_size: int,
    dtype: jnp.dtype,
  ) -> None:
    self.backbone = backbone
    self.cls_head = cls_head
    self.num_segments = num_segments
    self.bn_group_size = bn_group_size
    self.dtype = dtype
    # Set by model.train() / model.eval() (as on every BatchNorm): groups only matter in training.
    self.use_running_average = False

  def _check(self, video: jax.Array) -> None:
    if video.ndim != 6 or video.shape[-1] != 3:
      raise ValueError(f"Recognizer expects video [N, U, T, H, W, 3], got shape {video.shape}")
    if video.shape[1] != self.num_segments:
      raise ValueError(
        f"video has U={video.shape[1]} snippets but the model was built for "
        f"model.num_segments={self.num_segments}"
      )

  def num_groups(self, num_videos: int) -> int:
    """BatchNorm statistics groups for a batch of `num_videos` videos."""
    g = self.bn_group_size
    if g <= 0 or self.use_running_average:
      return 1
    if num_videos % g:
      raise ValueError(f"batch of {num_videos} videos is not a multiple of model.bn_group_size={g}")
    return num_videos // g

  def features(self, video: jax.Array) -> jax.Array:
    """video [N, U, T, H, W, 3] -> f32 [N*U, T', H', W', C] (backbone output)."""
    self._check(video)
    n = video.shape[0]
    x = video.reshape(-1, *video.shape[2:]).astype(self.dtype)
    return self.backbone(x, num_groups=self.num_groups(n)).astype(jnp.float32)

  def __call__(self, video: jax.Array) -> jax.Array:
    self._check(video)
    n, u = video.shape[:2]
    x = video.reshape(-1, *video.shape[2:]).astype(self.dtype)
    feats = self.backbone(x, num_groups=self.num_groups(n))
    with jax.named_scope("cls_head"):
      logits = self.cls_head(feats)
    return logits.reshape(n, u, -1).mean(axis=1)
