"""Models: parameter counts, conv formulations, BatchNorm groups, the baselines, errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs.base import DSA_R18_INSERT_FREQ, DSA_R50_INSERT_FREQ, get_base_config
from dsanet_jax.models import build_model
from dsanet_jax.models.aggregation import R4D, temporal_shift
from dsanet_jax.models.flops import count_params
from dsanet_jax.models.layers import BatchNorm, conv3d, frames2d, max_pool_1x3x3


def model_cfg(**kw) -> ml_collections.ConfigDict:
  c = get_base_config().model
  c.update(kw)
  return c


def tiny(**kw) -> ml_collections.ConfigDict:
  """A tiny DSA + I3D R18 (base width 8)."""
  d = dict(depth=18, base_width=8, num_classes=5, insert_freq=DSA_R18_INSERT_FREQ)
  d.update(kw)
  return model_cfg(**d)


@nnx.jit
def fwd(m, x):
  """One jitted forward (much faster than eager op-by-op dispatch); updates BN stats in train."""
  return m(x)


@nnx.jit
def feats(m, x):
  return m.features(x)


def abstract_params(cfg) -> int:
  m = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(params=0, dropout=1)))
  return count_params(m)


@pytest.mark.parametrize(
  "depth,agg,freq,want",
  [
    (18, "tsn", (0, 0, 0, 0), 32_025_552),
    (18, "dsa", DSA_R18_INSERT_FREQ, 32_025_696),
    (50, "tsn", (0, 0, 0, 0), 32_454_096),
    (50, "dsa", DSA_R50_INSERT_FREQ, 32_454_456),
    (18, "v4d", (0, (0, 1), (0, 1), 0), 32_762_832),
    (50, "v4d", (0, (0, 1, 0, 1), 0, 0), 37_172_688),
  ],
)
def test_parameter_counts(depth, agg, freq, want):
  assert abstract_params(model_cfg(depth=depth, aggregation=agg, insert_freq=freq)) == want


def test_parameter_count_1000_classes_is_papers():
  n = abstract_params(model_cfg(depth=18, aggregation="tsn", num_classes=1000))
  assert n == 32_025_552 - 205_200 + 513_000
  assert round(n / 1e6, 1) == 32.3


def test_bn_stats_not_counted_and_names():
  m = nnx.eval_shape(lambda: build_model(tiny(), rngs=nnx.Rngs(params=0, dropout=1)))
  paths = {".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(m, nnx.Param))}
  for name in [
    "backbone.conv1.kernel",
    "backbone.bn1.scale",
    "backbone.layer2.0.downsample_conv.kernel",
    "backbone.layer2.1.dsa.fc1.kernel",
    "backbone.layer3.1.dsa.bn.bias",
    "cls_head.fc_cls.kernel",
  ]:
    assert name in paths, name
  assert not any(p.endswith((".mean", ".var")) for p in paths)
  stats = nnx.state(m, nnx.BatchStat)
  assert sum(x.size for x in jax.tree.leaves(stats)) > 0


@pytest.mark.parametrize("size", [(9, 10), (20, 18), (24, 22)])  # im2col; conv; conv, matmul dw
@pytest.mark.parametrize(
  "kernel,stride,padding",
  [
    ((1, 7, 7), (1, 2, 2), (0, 3, 3)),
    ((3, 1, 1), (1, 1, 1), (1, 0, 0)),
    ((1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ((3, 3, 3), (1, 2, 2), (1, 1, 1)),
    ((1, 1, 1), (1, 2, 2), (0, 0, 0)),
    ((1, 1, 1), (1, 1, 1), (0, 0, 0)),
  ],
)
def test_conv_formulations_equal(kernel, stride, padding, size):
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, 3, *size, 5))
  k = jax.random.normal(kk, (*kernel, 5, 6))
  a = conv3d(x, k, stride, padding)
  b = frames2d(x, k, stride, padding)
  assert a.shape == b.shape
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-5)
  # And their gradients.
  g = jax.random.normal(kg, a.shape)
  ga = jax.grad(lambda x, k: jnp.sum(conv3d(x, k, stride, padding) * g), (0, 1))(x, k)
  gb = jax.grad(lambda x, k: jnp.sum(frames2d(x, k, stride, padding) * g), (0, 1))(x, k)
  for u, v in zip(ga, gb):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("cin,cout", [(2, 16), (16, 2)])  # both matmul orders of the rows dw
def test_conv_weight_grad_rows(cin, cout):
  kx, kk, kg = jax.random.split(jax.random.key(3), 3)
  x = jax.random.normal(kx, (2, 2, 24, 22, cin))
  k = jax.random.normal(kk, (1, 3, 3, cin, cout))
  g = jax.random.normal(kg, (2, 2, 12, 11, cout))
  args = ((1, 2, 2), (0, 1, 1))
  ga = jax.grad(lambda x, k: jnp.sum(conv3d(x, k, *args) * g), (0, 1))(x, k)
  gb = jax.grad(lambda x, k: jnp.sum(frames2d(x, k, *args) * g), (0, 1))(x, k)
  for u, v in zip(ga, gb):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-3, rtol=1e-4)


def test_model_conv_impls_equal():
  x = jax.random.normal(jax.random.key(1), (2, 4, 2, 32, 32, 3))
  outs = []
  for impl in ("conv3d", "frames2d"):
    m = build_model(tiny(conv_impl=impl), rngs=nnx.Rngs(params=0, dropout=1))
    m.eval()
    outs.append(np.asarray(fwd(m, x)))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("size", [(7, 8), (8, 9)])
def test_max_pool_matches_reduce_window(size):
  x = jax.random.normal(jax.random.key(7), (2, 3, *size, 4))
  want = jax.lax.reduce_window(
    x,
    -jnp.inf,
    jax.lax.max,
    (1, 1, 3, 3, 1),
    (1, 1, 2, 2, 1),
    ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)),
  )
  got = max_pool_1x3x3(x)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  g = jax.grad(lambda x: jnp.sum(max_pool_1x3x3(x) * jnp.arange(got.size).reshape(got.shape)))(x)
  gw = jax.grad(
    lambda x: jnp.sum(
      jax.lax.reduce_window(
        x,
        -jnp.inf,
        jax.lax.max,
        (1, 1, 3, 3, 1),
        (1, 1, 2, 2, 1),
        ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)),
      )
      * jnp.arange(got.size).reshape(got.shape)
    )
  )(x)
  np.testing.assert_array_equal(np.asarray(g), np.asarray(gw))  # no ties in random data


def test_batchnorm_groups_and_running_stats():
  rng = np.random.RandomState(0)
  x = rng.randn(6, 3, 4).astype(np.float32) * 2 + 1
  bn = BatchNorm(4)
  y = np.asarray(bn(jnp.asarray(x), num_groups=3))
  for g in range(3):  # each group normalised with its own statistics
    xg = x[2 * g : 2 * g + 2].reshape(-1, 4)
    want = (xg - xg.mean(0)) / np.sqrt(xg.var(0) + 1e-5)
    np.testing.assert_allclose(y[2 * g : 2 * g + 2].reshape(-1, 4), want, atol=1e-5)
  groups = x.reshape(3, -1, 4)
  np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.1 * groups.mean(1).mean(0), atol=1e-6)
  unbiased = groups.var(1, ddof=1).mean(0)
  np.testing.assert_allclose(np.asarray(bn.var[...]), 0.9 + 0.1 * unbiased, atol=1e-5)
  bn.eval()
  want = (x - bn.mean[...]) / np.sqrt(np.asarray(bn.var[...]) + 1e-5)
  np.testing.assert_allclose(np.asarray(bn(jnp.asarray(x))), want, atol=1e-5)
  with pytest.raises(ValueError, match="equal groups"):
    BatchNorm(4)(jnp.asarray(x), num_groups=4)


def test_bn_group_size_equals_separate_batches():
  """Training on 4 videos with bn_group_size=2 == two separate batches of 2 (per-device BN)."""
  x = jax.random.normal(jax.random.key(2), (4, 4, 2, 32, 32, 3))

  def run(cfg, xs):
    m = build_model(cfg, rngs=nnx.Rngs(params=0, dropout=1))
    m.train()
    m.cls_head.dropout.rate = 0.0
    return np.concatenate([np.asarray(fwd(m, v)) for v in xs])

  grouped = run(tiny(bn_group_size=2), [x])
  separate = run(tiny(bn_group_size=0), [x[:2]])
  np.testing.assert_allclose(grouped[:2], separate, atol=1e-5, rtol=1e-4)
  whole = run(tiny(bn_group_size=0), [x])
  assert np.abs(whole[:2] - grouped[:2]).max() > 1e-4
  m = build_model(tiny(bn_group_size=3), rngs=nnx.Rngs(params=0, dropout=1))
  with pytest.raises(ValueError, match="bn_group_size=3"):
    fwd(m, x)


def test_train_eval_shapes_dtype_and_features():
  m = build_model(tiny(), rngs=nnx.Rngs(params=0, dropout=1))
  x = jax.random.normal(jax.random.key(3), (2, 4, 4, 32, 32, 3))
  m.train()
  a, b = np.asarray(fwd(m, x)), np.asarray(fwd(m, x))
  assert a.shape == (2, 5) and a.dtype == np.float32
  assert np.abs(a - b).max() > 0  # dropout active
  m.eval()
  np.testing.assert_array_equal(np.asarray(fwd(m, x)), np.asarray(fwd(m, x)))
  f = feats(m, x)
  assert f.shape == (8, 4, 1, 1, 64) and f.dtype == jnp.float32
  # The logits are the mean of the per-snippet head outputs.
  per = m.cls_head(f).reshape(2, 4, 5).mean(1)
  np.testing.assert_allclose(np.asarray(per), np.asarray(fwd(m, x)), atol=1e-6)


def test_bfloat16_compute_keeps_float32_params():
  x = jax.random.normal(jax.random.key(4), (1, 4, 2, 32, 32, 3))
  m32 = build_model(tiny(), rngs=nnx.Rngs(params=0, dropout=1))
  m16 = build_model(tiny(dtype="bfloat16"), rngs=nnx.Rngs(params=0, dropout=1))
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(m16, nnx.Param)))
  m32.eval()
  m16.eval()
  f32, f16 = feats(m32, x), feats(m16, x)
  assert f16.dtype == jnp.float32
  rel = float(jnp.abs(f32 - f16).max() / jnp.abs(f32).max())
  assert rel < 0.1, rel


def test_remat_same_gradients():
  x = jax.random.normal(jax.random.key(5), (2, 4, 2, 32, 32, 3))
  grads = []
  for remat in (False, True):
    m = build_model(tiny(remat=remat, dropout_rate=0.0), rngs=nnx.Rngs(params=0, dropout=1))
    m.train()
    g = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x) ** 2)))(m)
    grads.append(jax.tree.leaves(g))
  for a, b in zip(*grads):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)


# SE, TSM, V4D and DSA at res_4 as whole networks against references:
# tests/test_models_reference.py and tests/test_convert.py.


def test_r4d_matches_direct_sum():
  rng = np.random.RandomState(3)
  c, u, t = 3, 4, 3
  m = R4D(c, u, rngs=nnx.Rngs(0))
  x = rng.randn(2 * u, t, 2, 2, c).astype(np.float32)
  k = np.asarray(m.kernel[...])[:, :, 0, 0]  # [kU, kT, I, O]
  v = x.reshape(2, u, t, 2, 2, c)
  want = v.copy()
  for du in range(3):
    for dt in range(3):
      for ui in range(u):
        for ti in range(t):
          su, st = ui + du - 1, ti + dt - 1
          if 0 <= su < u and 0 <= st < t:
            want[:, ui, ti] += v[:, su, st] @ k[du, dt]
  got = np.asarray(m(jnp.asarray(x)))
  np.testing.assert_allclose(got, want.reshape(x.shape), atol=1e-5)


def test_temporal_shift_orientation():
  x = jnp.broadcast_to(jnp.arange(8.0)[:, None, None, None, None], (8, 1, 1, 1, 16))
  # 2 videos x U=4 snippets x T=1 frame: frame values 0..3 and 4..7.
  y = np.asarray(temporal_shift(x, 4, 8))[:, 0, 0, 0]
  np.testing.assert_array_equal(y[:, 0], [1, 2, 3, 0, 5, 6, 7, 0])  # takes frame t+1
  np.testing.assert_array_equal(y[:, 2], [0, 0, 1, 2, 0, 4, 5, 6])  # takes frame t-1
  np.testing.assert_array_equal(y[:, 4], np.arange(8))


@pytest.mark.parametrize(
  "kw,match",
  [
    (dict(backbone="resnet3d"), "model.backbone"),
    (dict(aggregation="nonlocal"), "model.aggregation"),
    (dict(depth=26), "model.depth"),
    (dict(insert_freq=(0, (0, 1, 1), (0, 1), 0)), r"insert_freq\[1\].*2 blocks"),
    (dict(insert_freq=(0, (0, 1), (0, 1))), "one entry per stage"),
    (dict(insert_place="res_5"), "model.insert_place"),
    (dict(insert_place="res_4"), "res_4.*not available in a BasicBlock"),
    (dict(dsa=dict(alpha=2, beta=1 / 256, kernel_size=3, with_identity=False)), "beta"),
    (dict(backbone="tsm_resnet"), "inflate_freq"),
    (dict(conv_impl="winograd"), "model.conv_impl"),
    (dict(dtype="float8"), "model.dtype"),
  ],
)
def test_build_errors(kw, match):
  with pytest.raises(ValueError, match=match):
    build_model(tiny(**kw), rngs=nnx.Rngs(params=0, dropout=1))


def test_call_errors():
  m = build_model(tiny(), rngs=nnx.Rngs(params=0, dropout=1))
  with pytest.raises(ValueError, match="num_segments=4"):
    m(jnp.zeros((1, 3, 2, 32, 32, 3)))
  with pytest.raises(ValueError, match=r"\[N, U, T, H, W, 3\]"):
    m(jnp.zeros((4, 2, 32, 32, 3)))
