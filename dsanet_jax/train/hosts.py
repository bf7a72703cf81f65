"""The processes (hosts) of one run: start-up with `jax.distributed`, and a lost one.

`initialize(timeout_s, ...)` calls `jax.distributed.initialize` with its shutdown timeout set to
`config.multihost.timeout_s` (default 60 s) and its heartbeat timeout behind the watchdog's
(`jax_heartbeat_s`).

`Watchdog` (a daemon thread in every process) keeps a beat counter per process in the
coordination service's key-value store and reads the others' every `timeout_s / 24` seconds. A
process whose counter has not moved for `timeout_s / 4` seconds, one that ended with a non-zero
status, or an unreachable coordinator (process 0, which runs the service) is lost. The first
survivor to see it records the verdict in the store, so that all of them name the same process;
each then prints one line, naming the lost process and the last committed checkpoint, and exits at
once with status `HOST_LOST_EXIT`, whatever collective or checkpoint barrier its main thread is
blocked in. The same command on every host resumes from that checkpoint. JAX's own heartbeat check
(which aborts the process from C++ with a stack dump) stays well behind it, as the fallback.
"""

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
from absl import logging
from jax.experimental import multihost_utils

from dsanet_jax.common import native_output

HOST_LOST_EXIT = 4  # a process of the run was lost; rerun every process to resume
_KEY = "dsanet_hosts/"


def initialize(timeout_s: float, **kwargs: Any) -> list[str]:
  """`jax.distributed.initialize(**kwargs)` with a shutdown timeout of `timeout_s` and JAX's own
  heartbeat timeout well behind the watchdog's (`jax_heartbeat_s`).

  Returns what native code printed meanwhile (Gloo's 'connected to 1 peer ranks'), for the log
  file; on an error it goes to stderr.
  """
  t = max(2, int(timeout_s))  # JAX takes whole seconds
  ok = False
  try:
    with native_output.captured() as out:
      jax.distributed.initialize(
        **kwargs, heartbeat_timeout_seconds=jax_heartbeat_s(t), shutdown_timeout_seconds=t
      )
      # One collective while the processes are in step (initialize is a barrier): it sets up the
      # CPU collectives' (Gloo's) context, whose set-up waits only 30 s for the other processes (a
      # first collective after start-up work of uneven length, e.g. compiling on a loaded host,
      # failed).
      multihost_utils.sync_global_devices("dsanet_jax: processes connected")
    ok = True
  finally:
    if not ok:
      sys.stderr.writelines(out)
  return out


def jax_heartbeat_s(timeout_s: int) -> int:
  """JAX's heartbeat timeout: its default (100 s) or 4x `timeout_s`, whichever is longer.

  JAX's coordination service aborts every process (a C++ stack dump, no checkpoint named) when a
  heartbeat is late; on a busy host (a long XLA compile on 2 cores) a 30 s timeout declared both
  live processes dead. It is only the fallback behind the watchdog, which decides a loss after
  `timeout_s / 4` and reports it in one line.
  """
  return max(100, 4 * int(timeout_s))


def _client() -> Any:
  # The coordination-service client of `jax.distributed` (no public accessor; Orbax reads the
  # same attribute).
  from jax._src import distributed

  client = distributed.global_state.client
  if client is None:
    raise RuntimeError("hosts.Watchdog needs jax.distributed.initialize() first")
  return client


class Watchdog:
  """Ends this process in one line when another process of the run is lost (module docstring).

  Args:
    timeout_s: `config.multihost.timeout_s`.
    last_checkpoint: returns the last committed checkpoint, e.g. 'step 16 (W/checkpoints/16)'.
  """

  def __init__(self, timeout_s: float, last_checkpoint: Callable[[], str]) -> None:
    self.grace = float(timeout_s) / 4
    self.poll = max(0.25, float(timeout_s) / 24)
    self.last_checkpoint = last_checkpoint
    self.me, self.n = jax.process_index(), jax.process_count()
    self.client = _client()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name="hosts-watchdog", daemon=True)

  def __enter__(self) -> "Watchdog":
    self._thread.start()
    return self

  def __exit__(self, exc_type: Any, *exc: object) -> None:
    self.stop(1 if exc_type is not None else 0)

  def stop(self, status: int) -> None:
    """Stops watching and tells the others this process ended with exit `status` (non-zero:
    they stop too, naming it). Idempotent: the first call counts."""
    if self._stop.is_set():
      return
    self._stop.set()
    self._thread.join()
    with contextlib.suppress(jax.errors.JaxRuntimeError):  # no coordinator: nobody to tell
      self.client.key_value_set(f"{_KEY}done/{self.me}", str(int(status)))

  def settle(self) -> None:
    """Gives the watchdog time to reach a verdict (it exits the process if a peer was lost).

    Call before reporting an error from a collective, which may only be the lost peer's echo.
    """
    time.sleep(self.grace + 3 * self.poll)

  def _run(self) -> None:
    beat, last = 0, time.monotonic()
    seen: dict[int, tuple[str | None, float]] = {}
    while not self._stop.wait(self.poll):
      beat += 1
      try:
        self.client.key_value_set(f"{_KEY}beat/{self.me}", str(beat), allow_overwrite=True)
        store = {k.rsplit(_KEY, 1)[-1]: v for k, v in self.client.key_value_dir_get(_KEY)}
      except jax.errors.JaxRuntimeError as e:
        if self._stop.is_set():
          return
        logging.info("coordination service unreachable: %s", e)
        self._lost(0, "the coordinator, unreachable")
      if "lost" in store:
        pid, why = store["lost"].split(" ", 1)
        self._lost(int(pid), why)
      now = time.monotonic()
      if now - last > 2 * self.poll:  # this thread was starved: the others' beats count from now
        seen = {}
      last = now
      for pid in range(self.n):
        if pid == self.me:
          continue
        done = store.get(f"done/{pid}")
        if done == "0":
          continue
        if done is not None:
          self._verdict(pid, f"it stopped with exit status {done}; see its log")
        value = store.get(f"beat/{pid}")
        if pid not in seen or seen[pid][0] != value:
          seen[pid] = (value, now)
        elif now - seen[pid][1] > self.grace:
          self._verdict(pid, f"no heartbeat for {self.grace:.0f} s")

  def _verdict(self, pid: int, why: str) -> None:
    """Records the verdict for the others (the first one stands), then ends this process."""
    # the first verdict stands (set fails if there is one); the service may be gone too
    with contextlib.suppress(jax.errors.JaxRuntimeError):
      self.client.key_value_set(f"{_KEY}lost", f"{pid} {why}")
    with contextlib.suppress(jax.errors.JaxRuntimeError):
      pid, why = self.client.key_value_try_get(f"{_KEY}lost").split(" ", 1)
    if self.me == 0:  # the service lives here: let the others read the verdict first
      time.sleep(2 * self.poll)
    self._lost(int(pid), why)

  def _lost(self, pid: int, why: str) -> None:
    msg = (
      f"error: lost process {pid} of {self.n} ({why}); the last committed checkpoint is "
      f"{self.last_checkpoint()}; run the same command on every host to resume from it"
    )
    logging.error("%s", msg.removeprefix("error: "), extra={"file_only": True})
    sys.stdout.flush()
    print(msg, file=sys.stderr, flush=True)
    os._exit(HOST_LOST_EXIT)  # the main thread may be blocked in a collective: no clean-up
