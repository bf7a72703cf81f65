"""DSA against an independent NumPy statement of spec dsanet.md §1.3, and its positions I-IV."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dsanet_jax.models.dsa import DSA
from dsanet_jax.models.resnet import Bottleneck, Common, Insert

U = 4


def np_dsa(x, w1, gamma, beta_bn, run_mean, run_var, w2, *, u, beta, train, groups=1, eps=1e-5):
  """The spec's math in float64. x [N*U, T, H, W, C]; w1 [U, aU]; w2 [aU, L].

  Returns (out, new_running_mean, new_running_var) (running stats only change in train).
  """
  x = x.astype(np.float64)
  nu, t, h, w, c = x.shape
  n = nu // u
  cp = int(c * beta)
  v = x[..., :cp].reshape(n, u, t, h, w, cp)
  s = v.mean(axis=(2, 3, 4))  # [N, U, C']
  rows = np.stack([s[i, :, j] for i in range(n) for j in range(cp)])  # rows (n, c), n-major
  z = rows @ w1
  if train:
    zg = z.reshape(groups, -1, z.shape[-1])
    mu = zg.mean(axis=1, keepdims=True)
    var = ((zg - mu) ** 2).mean(axis=1, keepdims=True)
    zh = ((zg - mu) / np.sqrt(var + eps)).reshape(z.shape)
    r = zg.shape[1]
    new_mean = 0.9 * run_mean + 0.1 * mu.mean(axis=(0, 1))
    new_var = 0.9 * run_var + 0.1 * (var * r / (r - 1)).mean(axis=(0, 1))
  else:
    zh = (z - run_mean) / np.sqrt(run_var + eps)
    new_mean, new_var = run_mean, run_var
  a = np.maximum(gamma * zh + beta_bn, 0.0)
  logits = a @ w2
  e = np.exp(logits - logits.max(axis=-1, keepdims=True))
  k = (e / e.sum(axis=-1, keepdims=True)).reshape(n, cp, -1)
  taps = k.shape[-1]
  y = np.zeros_like(v)
  for ni in range(n):
    for ui in range(u):
      for j in range(taps):
        src = ui + j - taps // 2
        if 0 <= src < u:
          y[ni, ui] += k[ni, :, j] * v[ni, src]
  out = x.copy()
  out[..., :cp] = y.reshape(nu, t, h, w, cp)
  return out, new_mean, new_var


def _params(m: DSA):
  return (
    np.asarray(m.fc1.kernel[...], np.float64),
    np.asarray(m.bn.scale[...], np.float64),
    np.asarray(m.bn.bias[...], np.float64),
    np.asarray(m.bn.mean[...], np.float64),
    np.asarray(m.bn.var[...], np.float64),
    np.asarray(m.fc2.kernel[...], np.float64),
  )


def _randomize_bn(m: DSA, rng: np.random.RandomState):
  hidden = m.bn.scale[...].shape[0]
  m.bn.scale[...] = jnp.asarray(0.5 + rng.rand(hidden), jnp.float32)
  m.bn.bias[...] = jnp.asarray(0.3 * rng.randn(hidden), jnp.float32)
  m.bn.mean[...] = jnp.asarray(0.2 * rng.randn(hidden), jnp.float32)
  m.bn.var[...] = jnp.asarray(0.5 + rng.rand(hidden), jnp.float32)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("groups", [1, 3])
def test_dsa_matches_numpy(train, groups):
  rng = np.random.RandomState(0)
  n, c, beta = 6, 32, 1 / 4
  m = DSA(c, U, alpha=2, beta=beta, rngs=nnx.Rngs(0))
  _randomize_bn(m, rng)
  m.train() if train else m.eval()
  x = rng.randn(n * U, 2, 3, 5, c).astype(np.float32) + rng.randn(1, 1, 1, 1, c).astype(np.float32)
  params = _params(m)
  want, want_mean, want_var = np_dsa(x, *params, u=U, beta=beta, train=train, groups=groups)
  got = np.asarray(m(jnp.asarray(x), num_groups=groups))
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
  cp = int(c * beta)
  # The untouched channels are bit-identical.
  np.testing.assert_array_equal(got[..., cp:], x[..., cp:])
  # The aggregated ones did change.
  assert np.abs(got[..., :cp] - x[..., :cp]).max() > 1e-2
  np.testing.assert_allclose(np.asarray(m.bn.mean[...]), want_mean, atol=1e-6)
  np.testing.assert_allclose(np.asarray(m.bn.var[...]), want_var, atol=1e-6)
  if train:  # running stats moved
    assert np.abs(np.asarray(m.bn.var[...]) - params[4]).max() > 1e-4


def test_dsa_parameter_count_and_split():
  m = DSA(128, U, alpha=2, beta=1 / 8, rngs=nnx.Rngs(0))
  n = sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
  assert n == 72
  assert m.channels == 16
  assert m.fc1.kernel[...].shape == (4, 8) and m.fc2.kernel[...].shape == (8, 3)
  # PyTorch Linear default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  assert np.abs(np.asarray(m.fc1.kernel[...])).max() <= 0.5
  assert np.abs(np.asarray(m.fc2.kernel[...])).max() <= 8**-0.5


def test_dsa_tap_orientation():
  """A kernel forced to (1, 0, 0) maps snippet values [0, 1, 2, 3] to [0, 0, 1, 2]."""
  m = DSA(8, U, alpha=2, beta=1.0, rngs=nnx.Rngs(0))
  m.eval()
  m.bn.bias[...] = jnp.full((8,), 5.0)  # ReLU stays open
  m.fc1.kernel[...] = jnp.zeros((4, 8))
  m.fc2.kernel[...] = jnp.zeros((8, 3)).at[:, 0].set(100.0)
  x = jnp.broadcast_to(jnp.arange(U, dtype=jnp.float32)[:, None, None, None, None], (U, 2, 2, 2, 8))
  y = np.asarray(m(x))
  np.testing.assert_allclose(y[:, 0, 0, 0, 0], [0.0, 0.0, 1.0, 2.0], atol=1e-5)
  m.fc2.kernel[...] = jnp.zeros((8, 3)).at[:, 2].set(100.0)  # tap 2 = the next snippet
  np.testing.assert_allclose(np.asarray(m(x))[:, 0, 0, 0, 0], [1.0, 2.0, 3.0, 0.0], atol=1e-5)


def test_dsa_identity_and_errors():
  rng = np.random.RandomState(1)
  m = DSA(16, U, beta=1 / 8, with_identity=True, rngs=nnx.Rngs(0))
  m.eval()
  x = rng.randn(U, 1, 2, 2, 16).astype(np.float32)
  want, _, _ = np_dsa(x, *_params(m), u=U, beta=1 / 8, train=False)
  want[..., :2] += x[..., :2]
  np.testing.assert_allclose(np.asarray(m(jnp.asarray(x))), want, atol=1e-6)
  with pytest.raises(ValueError, match=r"floor\(beta\*C\)"):
    DSA(7, U, beta=1 / 8, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="U=4"):
    m(jnp.zeros((6, 1, 2, 2, 16)))


def _np_conv1x1(x, k):
  return np.einsum("bthwi,io->bthwo", x, k[0, 0, 0])


@pytest.mark.parametrize("place", ["res_1", "res_2", "res_3", "res_4"])
def test_dsa_positions_in_bottleneck(place):
  """Positions I-IV: the block equals its own layers run by hand with NumPy DSA at that point."""
  rng = np.random.RandomState(2)
  inplanes, planes = 64, 16  # identity shortcut (4 * planes == inplanes)
  ins = Insert(kind="dsa", place=place, num_segments=U, dsa_beta=1 / 4)
  blk = Bottleneck(
    inplanes,
    planes,
    stride=1,
    inflate=True,
    inflate_style="3x1x1",
    ins=ins,
    cm=Common(conv_impl="frames2d"),
    where="test",
    rngs=nnx.Rngs(0),
  )
  _randomize_bn(blk.dsa, rng)
  blk.eval()
  x = rng.randn(2 * U, 3, 4, 4, inplanes).astype(np.float32)

  def dsa_np(h):
    return np_dsa(np.asarray(h), *_params(blk.dsa), u=U, beta=1 / 4, train=False)[0]

  def stage(h, at):
    return jnp.asarray(dsa_np(h), jnp.float32) if place == at else h

  h = stage(jnp.asarray(x), "res_1")
  h = jax.nn.relu(blk.bn1(blk.conv1(h)))
  h = stage(h, "res_2")
  h = jax.nn.relu(blk.bn2(blk.conv2(h)))
  h = stage(h, "res_3")
  h = blk.bn3(blk.conv3(h))
  h = stage(h, "res_4")
  want = np.asarray(jax.nn.relu(h + jnp.asarray(x)))
  got = np.asarray(blk(jnp.asarray(x)))
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
  # And the DSA matters: without it the output differs.
  plain = Bottleneck(
    inplanes,
    planes,
    stride=1,
    inflate=True,
    inflate_style="3x1x1",
    ins=Insert(),
    cm=Common(conv_impl="frames2d"),
    where="test",
    rngs=nnx.Rngs(0),
  )
  plain.eval()
  assert np.abs(np.asarray(plain(jnp.asarray(x))) - got).max() > 1e-3
