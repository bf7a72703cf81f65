"""The Dynamic Segment Aggregation (DSA) module (spec dsanet.md §1.3).

Acts on snippet features x [N*U, T, H, W, C] (video-major, snippet-minor). The first
C' = floor(beta*C) channels of each snippet are replaced by a convex combination, with a per-video,
per-channel 3-tap kernel generated from the U-length snippet descriptor, of the same channel in the
previous, current and next snippet (zero padded at the ends); the other channels pass through.

Two static switches for analysis (`dsanet_jax.tools.explain`); their defaults change nothing:
`aggregate=False` makes the module the identity (every snippet on its own: the paper's "average
prediction"); `record_kernels=True` sows the generated kernels as `nnx.Intermediate` "kernels",
read with `nnx.capture`. Set them on a copy with `nnx.view(model, only=DSA, aggregate=False)`.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from dsanet_jax.models.layers import BatchNorm, Linear


class DSA(nnx.Module):
  """DSA. Parameters: fc1 (U -> alpha*U), bn (alpha*U), fc2 (alpha*U -> L); 72 for U=4, L=3.

  Names mirror the original `dsa.generate.{0,1,3}` as `dsa.{fc1,bn,fc2}`.
  """

  def __init__(
    self,
    in_channels: int,
    num_segments: int,
    *,
    alpha: int = 2,
    beta: float = 1 / 8,
    kernel_size: int = 3,
    with_identity: bool = False,
    bn_momentum: float = 0.9,
    bn_epsilon: float = 1e-5,
    dtype: jnp.dtype = jnp.float32,
    where: str = "DSA",
    rngs: nnx.Rngs,
  ) -> None:
    self.channels = int(in_channels * beta)
    if self.channels < 1:
      raise ValueError(
        f"{where}: floor(beta*C) = floor({beta}*{in_channels}) = {self.channels} < 1; "
        "raise model.dsa.beta or insert DSA where there are more channels"
      )
    if kernel_size < 1 or kernel_size % 2 == 0:
      raise ValueError(f"{where}: model.dsa.kernel_size must be odd and >= 1, got {kernel_size}")
    if alpha < 1:
      raise ValueError(f"{where}: model.dsa.alpha must be >= 1, got {alpha}")
    self.num_segments = num_segments
    self.kernel_size = kernel_size
    self.with_identity = with_identity
    self.dtype = dtype
    self.aggregate = True  # False: the identity (see the module docstring)
    self.record_kernels = False  # True: sow the kernels f32 [N, C', L] as nnx.Intermediate
    hidden = int(alpha * num_segments)
    self.fc1 = Linear(num_segments, hidden, use_bias=False, rngs=rngs)
    self.bn = BatchNorm(hidden, momentum=bn_momentum, epsilon=bn_epsilon)
    self.fc2 = Linear(hidden, kernel_size, use_bias=False, rngs=rngs)

  def set_view(self, aggregate: bool | None = None, record_kernels: bool | None = None) -> None:
    """For `nnx.view(model, only=DSA, aggregate=..., record_kernels=...)`: the static switches."""
    if aggregate is not None:
      self.aggregate = bool(aggregate)
    if record_kernels is not None:
      self.record_kernels = bool(record_kernels)

  def kernels(self, x: jax.Array, *, num_groups: int = 1) -> jax.Array:
    """The generated kernels: x [N*U, T, H, W, C] -> f32 [N, C', L] (softmax over L)."""
    u, cp = self.num_segments, self.channels
    n = x.shape[0] // u
    v = x[..., :cp].reshape(n, u, -1, cp)
    s = v.astype(jnp.float32).mean(axis=2)  # [N, U, C']
    s = s.transpose(0, 2, 1).reshape(n * cp, u)  # rows (n, c), n-major
    h = jax.nn.relu(self.bn(self.fc1(s), num_groups=num_groups))
    k = jax.nn.softmax(self.fc2(h), axis=-1)
    return k.reshape(n, cp, self.kernel_size)

  def __call__(self, x: jax.Array, *, num_groups: int = 1) -> jax.Array:
    """x [N*U, T, H, W, C] -> same shape and dtype. `num_groups`: BatchNorm video groups."""
    u, cp, taps = self.num_segments, self.channels, self.kernel_size
    if x.ndim != 5 or x.shape[0] % u:
      raise ValueError(f"DSA expects [N*U, T, H, W, C] with U={u}, got shape {x.shape}")
    if not self.aggregate:
      return x
    b, t, h, w, c = x.shape
    n = b // u
    k = self.kernels(x, num_groups=num_groups)  # f32 [N, C', L]
    if self.record_kernels:
      self.sow(nnx.Intermediate, "kernels", k)
    k = k.astype(x.dtype)
    v = x[..., :cp].reshape(n, u, t, h, w, cp)
    pad = taps // 2
    vp = jnp.pad(v, ((0, 0), (pad, pad), (0, 0), (0, 0), (0, 0), (0, 0)))
    # Tap j multiplies snippet u + j - pad: tap 0 = the previous snippet.
    y = None
    for j in range(taps):
      term = k[:, None, None, None, None, :, j] * vp[:, j : j + u]
      y = term if y is None else y + term
    if self.with_identity:
      y = y + v
    y = y.reshape(b, t, h, w, cp)
    if cp == c:
      return y
    return jnp.concatenate([y, x[..., cp:]], axis=-1)
