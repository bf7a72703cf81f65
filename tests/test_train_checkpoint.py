"""Orbax checkpoints of the train state: 8 devices -> 4 devices, keep-last + best-by-top1."""

import jax
import ml_collections
import numpy as np
from flax import nnx

from configs import base
from dsanet_jax.train import checkpoint as ckpt_lib
from dsanet_jax.train import optim
from dsanet_jax.train import sharding as sharding_lib
from dsanet_jax.train import state as state_lib
from tests.train_standins import TinyRecognizer, tiny_model_cfg


def _setup(devices, fsdp):
  mesh = sharding_lib.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=fsdp)), devices)
  tc = base.get_base_config().train
  tx = optim.make_optimizer(tc, optim.make_schedule(tc, 1.0, 10))
  build = lambda: TinyRecognizer(tiny_model_cfg(), rngs=nnx.Rngs(params=3, dropout=4))
  abstract = jax.eval_shape(lambda: state_lib.init_state(build, tx)[0])
  sh = sharding_lib.state_shardings(abstract, mesh, 1)
  return mesh, tx, build, abstract, sh


def _ckpt_cfg(**kw):
  c = base.get_base_config().checkpoint
  c.update(async_save=True, **kw)
  return c


def test_saved_on_8_devices_restores_on_4(tmp_path):
  _, tx, build, _, sh8 = _setup(jax.devices(), 2)
  state = jax.jit(lambda: state_lib.init_state(build, tx)[0], out_shardings=sh8)()
  # make the optimiser state non-trivial
  state["opt_state"] = jax.tree.map(
    lambda x: x + 1 if x.dtype == np.float32 else x, state["opt_state"]
  )
  mngr = ckpt_lib.make_manager(str(tmp_path), _ckpt_cfg())
  ckpt_lib.save(mngr, state, ckpt_lib.CheckpointMeta(7, {}))
  mngr.wait_until_finished()
  mngr.close()

  _, _, _, abstract, sh4 = _setup(jax.devices()[:4], 1)
  mngr = ckpt_lib.open_read_only(str(tmp_path))
  restored, meta = ckpt_lib.restore(mngr, sharding_lib.with_shardings(abstract, sh4))
  assert meta.step == 7
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert jax.tree.structure(restored) == jax.tree.structure(abstract)
  # every restored array lies on the 4-device target sharding, not the 8-device one it was saved on
  want = set(jax.devices()[:4])
  for leaf, sh in zip(jax.tree.leaves(restored), jax.tree.leaves(sh4)):
    assert leaf.sharding == sh, (leaf.sharding, sh)
    assert set(leaf.sharding.device_set) == want
    assert len(leaf.addressable_shards) == 4


def test_keeps_last_k_and_best_by_val_top1(tmp_path):
  _, tx, build, _, sh = _setup(jax.devices()[:1], 1)
  state = jax.jit(lambda: state_lib.init_state(build, tx)[0], out_shardings=sh)()
  mngr = ckpt_lib.make_manager(str(tmp_path), _ckpt_cfg(keep=2, keep_best=1))
  top1 = {2: 0.9, 4: 0.5, 6: None, 8: 0.4, 10: None}
  for step, t in top1.items():
    ckpt_lib.save(mngr, state, ckpt_lib.CheckpointMeta(step, {}, val_top1=t))
    mngr.wait_until_finished()
  assert sorted(mngr.all_steps()) == [2, 8, 10]  # best (2) + last two
  mngr.close()
