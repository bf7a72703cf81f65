"""Storage faults on `gs://` (issue 15): the bucket stops answering while a checkpoint is saved.

The GCS API emulator (tests/gcs_emulator.py, file-backed, on a free port) is stopped for about
10 s while a save is in flight and then started again on the same port with the same objects.
The storage clients retry (TensorStore for the arrays, gcsfs for the small files): a save that
finishes within `checkpoint.save_timeout_s` completes; one that does not is never marked finished,
the run stops with one line naming it (exit status 5), and a rerun resumes from the previous one.
"""

import itertools
import os
import pathlib
import shutil
import subprocess
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import base
from dsanet_jax.train import checkpoint as ckpt_lib
from tests.gcs_emulator import Emulator
from tests.test_gcs import _env, _main

REPO = pathlib.Path(__file__).resolve().parents[1]
BUCKET = "faults"
_BUCKETS = itertools.count()
OUTAGE_S = 10.0


@pytest.fixture
def gcs(tmp_path, monkeypatch):
  """A running emulator (its own: these tests stop it); this process's clients point at it.

  Each holds a bucket of another name: the storage client (one per process, epath caches it)
  keeps directory listings by bucket and path, and another emulator's must not be taken for it."""
  emu = Emulator(tmp_path / "store", f"{BUCKET}{next(_BUCKETS)}")
  emu.store.mkdir()
  emu.start()
  for k, v in emu.env().items():
    monkeypatch.setenv(k, v)
  yield emu
  emu.stop()


def _objects(emu: Emulator, prefix: str) -> pathlib.Path:
  """Where the file-backed emulator keeps the objects under `gs://BUCKET/prefix`."""
  return emu.store / ".cloudstorage" / emu.bucket / prefix


def _flat(tree) -> dict[str, np.ndarray]:
  """Leaves by path ('params/conv/kernel'; dict keys and sequence indices alike)."""
  out = {
    "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path): v
    for path, v in jax.tree_util.tree_leaves_with_path(tree)
  }
  assert out
  return out


def _assert_same(a, b) -> None:
  """Bit-exact: the same leaves, equal arrays."""
  a, b = _flat(a), _flat(b)
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


class _Manager:
  """Stands in for Orbax's CheckpointManager: `fail` maps a call number to what it raises."""

  directory = "gs://b/run/checkpoints"

  def __init__(self, fail: dict[int, BaseException]) -> None:
    self.fail, self.calls = fail, 0

  def latest_step(self) -> int:
    return 2

  def all_steps(self) -> list[int]:
    return [2]

  def _call(self) -> None:
    self.calls += 1
    if self.calls in self.fail:
      raise self.fail[self.calls]

  def save(self, step, args, metrics, force) -> None:
    self._call()

  def wait_until_finished(self) -> None:
    self._call()


class _Log:
  def flush(self) -> None:
    pass


def _saver(fail: dict[int, BaseException]):
  from dsanet_jax.train import trainer

  return trainer._Saver(_Manager(fail), base.get_base_config(), None, None)


def test_a_failed_save_names_itself_and_the_last_finished_one():
  """The save in flight fails (Orbax's timeout, raised at the next save): one line naming it, the
  last finished step and what to run; a save failing at once names itself."""
  s = _saver({2: TimeoutError("ChainedFuture completed 3/4 futures but timed out")})
  s.save(4, {}, _Log())
  with pytest.raises(ckpt_lib.CheckpointWriteError) as e:
    s.save(6, {}, _Log())
  assert str(e.value) == (
    "checkpoint gs://b/run/checkpoints/4 was not written (not finished within "
    "checkpoint.save_timeout_s=1200 s); the last finished checkpoint is step 2; rerun the same "
    "command to resume from it"
  )
  s = _saver({3: ConnectionRefusedError("Cannot connect to host storage.googleapis.com:443")})
  s.save(4, {}, _Log())
  s.wait()  # 4 finished
  with pytest.raises(ckpt_lib.CheckpointWriteError, match=r"checkpoints/6 was not written \("
                     r"ConnectionRefusedError: Cannot connect .*\); the last finished checkpoint "
                     r"is step 4;"):  # fmt: skip
    s.save(6, {}, _Log())


def test_the_storage_clients_own_failure_reports_stay_off_the_console():
  import logging as py_logging

  from dsanet_jax.train import logging as log_lib

  f = log_lib._ConsoleFilter(verbose=False)
  orbax = "/venv/site-packages/orbax/checkpoint/_src/checkpointers/async_checkpointer.py"
  msg = "[process=0] Failed to run 4 Handler Commit operations or the Commit callback"
  third = py_logging.LogRecord("absl", py_logging.ERROR, orbax, 1, msg, None, None)
  assert not f.filter(third)
  own = py_logging.LogRecord("absl", py_logging.ERROR, log_lib.__file__, 1, msg, None, None)
  assert f.filter(own)
  wait = "Waiting for previous save to complete took 3.8 seconds. If this number is high, ..."
  assert not f.filter(py_logging.LogRecord("absl", py_logging.WARNING, orbax, 1, wait, None, None))


def test_a_save_in_flight_waits_out_a_10s_storage_outage(gcs):
  """checkpoint.py on gs://: the bucket goes away just after a save starts and comes back 10 s
  later; the save completes (the clients retry) and both checkpoints restore bit-exact."""
  cfg = base.get_base_config().checkpoint  # the default save_timeout_s
  run = f"gs://{gcs.bucket}/stall"
  dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  rng = np.random.default_rng(0)
  states = {
    s: {"params": {"w": jax.device_put(rng.normal(size=(512, 1024)).astype(np.float32), dev)},
        "step": jax.device_put(np.int32(s), dev)}
    for s in (2, 4)
  }  # fmt: skip
  mngr = ckpt_lib.make_manager(run, cfg)
  ckpt_lib.save(mngr, states[2], ckpt_lib.CheckpointMeta(2, {}))
  mngr.wait_until_finished()
  ckpt_lib.save(mngr, states[4], ckpt_lib.CheckpointMeta(4, {}))  # returns at once (async)
  t0 = time.time()
  gcs.stop()
  assert not (_objects(gcs, "stall/checkpoints/4") / "commit_success.txt").exists()  # in flight
  time.sleep(OUTAGE_S)
  gcs.start()
  assert time.time() - t0 >= OUTAGE_S
  mngr.wait_until_finished()
  mngr.close()
  assert ckpt_lib.checkpoint_steps(run) == [2, 4]
  reader = ckpt_lib.open_read_only(run)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), states[2])
  for s in (2, 4):
    restored, meta = ckpt_lib.restore(reader, abstract, s)
    assert meta.step == s
    _assert_same(restored, states[s])
  reader.close()


# ======================================================= main.py: a save that outlasts its timeout

# The tiny default config of tests/test_gcs.py (8 steps, checkpoints every 2): its compiled
# programs are in the test run's compilation cache once either test has run.


def _state(step_dir: str):
  return ocp.PyTreeCheckpointer().restore(f"{step_dir}/state")


def _run_into_an_outage(gcs: Emulator, run: str, tmp_path: pathlib.Path) -> tuple[int, str]:
  """main.py on `run`, the bucket stopped once the step-4 save has started writing its arrays and
  started again OUTAGE_S later; (exit status, console). Step 2's objects are copied to
  tmp/checkpoint_2 as they were before the outage."""
  ckpts = _objects(gcs, "run/checkpoints")
  console = tmp_path / "console.txt"
  outage: list[float] = []
  with open(console, "w") as out:
    proc = subprocess.Popen(
      _main(run, "--config.checkpoint.save_timeout_s=4"),
      cwd=tmp_path, env=_env(), stdout=out, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
      t0 = time.time()
      # the step-4 save's background part has started writing its arrays (its blocking part,
      # which waits for the storage too, is over; stopped earlier, the save would only wait)
      while not any((ckpts / "4" / "state").glob("ocdbt.process_*/d/*")):
        assert proc.poll() is None, console.read_text()[-3000:]
        assert time.time() - t0 < 900, "no step-4 save within 900 s:\n" + console.read_text()
        time.sleep(0.01)
      gcs.stop()
      t1 = time.time()
      assert not (ckpts / "4" / "commit_success.txt").exists(), "the save finished before the stop"
      shutil.copytree(ckpts / "2", tmp_path / "checkpoint_2")
      restart = threading.Timer(OUTAGE_S, lambda: outage.append(gcs.start() or time.time() - t1))
      restart.start()
      rc = proc.wait(timeout=240)
      restart.join()
    finally:
      proc.kill()  # a no-op once it has exited
      proc.wait()
  assert outage and outage[0] >= OUTAGE_S
  return rc, console.read_text()


@pytest.mark.slow
def test_main_stops_in_one_line_when_a_save_outlasts_a_storage_outage_and_resumes(gcs, tmp_path):
  """main.py, workdir gs://: the bucket stops answering while the step-4 save is in flight, for
  longer than checkpoint.save_timeout_s. The run stops with one line naming that checkpoint and
  the last finished one, exit status 5, no traceback; step 2's objects are untouched; once the
  bucket is back, resume restores step 2 bit-exact and a rerun finishes the run."""
  run = f"gs://{gcs.bucket}/run"
  ckpts = _objects(gcs, "run/checkpoints")
  snapshot = tmp_path / "checkpoint_2"
  rc, text = _run_into_an_outage(gcs, run, tmp_path)
  print(text)  # the console of the run (pytest -s shows it)
  assert rc == ckpt_lib.WRITE_ERROR_EXIT, text[-3000:]
  assert "Traceback" not in text, text
  lines = text.splitlines()
  last_step = max(i for i, s in enumerate(lines) if " step " in s and "/8" in s)
  tail = lines[last_step + 1 :]
  assert len(tail) <= 3, tail
  (err,) = [s for s in tail if s.startswith("error: ")]
  assert f"checkpoint {run}/checkpoints/4 was not written" in err, err
  assert "the last finished checkpoint is step 2; rerun the same command" in err, err

  # nothing half-written is listed; step 2's objects are as they were before the outage
  assert ckpt_lib.checkpoint_steps(run) == [2]
  for f in sorted(p for p in snapshot.rglob("*") if p.is_file()):
    assert (ckpts / "2" / f.relative_to(snapshot)).read_bytes() == f.read_bytes(), f

  # resume (state.load, as the rerun does) restores step 2, bit-exact
  from tests.test_state import _resume, tiny_config

  cfg = tiny_config(**{"train.num_steps": 8, "data.data_dir": os.environ["TFDS_DATA_DIR"]})
  loaded = _resume(cfg, run)
  assert loaded.start == "resumed@2"
  saved = _state(f"{run}/checkpoints/2")
  _assert_same({k: loaded.state[k] for k in ("params", "batch_stats")},
               {k: saved[k] for k in ("params", "batch_stats")})  # fmt: skip
  digest = lambda t: sorted((np.shape(x), np.asarray(x).tobytes()) for x in jax.tree.leaves(t))
  assert digest(loaded.state["opt_state"]) == digest(saved["opt_state"])  # the same arrays
  assert int(jax.device_get(loaded.state["step"])) == 2

  p = subprocess.run(
    _main(run), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
  )
  assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-4000:]
  assert "resumed from" in p.stderr and "at step 2" in p.stderr, p.stderr
  assert (ckpts / "8" / "commit_success.txt").exists()  # in the bucket (this process's listings
  # of it are cached by its storage client)
  assert not (tmp_path / "gs:").exists()
