"""The paper's other snippet/temporal operators: SE (SENet+I3D), V4D's R4D block, TSM's shift.

All act on snippet features x [N*U, T, H, W, C] (video-major, snippet-minor).
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from dsanet_jax.models.layers import Linear, torch_default_uniform


class SE(nnx.Module):
  """Squeeze-and-excitation per snippet: x * sigmoid(fc2(relu(fc1(mean_{T,H,W} x)))).

  fc1: C -> max(C // reduction, 1), fc2: back to C, both with bias, PyTorch default init.
  x [B, T, H, W, C] -> same shape and dtype.
  """

  def __init__(
    self, channels: int, *, reduction: int = 16, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs
  ) -> None:
    hidden = max(channels // reduction, 1)
    self.fc1 = Linear(channels, hidden, rngs=rngs)
    self.fc2 = Linear(hidden, channels, rngs=rngs)
    self.dtype = dtype

  def __call__(self, x: jax.Array, **unused: Any) -> jax.Array:
    s = x.astype(jnp.float32).mean(axis=(1, 2, 3))  # [B, C]
    g = jax.nn.sigmoid(self.fc2(jax.nn.relu(self.fc1(s))))
    return x * g[:, None, None, None, :].astype(x.dtype)


class R4D(nnx.Module):
  """V4D's residual 4D block: x + conv4d(x), a dense C -> C kernel (3, 3, 1, 1) over (U, T, H, W).

  Padding (1, 1, 0, 0), no bias, no BN or activation, PyTorch default conv init
  (fan_in = 9*C). kernel [kU, kT, 1, 1, C_in, C_out] ("UTHWIO").
  x [N*U, T, H, W, C] -> same shape and dtype.
  """

  def __init__(
    self, channels: int, num_segments: int, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs
  ) -> None:
    shape = (3, 3, 1, 1, channels, channels)
    self.kernel = nnx.Param(torch_default_uniform(rngs.params(), shape, 9 * channels))
    self.num_segments = num_segments
    self.dtype = dtype

  def __call__(self, x: jax.Array, **unused: Any) -> jax.Array:
    u = self.num_segments
    b, t, h, w, c = x.shape
    n = b // u
    # A 2D conv over (U, T) with the N*H*W spatial positions as the batch.
    z = x.reshape(n, u, t, h * w, c).transpose(0, 3, 1, 2, 4).reshape(n * h * w, u, t, c)
    k = self.kernel[...][:, :, 0, 0].astype(x.dtype)  # [3, 3, C, C] (U, T, I, O)
    y = jax.lax.conv_general_dilated(
      z, k, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = y.reshape(n, h * w, u, t, c).transpose(0, 2, 3, 1, 4).reshape(b, t, h, w, c)
    return x + y


def temporal_shift(x: jax.Array, num_segments: int, shift_div: int = 8) -> jax.Array:
  """TSM's shift along each video's frame sequence (its U*T frames, snippet-major), zero fill.

  Channels [0, C/d): frame t takes frame t+1's values; [C/d, 2C/d): frame t takes frame t-1's
  (mmaction's `TemporalShift`); the rest are unchanged. x [N*U, T, H, W, C] -> same.
  """
  b, t, h, w, c = x.shape
  n = b // num_segments
  fold = c // shift_div
  if fold < 1:
    raise ValueError(f"temporal_shift: C={c} // model.tsm.shift_div={shift_div} < 1")
  v = x.reshape(n, num_segments * t, h, w, c)
  zero = jnp.zeros_like(v[:, :1, ..., :fold])
  left = jnp.concatenate([v[:, 1:, ..., :fold], zero], axis=1)
  right = jnp.concatenate([zero, v[:, :-1, ..., fold : 2 * fold]], axis=1)
  out = jnp.concatenate([left, right, v[..., 2 * fold :]], axis=-1)
  return out.reshape(b, t, h, w, c)
