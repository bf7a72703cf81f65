"""The training loop in-process on the embedded dataset (tiny model, few steps): its exit paths.

- A normal run compiles the periodic-validation step once over three validations (and the final
  test's once), writes a profile of the requested steps, starts its schedule at the rescaled
  peak (num_steps rescales warm-up), and closes its checkpoint manager and writers.
- SIGINT (a real signal to this process), an exception and a non-finite loss each leave the
  checkpoint manager and writers closed; SIGINT saves first and returns a 'preempted' summary.
"""

import json
import logging
import os
import re
import signal

import jax
import numpy as np
import pytest

from dsanet_jax.train import checkpoint as ckpt_lib
from dsanet_jax.train import trainer, writers

pytestmark = pytest.mark.slow


def _config(**train):
  from configs import default

  c = default.get_config()
  c.model.base_width = 4
  c.data.num_frames = 2
  c.data.crop_size = 16
  c.eval.update(short_side=16, crop_size=16, num_segments=4, num_crops=1, batch_size=64)
  c.eval.update(val_num_segments=4, val_num_crops=1)
  c.train.update(global_batch_size=8, log_every_steps=1, log_gmacs=False, num_steps=4)
  c.train.update(**train)
  c.checkpoint.every_steps = 2
  return c


@pytest.fixture
def closes(monkeypatch):
  """Records the close() of every checkpoint manager and metric writer the trainer makes."""
  closed = {"manager": 0, "writer": 0, "made": 0}

  def wrap(fn, key):
    def make(*a, **kw):
      obj = fn(*a, **kw)
      closed["made"] += 1
      close = obj.close

      def counted():
        closed[key] += 1
        close()

      obj.close = counted
      return obj

    return make

  monkeypatch.setattr(ckpt_lib, "make_manager", wrap(ckpt_lib.make_manager, "manager"))
  monkeypatch.setattr(writers, "create_writer", wrap(writers.create_writer, "writer"))
  return closed


class _Compiles(logging.Handler):
  def __init__(self):
    super().__init__()
    self.names, self.threads = [], []

  def emit(self, record):
    m = re.match(r"Compiling jit\((\w+)\)", record.getMessage())
    if m:
      self.names.append(m.group(1))
      self.threads.append(record.threadName)


def test_normal_run_compiles_eval_once_profiles_rescales_schedule_and_closes(tmp_path, closes):
  cfg = _config(eval_every_steps=1, profile_steps=(2, 3))  # validations at steps 1, 2, 3
  handler = _Compiles()
  jax_logger = logging.getLogger("jax")
  jax_logger.addHandler(handler)
  jax.config.update("jax_log_compiles", True)
  try:
    summary = trainer.train_and_evaluate(cfg, str(tmp_path))
  finally:
    jax.config.update("jax_log_compiles", False)
    jax_logger.removeHandler(handler)
  assert summary["step"] == 4 and summary["eval"]["num_videos"] == 128
  # item 1: one compilation of the validation step for three validations, one of the final test's
  evals = [t for n, t in zip(handler.names, handler.threads) if n in ("eval_step", "step")]
  assert len(evals) == 2, handler.names
  # item 4: the final test's step compiled in the background during training, not after it
  assert evals.count("compile_final_eval") == 1, evals
  assert handler.names.count("train_step") == 1, handler.names
  lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in lines if "val/top1@4x1" in r] == [1, 2, 3]
  train = [r for r in lines if "train/loss" in r]
  assert [r["step"] for r in train] == [1, 2, 3, 4]
  assert train[0]["train/compile_seconds"] > 0 and 0 <= train[0]["train/data_wait_fraction"] <= 1
  # item 8: num_steps=4 rescales the 12-epoch cosine schedule with its 1-epoch warm-up to the
  # run (warm-up round(4/12) = 0 steps), so the first step runs at the peak rate; on the data's
  # 64 steps/epoch it would still be warming up from 1% of it
  peak = cfg.train.base_lr * cfg.train.global_batch_size / cfg.train.reference_batch_size
  np.testing.assert_allclose(train[0]["train/learning_rate"], peak, rtol=1e-5)
  assert train[-1]["train/learning_rate"] < 0.5 * peak
  # item 10: a TensorBoard-profile-plugin trace of steps 2..3
  traces = list((tmp_path / "profile" / "plugins" / "profile").glob("*/*.xplane.pb"))
  assert traces and all(p.stat().st_size > 0 for p in traces), traces
  # item 3
  assert closes == {"manager": 1, "writer": 1, "made": 2}


def test_sigint_saves_and_every_exit_path_closes(tmp_path, closes, monkeypatch):
  real_next = trainer._next_batch
  calls = {"n": 0}

  def next_then_interrupt(it, sharding):
    calls["n"] += 1
    if calls["n"] == 3:
      os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while step 3 runs
    return real_next(it, sharding)

  monkeypatch.setattr(trainer, "_next_batch", next_then_interrupt)
  w = tmp_path / "sigint"
  before = signal.getsignal(signal.SIGINT)  # Python's default, or what an earlier test left
  summary = trainer.train_and_evaluate(_config(num_steps=100), str(w))
  assert summary["preempted"] == "SIGINT" and summary["eval"] is None
  assert summary["step"] == 3
  assert (w / "checkpoints" / "3" / "state").is_dir()
  assert not list((w / "checkpoints").glob("*.orbax-checkpoint-tmp*"))
  assert signal.getsignal(signal.SIGINT) is before  # the handler restored
  assert closes == {"manager": 1, "writer": 1, "made": 2}

  # an exception in the loop (here: the input pipeline failing at step 3)
  def broken(it, sharding):
    calls["n"] += 1
    if calls["n"] >= 3:
      raise RuntimeError("input pipeline broke")
    return real_next(it, sharding)

  calls["n"] = 0
  monkeypatch.setattr(trainer, "_next_batch", broken)
  with pytest.raises(RuntimeError, match="input pipeline broke"):
    trainer.train_and_evaluate(_config(), str(tmp_path / "broken"))
  assert closes == {"manager": 2, "writer": 2, "made": 4}
  assert (tmp_path / "broken" / "checkpoints" / "2" / "state").is_dir()  # the step-2 save finished

  # a non-finite loss (std 0 -> inf input)
  monkeypatch.setattr(trainer, "_next_batch", real_next)
  cfg = _config()
  cfg.data.std = (0.0, 0.0, 0.0)
  with pytest.raises(trainer.NonFiniteLossError, match="at step 0"):
    trainer.train_and_evaluate(cfg, str(tmp_path / "nan"))
  assert closes == {"manager": 3, "writer": 3, "made": 6}
