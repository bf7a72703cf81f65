"""Basic layers: DHWIO convolutions in two formulations, grouped BatchNorm, Linear, max-pool.

All activations are channels-last. Video tensors inside the backbone are [B, T, H, W, C] with
B = N*U snippets (video-major, snippet-minor). Parameters are float32; computation runs in the
`dtype` each layer is given.
"""

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

CONV_IMPLS = ("auto", "conv3d", "frames2d")
# frames2d: spatial kernels on output frames of at most this many pixels use im2col + matmul.
IM2COL_MAX_PIXELS = 64
# frames2d: XLA convs on input frames of at least this many pixels take their weight gradient from
# matmuls (`_weight_grad_rows`), not from XLA:CPU's backprop-filter convolution (several x slower).
ROWS_DW_MIN_PIXELS = 400


def resolve_conv_impl(impl: str) -> str:
  """Maps 'auto' to the faster formulation on the default backend (XLA:CPU: 'frames2d')."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"model.conv_impl={impl!r} is not supported; choose one of {list(CONV_IMPLS)}")
  if impl == "auto":
    return "frames2d" if jax.default_backend() == "cpu" else "conv3d"
  return impl


def kaiming_normal_fan_out(key: jax.Array, shape: Sequence[int]) -> jax.Array:
  """He normal init, mode fan_out, gain sqrt(2) (mmcv `kaiming_init`), for DHWIO kernels."""
  fan_out = math.prod(shape[:-2]) * shape[-1]
  return jax.random.normal(key, shape, jnp.float32) * math.sqrt(2.0 / fan_out)


def torch_default_uniform(key: jax.Array, shape: Sequence[int], fan_in: int) -> jax.Array:
  """PyTorch's default Linear/Conv init: kaiming-uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), +)."""
  bound = 1.0 / math.sqrt(fan_in)
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def conv3d(
  x: jax.Array, kernel: jax.Array, stride: Sequence[int], padding: Sequence[int]
) -> jax.Array:
  """Direct 3D convolution. x [B, T, H, W, I], kernel [kt, kh, kw, I, O] -> [B, T', H', W', O]."""
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    window_strides=tuple(stride),
    padding=[(p, p) for p in padding],
    dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
  )


def _conv2d(
  x: jax.Array, kernel: jax.Array, stride: tuple[int, int], padding: tuple[int, int]
) -> jax.Array:
  """2D convolution. x [N, H, W, I], kernel [kh, kw, I, O] -> [N, H', W', O]."""
  return jax.lax.conv_general_dilated(
    x,
    kernel,
    window_strides=stride,
    padding=[(p, p) for p in padding],
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )


def _weight_grad_rows(
  x: jax.Array, g: jax.Array, kh: int, kw: int, stride: tuple[int, int], padding: tuple[int, int]
) -> jax.Array:
  """The kernel gradient of `_conv2d` as kh matmuls: the kw width taps side by side, one matmul
  per row tap. x [N, H, W, I], g [N, H', W', O] -> [kh, kw, I, O]."""
  (sh, sw), (ph, pw) = stride, padding
  cin, cout, (ho, wo) = x.shape[-1], g.shape[-1], g.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  xw = jnp.concatenate([xp[:, :, j : j + (wo - 1) * sw + 1 : sw] for j in range(kw)], axis=-1)
  g2 = g.reshape(-1, cout)
  taps = [xw[:, i : i + (ho - 1) * sh + 1 : sh].reshape(g2.shape[0], kw * cin) for i in range(kh)]
  # XLA:CPU's matmul is faster with the smaller of the two output dims first (measured).
  if kw * cin < cout:
    return jnp.stack([jnp.dot(t.T, g2) for t in taps]).reshape(kh, kw, cin, cout)
  rows = jnp.stack([jnp.dot(g2.T, t) for t in taps])  # [kh, O, kw * I]
  return rows.reshape(kh, cout, kw, cin).transpose(0, 2, 3, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d_rows_dw(
  x: jax.Array, kernel: jax.Array, stride: tuple[int, int], padding: tuple[int, int]
) -> jax.Array:
  """`_conv2d` whose kernel gradient is `_weight_grad_rows` (the input gradient stays XLA's)."""
  return _conv2d(x, kernel, stride, padding)


def _conv2d_rows_dw_fwd(
  x: jax.Array, kernel: jax.Array, stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  return _conv2d(x, kernel, stride, padding), (x, kernel)


def _conv2d_rows_dw_bwd(
  stride: tuple[int, int], padding: tuple[int, int], res: tuple[jax.Array, jax.Array], g: jax.Array
) -> tuple[jax.Array, jax.Array]:
  x, kernel = res
  dx = jax.vjp(lambda x: _conv2d(x, kernel, stride, padding), x)[1](g)[0]
  kh, kw = kernel.shape[:2]
  return dx, _weight_grad_rows(x, g, kh, kw, stride, padding).astype(kernel.dtype)


_conv2d_rows_dw.defvjp(_conv2d_rows_dw_fwd, _conv2d_rows_dw_bwd)


def frames2d(
  x: jax.Array, kernel: jax.Array, stride: Sequence[int], padding: Sequence[int]
) -> jax.Array:
  """The same convolution computed with 2D convolutions over the B*T frames.

  1 x k x k kernels are a 2D conv over frames (1x1 ones a matmul after striding; on small output
  frames, <= IM2COL_MAX_PIXELS, an im2col matmul); kt x k x k kernels are one such 2D conv with
  kt*O outputs followed by a zero-padded shift-and-sum over T. On input frames of at least
  ROWS_DW_MIN_PIXELS pixels the 2D conv's kernel gradient is computed with matmuls.
  Temporal stride must be 1 (no temporal down-sampling anywhere in these networks).

  x [B, T, H, W, I], kernel [kt, kh, kw, I, O] -> [B, T', H', W', O].
  """
  kt, kh, kw, cin, cout = kernel.shape
  st, sh, sw = stride
  pt, ph, pw = padding
  if st != 1:
    raise ValueError(f"frames2d needs temporal stride 1, got stride {tuple(stride)}")
  b, t, h, w, _ = x.shape
  if kh == 1 and kw == 1 and ph == 0 and pw == 0:
    xs = x[:, :, ::sh, ::sw, :]
    ho, wo = xs.shape[2], xs.shape[3]
    y = jnp.dot(xs.reshape(-1, cin), kernel.transpose(3, 0, 1, 2, 4).reshape(cin, kt * cout))
  else:
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if ho * wo <= IM2COL_MAX_PIXELS:
      # Small frames (late stages): im2col (kh*kw shifted slices side by side) + one matmul beats
      # XLA:CPU's convolution, forward and backward.
      xp = jnp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw), (0, 0)))
      cols = [
        xp[:, :, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw]
        for i in range(kh)
        for j in range(kw)
      ]
      patches = jnp.concatenate(cols, axis=-1).reshape(-1, kh * kw * cin)
      k2 = kernel.transpose(1, 2, 3, 0, 4).reshape(kh * kw * cin, kt * cout)
      y = jnp.dot(patches, k2)
    else:
      k2 = kernel.transpose(1, 2, 3, 0, 4).reshape(kh, kw, cin, kt * cout)
      conv = _conv2d_rows_dw if h * w >= ROWS_DW_MIN_PIXELS else _conv2d
      y = conv(x.reshape(b * t, h, w, cin), k2, (sh, sw), (ph, pw))
  if kt == 1 and pt == 0:
    return y.reshape(b, t, ho, wo, cout)
  y = y.reshape(b, t, ho, wo, kt, cout)
  t_out = t + 2 * pt - kt + 1
  y = jnp.pad(y, ((0, 0), (pt, pt), (0, 0), (0, 0), (0, 0), (0, 0)))
  # out[t] = sum_j x[t + j - pt] * W[j]: input frame t + j - pt sits at padded index t + j.
  out = y[:, 0:t_out, :, :, 0, :]
  for j in range(1, kt):
    out = out + y[:, j : j + t_out, :, :, j, :]
  return out


class Conv(nnx.Module):
  """A bias-free 3D convolution with a DHWIO kernel and explicit symmetric padding.

  x [B, T, H, W, in_features] (any float dtype) -> [B, T', H', W', out_features] in `dtype`.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: Sequence[int],
    *,
    stride: Sequence[int] = (1, 1, 1),
    padding: Sequence[int] = (0, 0, 0),
    impl: str = "auto",
    dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ) -> None:
    shape = (*kernel_size, in_features, out_features)
    self.kernel = nnx.Param(kaiming_normal_fan_out(rngs.params(), shape))
    self.stride = tuple(stride)
    self.padding = tuple(padding)
    self.impl = resolve_conv_impl(impl)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    fn = conv3d if self.impl == "conv3d" else frames2d
    return fn(x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.stride, self.padding)


class Linear(nnx.Module):
  """y = x @ kernel (+ bias); kernel [in, out]. Output in `dtype`."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    use_bias: bool = True,
    init: str = "torch",
    dtype: jnp.dtype = jnp.float32,
    rngs: nnx.Rngs,
  ) -> None:
    if init == "torch":  # PyTorch nn.Linear default
      self.kernel = nnx.Param(
        torch_default_uniform(rngs.params(), (in_features, out_features), in_features)
      )
      bias = torch_default_uniform(rngs.params(), (out_features,), in_features)
    elif init == "normal_0.01":  # the original's classification head
      self.kernel = nnx.Param(
        0.01 * jax.random.normal(rngs.params(), (in_features, out_features), jnp.float32)
      )
      bias = jnp.zeros((out_features,), jnp.float32)
    else:
      raise ValueError(f"unknown Linear init {init!r}")
    self.bias = nnx.data(nnx.Param(bias) if use_bias else None)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class BatchNorm(nnx.Module):
  """BatchNorm over all axes but the last, with statistics per group of rows.

  `__call__(x, num_groups=G)`: x [R, ..., C]; the R leading rows are cut into G equal, contiguous
  groups (e.g. G groups of videos), each normalised with its own batch statistics in training, as
  per-device BatchNorm would on G devices. Statistics are computed in float32. The running `var`
  stores the UNBIASED variance (PyTorch convention), averaged over the groups, as is the mean.
  Flax momentum: running <- momentum * running + (1 - momentum) * batch.

  Running statistics are the MEAN over the groups, not group 0's. The original trained with
  per-GPU BatchNorm and saved rank 0's module, so its running statistics saw only rank 0's videos.
  Each group's batch statistics estimate the same per-group quantities, so the average has the
  same expectation with G times less sampling noise, and it does not depend on which videos land in
  group 0. With G = 1 the two are the same. Converted checkpoints keep their stored statistics.
  """

  def __init__(
    self,
    num_features: int,
    *,
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    dtype: jnp.dtype = jnp.float32,
    use_running_average: bool = False,
  ) -> None:
    self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
    self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
    self.momentum = momentum
    self.epsilon = epsilon
    self.dtype = dtype
    self.use_running_average = use_running_average

  def __call__(self, x: jax.Array, *, num_groups: int = 1) -> jax.Array:
    c = x.shape[-1]
    scale, bias = self.scale[...], self.bias[...]
    if self.use_running_average:
      mul = scale * jax.lax.rsqrt(self.var[...] + self.epsilon)
      add = bias - self.mean[...] * mul
      return (x.astype(jnp.float32) * mul + add).astype(self.dtype)
    if x.shape[0] % num_groups:
      raise ValueError(
        f"BatchNorm: {x.shape[0]} rows cannot be cut into {num_groups} equal groups "
        "(check model.bn_group_size against the batch size)"
      )
    # Statistics in float32. (XLA:CPU reduces a [R, C] view much faster than a [1, R, C] one, so
    # the common single-group case gets its own 2D path.)
    shape = (-1, c) if num_groups == 1 else (num_groups, -1, c)
    xg = x.reshape(shape).astype(jnp.float32)
    axis = xg.ndim - 2
    n = xg.shape[axis]
    if n < 2:
      raise ValueError(f"BatchNorm in training needs >= 2 values per channel and group, got {n}")
    mean = xg.mean(axis=axis, keepdims=num_groups > 1)  # [C] or [G, 1, C]
    var = jnp.square(xg - mean).mean(axis=axis, keepdims=num_groups > 1)  # biased, to normalise
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    y = (xg * mul + (bias - mean * mul)).astype(self.dtype).reshape(x.shape)
    mean, var = mean.reshape(-1, c), var.reshape(-1, c)
    m = self.momentum
    batch_mean = jax.lax.stop_gradient(mean.mean(axis=0))
    batch_var = jax.lax.stop_gradient(var.mean(axis=0) * (n / (n - 1)))
    self.mean[...] = m * self.mean[...] + (1 - m) * batch_mean
    self.var[...] = m * self.var[...] + (1 - m) * batch_var
    return y


def max_pool_1x3x3(x: jax.Array) -> jax.Array:
  """MaxPool3d((1,3,3), stride (1,2,2), padding (0,1,1)) with -inf padding. [B,T,H,W,C].

  Written as a maximum over the 9 strided window taps: on XLA:CPU its backward is several times
  faster than reduce_window's select-and-scatter. (Ties, which only occur between equal
  post-ReLU values, share the gradient instead of giving it to one element.)
  """
  h, w = x.shape[2], x.shape[3]
  ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  out = None
  for i in range(3):
    for j in range(3):
      tap = xp[:, :, i : i + 2 * ho - 1 : 2, j : j + 2 * wo - 1 : 2]
      out = tap if out is None else jnp.maximum(out, tap)
  return out
