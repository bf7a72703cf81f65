"""The console / log-file set-up and a training run's log (the metric writers: `train.writers`).

The console shows this project's INFO lines (one per log step, one per evaluation, where results
go) and every library's warnings except known noise; `WORKDIR/log.txt` keeps everything at INFO,
third-party lines (Orbax, TFDS, JAX) included.

A run's log: `log_banner` (versions, devices, mesh), `StepLog` (one line and one record of
`train/...` metrics per log step; raises `NonFiniteLossError` on a non-finite one) and `Profile`
(a `jax.profiler` trace of some train steps).
"""

import atexit
import contextlib
import json
import logging as py_logging
import os
import sys
import time
import traceback
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from dsanet_jax.common import paths

LOG_FILE = "log.txt"
# Source trees whose INFO lines reach the console (by the logging call's file path).
_OWN = (
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # dsanet_jax/
  os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "main"
  ),
)
# Third-party warnings that say nothing actionable to a user of this project.
_NOISE = (
  "`TensorInfo.dtype` is deprecated",
  "Unable to initialize backend",
  "Given directory is read only",  # Orbax, opening checkpoints read-only (eval, resume)
  "Waiting for previous save to complete",  # Orbax: saves closer together than a save lasts
)
# The storage clients' own reports of a failed save or request (Orbax's background save thread,
# gcsfs's retries), with tracebacks: the run reports the failure once, in its own line naming the
# checkpoint (checkpoint.CheckpointWriteError); these stay in log.txt.
_STORAGE_REPORTS = (
  "Handler Commit operations",
  "Save Finalize thread",
  "out of retries",
  "_SignalingThread.run() raised",
)


def file_only(msg: str, *args: Any) -> None:
  """An INFO line for the log file, not the console (e.g. the full config)."""
  logging.info(msg, *args, extra={"file_only": True})


class _ConsoleFilter(py_logging.Filter):
  """This project's INFO and above; other libraries' WARNING and above, less known noise."""

  def __init__(self, verbose: bool) -> None:
    super().__init__()
    self.verbose = verbose

  def filter(self, record: py_logging.LogRecord) -> bool:
    if self.verbose:
      return True
    if getattr(record, "file_only", False):
      return False
    if record.name == "asyncio":  # "Task exception was never retrieved" (Orbax, a failed read)
      return False
    own = record.pathname.startswith(_OWN)
    if not own and record.levelno < py_logging.WARNING:
      return False
    if "tensorflow_datasets" in record.pathname and record.levelno < py_logging.ERROR:
      return False  # TFDS's notices (deprecations, folder scans while a dataset is first built)
    noise = _NOISE if own else (*_NOISE, *_STORAGE_REPORTS)
    return not any(s in str(record.msg) for s in noise)


class _ConsoleFormatter(py_logging.Formatter):
  def format(self, record: py_logging.LogRecord) -> str:
    t = time.strftime("%H:%M:%S", time.localtime(record.created))
    level = "" if record.levelno < py_logging.WARNING else f"{record.levelname}: "
    return f"{t} {level}{record.getMessage()}"


def setup_console(*, verbose: bool = False) -> None:
  """Quiet console: this project's INFO lines, other libraries' warnings (TFDS's errors only) and
  no TFDS progress bars on stderr (`verbose`: everything). Call once, after flags are parsed and
  before anything logs."""
  import tensorflow_datasets as tfds

  tfds.display_progress_bar(verbose)
  logging.set_verbosity(logging.INFO)
  absl_handler = logging.get_absl_handler()
  absl_handler.python_handler.setFormatter(_ConsoleFormatter())
  absl_handler.addFilter(_ConsoleFilter(verbose))
  for name in ("jax", "orbax", "tensorflow", "tensorflow_datasets"):
    py_logging.getLogger(name).setLevel(py_logging.INFO)
  if not verbose:
    sys.unraisablehook = _unraisable_to_log_file


def _unraisable_to_log_file(u: Any) -> None:
  """Exceptions Python can only report (in `__del__`, finalisers: Orbax's asyncio tasks' 'Event
  loop is closed' at exit) go to the log file, not the console."""
  text = "".join(traceback.format_exception(u.exc_type, u.exc_value, u.exc_traceback))
  with contextlib.suppress(OSError, ValueError):  # at exit the log file may be closed already
    file_only("exception ignored in %r: %s", u.object, text.rstrip())


def add_log_file(workdir: str) -> str:
  """Every INFO line, in absl's format, also to `WORKDIR/log.txt` (process 0; others
  `log.<i>.txt`). Returns the path. Call after the start-up checks (it creates the workdir)."""
  import jax  # the process index is known once jax is initialised

  root = paths.resolve(workdir)
  root.mkdir(parents=True, exist_ok=True)
  i = jax.process_index()
  path = root / (LOG_FILE if i == 0 else f"log.{i}.txt")
  file_handler = (
    _ObjectLogHandler(path) if paths.is_url(path) else py_logging.FileHandler(str(path))
  )
  file_handler.setFormatter(logging.PythonFormatter())
  file_handler.setLevel(py_logging.INFO)
  py_logging.getLogger().addHandler(file_handler)
  if isinstance(file_handler, _ObjectLogHandler):
    file_handler.flush()  # opens the storage client now, so that...
    atexit.register(file_handler.flush)  # ...this runs before the client's own exit clean-up
  return str(path)


class WholeObjectText:
  """A text file on object storage, which has no append: its lines are kept here and the whole
  object is rewritten at most every `interval` seconds and at `flush` (metrics.jsonl, log.txt)."""

  def __init__(self, path: Any, interval: float = 10.0) -> None:
    self.path, self.interval = path, interval
    self.lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    self.written, self.dirty = 0.0, True

  def append(self, line: str) -> None:
    self.lines.append(line)
    self.dirty = True
    if time.monotonic() - self.written > self.interval:
      self.flush()

  def flush(self) -> None:
    if self.dirty:
      self.path.write_text("".join(self.lines))
      self.written, self.dirty = time.monotonic(), False


class _ObjectLogHandler(py_logging.Handler):
  """log.txt on object storage (a `WholeObjectText`; logging's exit hook closes handlers)."""

  def __init__(self, path: Any) -> None:
    super().__init__()
    self.obj = WholeObjectText(path)

  def emit(self, record: py_logging.LogRecord) -> None:
    self.obj.append(self.format(record) + "\n")

  def flush(self) -> None:
    self.obj.flush()

  def close(self) -> None:
    self.flush()
    super().close()


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Reads back a `metrics.jsonl` (tools/plot_runs)."""
  return [json.loads(s) for s in paths.resolve(path).read_text().splitlines() if s.strip()]


# ============================================================== the training run's log


class NonFiniteLossError(FloatingPointError):
  """A training metric (loss, gradient norm, ...) became NaN or infinite."""


def check_finite(step: int, metrics: dict[str, float]) -> None:
  """Raises NonFiniteLossError if any of the update `step`'s `metrics` is not finite."""
  bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
  if bad:
    raise NonFiniteLossError(
      f"non-finite training metrics at step {step}: {bad}; stopping without saving this state "
      "(the last good checkpoint is kept). Lower config.train.base_lr or check the data."
    )


def log_banner(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, workdir: str) -> None:
  """Versions, processes, devices and mesh; the full config goes to the log file only."""
  import flax
  import optax
  import orbax.checkpoint

  logging.info(
    "versions: jax %s, flax %s, optax %s, orbax-checkpoint %s",
    jax.__version__,
    flax.__version__,
    optax.__version__,
    orbax.checkpoint.__version__,
  )
  logging.info(
    "process %d of %d; %d local / %d global devices (%s); mesh %s",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices()[0].platform,
    dict(mesh.shape),
  )
  logging.info("workdir %s (full log and config: %s)", workdir, LOG_FILE)
  file_only("config:\n%s", config)


class StepLog:
  """Per-step metrics between log steps: fetched at log steps, checked finite, averaged, written.

  One console line per log step (with data-wait fraction, compile time on the first, and ETA);
  the same numbers go to the metric writers as `train/...`.
  """

  def __init__(
    self, config: ml_collections.ConfigDict, writer: Any, total_steps: int, spe: float, step: int
  ) -> None:
    self.config, self.writer, self.total, self.steps_per_epoch = config, writer, total_steps, spe
    self.first = step
    self.pending: list[tuple[int, dict[str, jax.Array]]] = []
    self.t, self.wait_s, self.n = time.time(), 0.0, 0
    self.compile_s: float | None = None
    self.last: dict[str, float] = {}

  def compiled(self, seconds: float) -> None:
    """The train step took `seconds` to compile (not counted in the first step's rate)."""
    self.compile_s = seconds
    self.t += seconds

  def add(self, step: int, metrics: dict[str, jax.Array], wait_s: float) -> None:
    """`metrics` of the update that made step `step` (1-based); `wait_s` waiting for its batch."""
    self.pending.append((step - 1, metrics))
    self.wait_s += wait_s
    self.n += 1
    if self.due(step):
      self.write(step)

  def flush(self) -> dict[str, float]:
    """Fetches pending per-step metrics, checks them finite, returns their mean."""
    if not self.pending:
      return {}
    fetched = jax.device_get([m for _, m in self.pending])
    for (s, _), m in zip(self.pending, fetched):
      check_finite(s, {k: float(v) for k, v in m.items()})
    self.pending = []
    return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}

  def due(self, step: int) -> bool:
    every = self.config.train.log_every_steps
    return step % every == 0 or step == self.total or step == self.first + 1

  def write(self, step: int) -> dict[str, float]:
    means = self.flush()
    dt = max(time.time() - self.t, 1e-9)
    rate = self.n / dt
    gbs = self.config.train.global_batch_size
    means.update(
      steps_per_sec=rate,
      videos_per_sec=rate * gbs,
      clips_per_sec=rate * gbs * self.config.model.num_segments,
      data_wait_fraction=self.wait_s / dt,
      epoch=step / self.steps_per_epoch,
      eta_minutes=(self.total - step) / max(rate, 1e-9) / 60,
    )
    compiled = ""
    if step == self.first + 1 and self.compile_s is not None:
      means["compile_seconds"] = self.compile_s
      compiled = f"  (compile {self.compile_s:.1f}s)"
    self.writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})
    logging.info(
      "step %d/%d loss %.4f acc %.3f lr %.4g |g| %.3g  %.1f clips/s  wait %.0f%%  ETA %.1f min%s",
      step,
      self.total,
      means["loss"],
      means["accuracy"],
      means["learning_rate"],
      means["grad_norm"],
      means["clips_per_sec"],
      100 * means["data_wait_fraction"],
      means["eta_minutes"],
      compiled,
    )
    self.last = means
    self.t, self.wait_s, self.n = time.time(), 0.0, 0
    return means


class Profile:
  """A `jax.profiler` trace of train steps first..last (1-based, inclusive) in WORKDIR/profile.

  TensorBoard's profile plugin reads it: `tensorboard --logdir WORKDIR/profile`.
  """

  def __init__(self, steps: Any, workdir: str) -> None:
    steps = tuple(steps or ())
    if steps and (len(steps) != 2 or not 1 <= int(steps[0]) <= int(steps[1])):
      raise ValueError(
        f"config.train.profile_steps={steps}: expected (first, last) with 1 <= first <= last, "
        "e.g. --config.train.profile_steps='(10, 12)'"
      )
    self.steps = tuple(int(s) for s in steps)
    self.dir = str(paths.resolve(workdir) / "profile")
    self.active = False

  def before(self, step: int) -> None:
    """Called before the update that makes step `step + 1`."""
    if self.steps and step + 1 == self.steps[0]:
      jax.profiler.start_trace(self.dir)
      self.active = True

  def after(self, step: int, out: Any) -> None:
    if self.active and step >= self.steps[1]:
      jax.block_until_ready(out)
      self.close()
      logging.info("profile of steps %d-%d written under %s", *self.steps, self.dir)

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False

  def __enter__(self) -> "Profile":
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()
