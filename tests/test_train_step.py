"""The sharded train step equals the 1-device step (global BN; FSDP); optimiser and schedule."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from configs import base
from dsanet_jax.train import optim
from dsanet_jax.train import sharding as sharding_lib
from dsanet_jax.train import state as state_lib
from dsanet_jax.train import step as step_lib
from tests.train_standins import TinyRecognizer, tiny_model_cfg


def _batch(n=8, u=2, t=2, hw=8, k=5, seed=0):
  r = np.random.RandomState(seed)
  return {
    "video": r.randn(n, u, t, hw, hw, 3).astype(np.float32),
    "label": r.randint(0, k, n).astype(np.int32),
    "mask": np.ones(n, bool),
  }


def _train_cfg(**kw):
  c = base.get_base_config().train
  c.update(base_lr=0.1, reference_batch_size=8, global_batch_size=8, warmup_epochs=0.0, **kw)
  return c


def _run(devices, fsdp, model_cfg, train_cfg, batch, steps=2, min_size=1):
  mesh_cfg = ml_collections.ConfigDict(dict(data=-1, fsdp=fsdp))
  mesh = sharding_lib.make_mesh(mesh_cfg, devices)
  sched = optim.make_schedule(train_cfg, 1.0, 10)
  tx = optim.make_optimizer(train_cfg, sched)
  build = lambda: TinyRecognizer(model_cfg, rngs=nnx.Rngs(params=0, dropout=1))
  abstract = jax.eval_shape(lambda: state_lib.init_state(build, tx)[0])
  mdef = state_lib.model_def(nnx.eval_shape(build))
  sh = sharding_lib.state_shardings(abstract, mesh, min_size)
  state = jax.jit(lambda: state_lib.init_state(build, tx)[0], out_shardings=sh)()
  step = jax.jit(
    step_lib.make_train_step(mdef, tx, sched, seed=0, grad_accum_steps=train_cfg.grad_accum_steps),
    in_shardings=(sh, sharding_lib.batch_sharding(mesh)),
    out_shardings=(sh, sharding_lib.replicated(mesh)),
    donate_argnums=(0,),
  )
  data = sharding_lib.batch_sharding(mesh)
  losses = []
  for _ in range(steps):
    b = jax.tree.map(lambda x: jax.make_array_from_process_local_data(data, x), batch)
    state, m = step(state, b)
    losses.append(float(m["loss"]))
  return jax.device_get(state), losses, state


def _assert_same(a, b, tol=1e-5):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def test_sharded_step_matches_one_device():
  """8 devices on the data axis == 1 device (two steps, global BatchNorm, dropout on)."""
  model_cfg, train_cfg, batch = tiny_model_cfg(), _train_cfg(), _batch()
  one, l1, _ = _run(jax.devices()[:1], 1, model_cfg, train_cfg, batch)
  eight, l8, _ = _run(jax.devices(), 1, model_cfg, train_cfg, batch)
  np.testing.assert_allclose(l1, l8, rtol=1e-5, atol=1e-5)
  _assert_same(one["params"], eight["params"])
  _assert_same(one["batch_stats"], eight["batch_stats"])
  assert l1[0] != l1[1]  # the step changed the parameters


def _real_model_run(devices, fsdp, model_cfg, train_cfg, batch, min_size=256):
  """Two train steps of the real model (`models.build_model`) on `devices`; (state, losses)."""
  from dsanet_jax.models import build_model

  mesh = sharding_lib.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=fsdp)), devices)
  sched = optim.make_schedule(train_cfg, 1.0, 10)
  tx = optim.make_optimizer(train_cfg, sched)
  build = lambda: build_model(model_cfg, rngs=nnx.Rngs(params=0, dropout=1))
  abstract = jax.eval_shape(lambda: state_lib.init_state(build, tx)[0])
  sh = sharding_lib.state_shardings(abstract, mesh, min_size)
  state = jax.jit(lambda: state_lib.init_state(build, tx)[0], out_shardings=sh)()
  step = jax.jit(
    step_lib.make_train_step(state_lib.model_def(nnx.eval_shape(build)), tx, sched, seed=0),
    in_shardings=(sh, sharding_lib.batch_sharding(mesh)),
    out_shardings=(sh, sharding_lib.replicated(mesh)),
  )
  data = sharding_lib.batch_sharding(mesh)
  losses = []
  for _ in range(2):
    b = jax.tree.map(lambda x: jax.make_array_from_process_local_data(data, x), batch)
    state, m = step(state, b)
    losses.append(float(m["loss"]))
  return jax.device_get(state), losses, state


def _real_model_cfg(**kw):
  c = base.get_base_config().model
  c.update(depth=18, base_width=4, num_classes=5, num_segments=4, dropout_rate=0.5, **kw)
  c.insert_freq = base.DSA_R18_INSERT_FREQ  # DSA's own BatchNorm is grouped too
  return c


def test_grouped_bn_matches_per_device_statistics():
  """The real model's grouped BatchNorm (`models.layers.BatchNorm`), bn_group_size = per-device
  batch: sharded over 4 devices it gives the 1-device result; whole-batch statistics differ."""
  train_cfg, batch = _train_cfg(), _batch(n=8, u=4, t=2, hw=16)
  grouped = _real_model_cfg(bn_group_size=2)
  one, l1, _ = _real_model_run(jax.devices()[:1], 1, grouped, train_cfg, batch)
  four, l4, _ = _real_model_run(jax.devices()[:4], 1, grouped, train_cfg, batch)
  np.testing.assert_allclose(l1, l4, rtol=1e-5, atol=1e-5)
  _assert_same(one["params"], four["params"])
  _assert_same(one["batch_stats"], four["batch_stats"])
  _, lg, _ = _real_model_run(jax.devices()[:4], 1, _real_model_cfg(), train_cfg, batch)
  assert abs(lg[1] - l4[1]) > 1e-6  # grouping changes the statistics, hence the loss


def test_grad_accumulation_matches_big_batch_without_bn_state_effects():
  """Accumulating 2 micro-batches gives the averaged gradient (dropout 0, per-group BN = micro)."""
  cfg = tiny_model_cfg(bn_group_size=4, dropout_rate=0.0)
  batch = _batch()
  full, lf, _ = _run(jax.devices()[:2], 1, cfg, _train_cfg(grad_clip_norm=0.0), batch, steps=1)
  # micro-batch m takes rows m, m+2, ...: reorder so that each BN group of 4 is one micro-batch
  inter = np.empty(8, int)
  inter[0::2], inter[1::2] = np.arange(4), np.arange(4, 8)
  b2 = jax.tree.map(lambda x: x[inter], batch)
  acc, la, _ = _run(
    jax.devices()[:2], 1, cfg, _train_cfg(grad_clip_norm=0.0, grad_accum_steps=2), b2, steps=1
  )
  np.testing.assert_allclose(lf, la, rtol=1e-5)
  _assert_same(full["params"], acc["params"], tol=1e-5)  # (running stats differ: 2 updates)


def test_schedule_warmup_step_and_lr_scaling():
  c = _train_cfg()
  c.update(
    base_lr=0.015,
    reference_batch_size=96,
    global_batch_size=192,
    warmup_epochs=2.0,
    lr_decay_epochs=(5, 8),
    schedule="step",
  )
  s = optim.make_schedule(c, 10.0, 100)
  lr = 0.03
  np.testing.assert_allclose(s(0), 0.01 * lr, rtol=1e-5)
  np.testing.assert_allclose(s(10), lr * (0.01 + 0.99 * 0.5), rtol=1e-5)
  np.testing.assert_allclose(s(20), lr, rtol=1e-5)
  np.testing.assert_allclose(s(60), lr * 0.1, rtol=1e-5)
  np.testing.assert_allclose(s(85), lr * 0.01, rtol=1e-5)
  c.schedule = "cosine"
  s = optim.make_schedule(c, 10.0, 100)
  np.testing.assert_allclose(s(20), lr, rtol=1e-5)
  assert float(s(99)) < 0.01 * lr


def test_sgd_decays_every_parameter_like_pytorch():
  """clip -> L2 (coupled) -> Nesterov SGD, as torch.optim.SGD(nesterov=True, weight_decay)."""
  c = _train_cfg(weight_decay=0.1, grad_clip_norm=0.0, momentum=0.9)
  tx = optim.make_optimizer(c, optax.constant_schedule(0.5))
  p = {"w": jnp.array([1.0, -2.0])}
  g = {"w": jnp.array([0.5, 0.5])}
  st = tx.init(p)
  for _ in range(2):
    u, st = tx.update(g, st, p)
    p = optax.apply_updates(p, u)
  # torch by hand: d = g + wd*p; buf = m*buf + d; step = d + m*buf; p -= lr*step
  w, buf = np.array([1.0, -2.0]), np.zeros(2)
  for _ in range(2):
    d = 0.5 + 0.1 * w
    buf = 0.9 * buf + d
    w = w - 0.5 * (d + 0.9 * buf)
  np.testing.assert_allclose(p["w"], w, rtol=1e-5)


def test_layout_checks_fail_loudly():
  mesh = sharding_lib.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1)))
  with pytest.raises(ValueError, match="divisible by the 8 devices"):
    sharding_lib.check_batch_layout(mesh, 12, 0, process_count=1)
  with pytest.raises(ValueError, match="straddles devices"):
    sharding_lib.check_batch_layout(mesh, 24, 2, process_count=1)  # 3 per device
  assert sharding_lib.check_batch_layout(mesh, 96, 12, process_count=1) == 12
  with pytest.raises(ValueError, match=r"mesh\.fsdp=3"):
    sharding_lib.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=3)))
  assert sharding_lib.fsdp_spec((64, 3), 4, 1) == jax.sharding.PartitionSpec("fsdp", None)
  assert sharding_lib.fsdp_spec((3, 5), 4, 1) == jax.sharding.PartitionSpec()


def test_real_dsa_model_sharded_with_fsdp_matches_one_device():
  """The real DSA + I3D R18 (tiny width): data x fsdp = 4 x 2 devices == 1 device, global BN."""
  from dsanet_jax.models import build_model

  c = base.get_base_config().model
  c.update(depth=18, base_width=4, num_classes=5, num_segments=4, dropout_rate=0.5)
  c.insert_freq = base.DSA_R18_INSERT_FREQ
  train_cfg = _train_cfg()
  batch = _batch(n=8, u=4, t=2, hw=16)

  def run(devices, fsdp):
    mesh = sharding_lib.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=fsdp)), devices)
    sched = optim.make_schedule(train_cfg, 1.0, 10)
    tx = optim.make_optimizer(train_cfg, sched)
    build = lambda: build_model(c, rngs=nnx.Rngs(params=0, dropout=1))
    abstract = jax.eval_shape(lambda: state_lib.init_state(build, tx)[0])
    sh = sharding_lib.state_shardings(abstract, mesh, 256)
    state = jax.jit(lambda: state_lib.init_state(build, tx)[0], out_shardings=sh)()
    step = jax.jit(
      step_lib.make_train_step(state_lib.model_def(nnx.eval_shape(build)), tx, sched, seed=0),
      in_shardings=(sh, sharding_lib.batch_sharding(mesh)),
      out_shardings=(sh, sharding_lib.replicated(mesh)),
    )
    b = jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding_lib.batch_sharding(mesh), x),
      batch,
    )
    state, m = step(state, b)
    sharded = [x for x in jax.tree.leaves(state["params"]) if "fsdp" in tuple(x.sharding.spec)]
    return jax.device_get(state), float(m["loss"]), len(sharded)

  one, l1, _ = run(jax.devices()[:1], 1)
  eight, l8, n_sharded = run(jax.devices(), 2)
  assert n_sharded > 0  # some conv kernels really are split over 'fsdp'
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  _assert_same(one["params"], eight["params"])
  _assert_same(one["batch_stats"], eight["batch_stats"])
