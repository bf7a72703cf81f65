"""The real `models.layers.BatchNorm`, with the batch sharded over the 8 fake CPU devices.

Grouped statistics (one group per device's rows, as `model.bn_group_size` = per-device batch gives)
are checked against NumPy written here, and the sharded forward, gradients and running statistics
against the same computation on one device.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from dsanet_jax.models.layers import BatchNorm
from dsanet_jax.train import sharding as sharding_lib

B, C = 16, 4  # 16 snippets = 2 per device


def _run(devices, x, w, num_groups):
  """Train-mode BatchNorm on `devices`: (y, d(sum(y*w))/d(x, scale, bias), running mean, var)."""
  mesh = sharding_lib.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1)), devices)
  data, repl = sharding_lib.batch_sharding(mesh), sharding_lib.replicated(mesh)
  bn = BatchNorm(C, momentum=0.9, epsilon=1e-5)
  bn.scale[...] = jnp.linspace(0.5, 1.5, C)
  bn.bias[...] = jnp.linspace(-0.2, 0.3, C)
  graph, params, stats = nnx.split(bn, nnx.Param, nnx.BatchStat)
  params, stats = nnx.to_pure_dict(params), nnx.to_pure_dict(stats)  # as the trainer holds them

  def f(params, stats, x):
    def loss(params, x, stats):
      m = nnx.merge(graph, params, stats)
      y = m(x, num_groups=num_groups)
      return jnp.sum(y * w), (y, nnx.to_pure_dict(nnx.state(m, nnx.BatchStat)))

    (_, (y, new_stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
      params, x, stats
    )
    return y, grads, new_stats

  fn = jax.jit(f, in_shardings=(repl, repl, data), out_shardings=(data, repl, repl))
  y, (g_params, g_x), new_stats = fn(params, stats, jax.device_put(x, data))
  assert y.sharding.is_equivalent_to(data, y.ndim)
  return (
    np.asarray(y),
    (np.asarray(g_x), np.asarray(g_params["scale"]), np.asarray(g_params["bias"])),
    (np.asarray(new_stats["mean"]), np.asarray(new_stats["var"])),
  )


def test_grouped_batchnorm_sharded_over_8_devices():
  assert len(jax.devices()) == 8
  rng = np.random.RandomState(0)
  x = (rng.randn(B, 2, 3, 3, C) * np.array([1.0, 2.0, 0.5, 3.0]) + 1.0).astype(np.float32)
  w = jnp.asarray(rng.randn(*x.shape).astype(np.float32))
  groups = 8
  y8, g8, s8 = _run(jax.devices(), x, w, groups)
  y1, g1, s1 = _run(jax.devices()[:1], x, w, groups)

  # NumPy: each device's 2 snippets (2*3*3*2 = 36 values per channel) are one group.
  xg = x.reshape(groups, -1, C).astype(np.float64)
  mean, var = xg.mean(1, keepdims=True), xg.var(1, keepdims=True)
  scale, bias = np.linspace(0.5, 1.5, C), np.linspace(-0.2, 0.3, C)
  want = ((xg - mean) / np.sqrt(var + 1e-5) * scale + bias).reshape(x.shape)
  np.testing.assert_allclose(y8, want, atol=2e-5)
  np.testing.assert_allclose(y8, y1, atol=1e-6)
  for a, b in zip(g8, g1):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # d/d bias of sum(y * w) is sum(w) per channel; d/d scale is sum(w * x_hat).
  np.testing.assert_allclose(g8[2], np.asarray(w).reshape(-1, C).sum(0), rtol=1e-5, atol=1e-4)
  x_hat = ((xg - mean) / np.sqrt(var + 1e-5)).reshape(-1, C)
  np.testing.assert_allclose(
    g8[1], (np.asarray(w).reshape(-1, C) * x_hat).sum(0), rtol=1e-4, atol=1e-4
  )
  for a, b in zip(s8, s1):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  # Per-device groups are not the global statistics: the grouping is what is being tested.
  yg, _, _ = _run(jax.devices(), x, w, 1)
  assert np.abs(yg - y8).max() > 1e-2
