"""Pieces of the training loop without training: pre-emption agreement, the JSONL resume
truncation, the learning-rate schedule under train.num_steps, incomplete-split notes."""

import json
import signal
import types

import numpy as np
import pytest

from configs import base
from dsanet_jax.train import evaluation, optim, trainer, writers


def test_preemption_agrees_across_processes_every_n_steps_only(monkeypatch):
  """With several processes the flag is allgathered at every N-th step, not every step."""
  calls = []

  def allgather(x):
    calls.append(int(x[0]))
    return np.stack([x, np.zeros_like(x)])  # this process and a peer that saw nothing

  monkeypatch.setattr(trainer.jax, "process_count", lambda: 2)
  monkeypatch.setattr(trainer.multihost_utils, "process_allgather", allgather)
  p = trainer._Preemption(every=10)
  assert not any(p.requested(s) for s in range(100))
  assert len(calls) == 10  # steps 0, 10, ..., 90
  p.signal = "SIGTERM"
  assert not p.requested(101) and p.requested(110)  # agreed at the next multiple of 10
  assert calls[-1] == 1


def test_signal_handler_never_logs_from_the_interrupted_thread(caplog):
  """SIGTERM mid-run: the acknowledgement is logged by the announcer thread, never by the signal
  handler in the main thread, which may have been interrupted inside a log handler's write (a
  reentrant write fails with a traceback: seen in CI under load)."""
  before = signal.getsignal(signal.SIGTERM)
  with caplog.at_level("WARNING"), trainer._Preemption(every=1) as p:
    signal.raise_signal(signal.SIGTERM)
    assert p.signal == "SIGTERM" and p.requested(1)
  records = [r for r in caplog.records if "SIGTERM received" in r.getMessage()]
  assert [r.threadName for r in records] == ["signal-announcer"], records
  assert signal.getsignal(signal.SIGTERM) is before


def test_jsonl_writer_drops_replayed_steps_at_resume(tmp_path):
  path = tmp_path / "metrics.jsonl"
  w = writers.JsonlWriter(str(path))
  w.write_hparams({"config": "{}"})
  for s in range(1, 7):
    w.write_scalars(s, {"train/loss": float(s)})
  w.close()
  w = writers.JsonlWriter(str(path), resume_step=4)  # the run resumes from step 4
  for s in (5, 6):
    w.write_scalars(s, {"train/loss": -float(s)})
  w.close()
  recs = [json.loads(s) for s in path.read_text().splitlines()]
  steps = [r["step"] for r in recs if "train/loss" in r]
  assert steps == [1, 2, 3, 4, 5, 6]
  assert [r["train/loss"] for r in recs if "train/loss" in r][-2:] == [-5.0, -6.0]
  assert sum(r.get("kind") == "hparams" for r in recs) == 1


def test_num_steps_rescales_the_epoch_schedule():
  """5 videos, batch 4 (1.25 steps/epoch), num_steps=300 with the paper's step schedule: the
  schedule's 100 epochs span the 300 steps (warm-up 30, decays at 150, 225, 270)."""
  c = base.get_base_config().train
  c.update(global_batch_size=4, num_steps=300)
  peak = optim.peak_learning_rate(c)
  s = optim.make_schedule(c, 5 / 4, 300)
  np.testing.assert_allclose(s(0), 0.01 * peak, rtol=1e-5)
  np.testing.assert_allclose(s(30), peak, rtol=1e-5)
  np.testing.assert_allclose(s(149), peak, rtol=1e-5)  # was at the floor (x0.001) by step 113
  np.testing.assert_allclose(s(150), 0.1 * peak, rtol=1e-5)
  np.testing.assert_allclose(s(299), 0.001 * peak, rtol=1e-5)
  c.num_steps = 0  # epochs of the data when num_steps is not set
  np.testing.assert_allclose(optim.make_schedule(c, 5 / 4, 125)(63), 0.1 * peak, rtol=1e-5)


def test_incomplete_eval_split_is_named(monkeypatch):
  from dsanet_jax.data import pipeline

  skipped = {"validation": {"total": 19904, "by_reason": {"missing": 19904}, "listed": 19906}}
  info = types.SimpleNamespace(metadata={"skipped": skipped})
  monkeypatch.setattr(pipeline, "load_builder", lambda cfg: types.SimpleNamespace(info=info))
  cfg = base.get_base_config()
  note = evaluation.split_note(cfg, "validation", 2)
  assert note.startswith("2 of 19,906 listed videos present; 19,904 skipped"), note
  assert "missing" in note
  assert evaluation.split_note(cfg, "train", 100) is None


@pytest.mark.parametrize("batch,devices", [(4, 1), (8, 2)])
def test_bn_group_size_message_names_the_override(batch, devices):
  import jax
  import ml_collections

  from dsanet_jax.train import sharding as sharding_lib

  mesh = sharding_lib.make_mesh(
    ml_collections.ConfigDict(dict(data=-1, fsdp=1)), jax.devices()[:devices]
  )
  with pytest.raises(ValueError, match=r"--config\.model\.bn_group_size=4 ") as e:
    sharding_lib.check_batch_layout(mesh, batch, 12, process_count=1, what="train micro-batch")
  assert "bn_group_size=12" in str(e.value) and "bn_group_size=0" in str(e.value)
