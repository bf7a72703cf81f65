"""dsanet-jax entry point: train (with periodic validation), eval, predict, or export a model.

  python main.py --config=configs/default.py --workdir=/tmp/dsanet_default
  python main.py --config=configs/default.py --workdir=W --mode=eval
  python main.py --mode=predict --config=configs/kinetics400/dsa_i3d_r50.py \
      --config.init_from=CONVERTED_DIR --video=clip.mp4      # or a frame folder, or --workdir=W
  python main.py --mode=export --config=CFG --workdir=W [--export_dir=D]   # W/export/model.jax
  python main.py --config=... --workdir=W --config.train.base_lr=0.01   # override any field

Mistakes in the command line (a config path that does not exist, a misspelt override, a missing
init_from, a dataset that is not prepared) are reported in one line with exit status 2, before JAX
does any work and before the workdir is created. A non-finite loss stops training with exit status
3; a checkpoint that cannot be written (storage unreachable or stalled for longer than
checkpoint.save_timeout_s) with exit status 5, in one line naming it and the last finished one.

Multi-host: `jax.distributed.initialize()` runs when a cluster is detected (Cloud TPU pod slice,
SLURM with several tasks, Open MPI) or when --coordinator_address/--num_processes/--process_id are
given; every process runs the same command. A process that is lost (killed, its host gone) stops
the others within `config.multihost.timeout_s` (60 s): each prints one line naming it and the last
committed checkpoint, and exits with status 4; the same command on every host resumes from there.

Exit status: 0 done (or pre-empted by SIGTERM/SIGINT after saving; rerun to resume), 1 an error
(one line), 2 a command-line mistake, 3 a non-finite loss (nothing saved after the last good
checkpoint), 4 a lost process (rerun every process), 5 a checkpoint not written (storage; rerun
to resume from the last finished one).
"""

import contextlib
import logging as py_logging
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from dsanet_jax.common import native_output, paths

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Path to a config file (configs/...py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "export"], "What to run.")
_VIDEO = flags.DEFINE_string("video", None, "Video file or frame folder for --mode=predict.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Classes printed by --mode=predict.")
_CLASS_NAMES = flags.DEFINE_string(
  "class_names", None, "--mode=predict: class names file, if the checkpoint has none."
)
_EXPORT_DIR = flags.DEFINE_string("export_dir", None, "--mode=export: output (WORKDIR/export).")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NUM_PROC = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROC_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
_VERBOSE = flags.DEFINE_bool(
  "verbose", False, "Console shows every library's INFO lines (always in WORKDIR/log.txt)."
)
_TF_NOTICES = ("oneDNN custom operations", "absl::InitializeLog() is called")

USAGE_EXIT = 2


def _fail(msg: str) -> None:
  print(f"error: {msg}", file=sys.stderr)
  sys.exit(USAGE_EXIT)


def _config_path(argv: list[str]) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _override_error(argv: list[str], err: BaseException) -> str:
  """`--config.a.b: no such field; did you mean c?` from ml_collections' KeyError/AttributeError."""
  text = str(err).encode().decode("unicode_escape")
  m = re.search(r"'(\w+)'.*?Did you mean \"(\w+)\"", text, re.S)
  key = m.group(1) if m else re.sub(r"\W", "", text.splitlines()[0])
  flag = next(
    (a.split("=")[0] for a in argv if a.startswith("--config.") and f".{key}" in a.split("=")[0]),
    f"--config...{key}",
  )
  hint = f"; did you mean {m.group(2)}?" if m else ""
  return f"{flag}: no such field{hint}"


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors (exit status 2) for config mistakes."""
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path.split(":")[0]):
    _fail(f"--config={path}: no such file")
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except (KeyError, AttributeError) as e:  # ml_collections: an override naming no field
    _fail(_override_error(argv, e))
  cfg = _CONFIG.value
  if cfg is not None and not isinstance(cfg, ml_collections.ConfigDict):
    try:
      cfg.lock()  # a config file that failed to load: its error
    except (ImportError, OSError, SyntaxError, AttributeError, ValueError) as e:
      _fail(f"--config={path}: cannot be loaded: {str(e).splitlines()[0]}")
  return rest


def _cluster_detected() -> bool:
  env = os.environ
  if int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return True
  return "," in env.get("TPU_WORKER_HOSTNAMES", "") or "JAX_COORDINATOR_ADDRESS" in env


def _maybe_initialize_distributed(config: ml_collections.ConfigDict) -> list[str]:
  """Multi-host start-up; returns native code's start-up lines (for the log file)."""
  from dsanet_jax.train import hosts

  if _COORD.value or _NUM_PROC.value:
    if _COORD.value is None or _NUM_PROC.value is None or _PROC_ID.value is None:
      raise app.UsageError(
        "multi-host flags need all of --coordinator_address, --num_processes and --process_id"
      )
    return hosts.initialize(
      config.multihost.timeout_s,
      coordinator_address=_COORD.value,
      num_processes=_NUM_PROC.value,
      process_id=_PROC_ID.value,
    )
  if _cluster_detected():
    return hosts.initialize(config.multihost.timeout_s)
  return []


def _watchdog(config: ml_collections.ConfigDict) -> contextlib.AbstractContextManager:
  """With several processes: `hosts.Watchdog` (a lost process ends the run in one line)."""
  if jax.process_count() == 1:
    return contextlib.nullcontext()
  from dsanet_jax.train import checkpoint, hosts

  workdir = _WORKDIR.value

  def last_checkpoint() -> str:
    steps = checkpoint.checkpoint_steps(workdir)
    if not steps:
      return "none yet" if workdir else "none (no --workdir)"
    return f"step {steps[-1]} ({checkpoint.checkpoint_dir(workdir)}/{steps[-1]})"

  return hosts.Watchdog(config.multihost.timeout_s, last_checkpoint)


def _import_notice(line: str) -> bool:
  """TF's C++ start-up notices, and INFO lines of what it imports (absl's format, e.g.
  matplotlib's 'generated new fontManager' on a machine's first run)."""
  return any(n in line for n in _TF_NOTICES) or re.match(r"I\d{4} ", line) is not None


def _import_tensorflow_quietly() -> None:
  """Imports TensorFlow (for tf.data) keeping its start-up notices off the console."""
  try:
    with native_output.captured((2,)) as out:
      import tensorflow  # noqa: F401
  finally:
    sys.stderr.writelines(s for s in out if not _import_notice(s))


def _log_config_source() -> None:
  overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
  path = config_flags.get_config_filename(flags.FLAGS["config"])
  logging.info("config %s %s", path, " ".join(overrides))


def validate(config: ml_collections.ConfigDict, mode: str) -> None:
  """Start-up checks before JAX works or the workdir is touched (one line, exit status 2)."""
  from dsanet_jax.train import checkpoint, init_from, state

  if mode == "predict" and not _VIDEO.value:
    _fail("--mode=predict needs --video=PATH (a video file or a frame folder)")
  if mode == "predict" and not os.path.exists(_VIDEO.value):
    _fail(f"--video={_VIDEO.value}: no such video file or frame folder")
  if mode in ("train", "eval") and not _WORKDIR.value:
    _fail(f"--mode={mode} needs --workdir")
  if mode == "export" and not (_WORKDIR.value or _EXPORT_DIR.value):
    _fail("--mode=export needs --workdir (writes WORKDIR/export) or --export_dir")
  if mode == "train" or not checkpoint.checkpoint_steps(_WORKDIR.value):
    try:  # the init source: needed for training, and read by the other modes without checkpoints
      init_from.check_init_source(config, for_training=mode == "train")
    except (state.StateError, ValueError, FileNotFoundError) as e:
      _fail(str(e))
  if mode in ("train", "eval"):
    from dsanet_jax.common import data_spec
    from dsanet_jax.data import pipeline

    try:
      pipeline.load_builder(data_spec.from_config(config))
    except (ValueError, FileNotFoundError) as e:
      _fail(str(e).splitlines()[0])


def _stopped(err: Exception) -> int:
  """A run stopped by a known failure: its one line on the console; the exit status."""
  from dsanet_jax.train import checkpoint, trainer

  if isinstance(err, checkpoint.CheckpointWriteError):  # storage unreachable or stalled
    logging.error("%s", err, exc_info=True, extra={"file_only": True})  # the cause: log.txt only
    print(f"error: {err}", file=sys.stderr, flush=True)
    # Exit now: the failed save's writes may still be retrying in the storage clients' threads
    # (never marked finished); an interpreter shutdown would wait for them, or report each one
    # that ends after its event loop has closed. The log handlers are flushed first.
    py_logging.shutdown()
    os._exit(checkpoint.WRITE_ERROR_EXIT)
  if isinstance(err, trainer.NonFiniteLossError):
    logging.error("%s", err)
    print(f"ERROR: {err}", file=sys.stderr)
    return 3
  print(f"error: {err}", file=sys.stderr)  # state.StateError
  return 1


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/default.py")
  mode = _MODE.value
  _import_tensorflow_quietly()
  from dsanet_jax.train import logging as log_lib

  log_lib.setup_console(verbose=_VERBOSE.value)
  validate(config, mode)  # before the workdir is touched
  native = _maybe_initialize_distributed(config)
  if _WORKDIR.value:
    log_path = log_lib.add_log_file(_WORKDIR.value)
    logging.info("log file (every library's INFO lines): %s", log_path)
  for line in native:
    log_lib.file_only("%s", line.rstrip())
  _log_config_source()
  try:
    with _watchdog(config) as watchdog:
      try:
        status = run(config, mode)
        if watchdog is not None:
          watchdog.stop(status)
        return status
      except jax.errors.JaxRuntimeError:
        if watchdog is not None:  # a failed collective may be a lost process: the watchdog says
          watchdog.settle()
        raise
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    # several processes and none lost: one line here, the traceback in the log file
    logging.error("a collective operation failed", exc_info=True, extra={"file_only": True})
    print(f"error: process {jax.process_index()}: {str(e).splitlines()[0]}", file=sys.stderr)
    return 1


def run(config: ml_collections.ConfigDict, mode: str) -> int:
  """Runs `mode`; returns the exit status."""
  # after distributed initialisation
  from dsanet_jax.train import checkpoint, evaluation, inference, state, trainer

  try:
    if mode == "predict":
      pred = inference.load_predictor(
        config, workdir=_WORKDIR.value, class_names_file=_CLASS_NAMES.value
      )
      p = inference.predict(pred, _VIDEO.value, top_k=_TOP_K.value)
      if jax.process_index() == 0:
        print(inference.format_top_k(_VIDEO.value, p.top))
      return 0
    if mode == "export":
      from dsanet_jax.train import export

      out = str(paths.resolve(_EXPORT_DIR.value or paths.resolve(_WORKDIR.value) / "export"))
      export.export_model(config, out_dir=out, workdir=_WORKDIR.value)
      print(f"exported -> {out}")
      return 0
    if mode == "train":
      summary = trainer.train_and_evaluate(config, _WORKDIR.value)
      if summary.get("preempted"):
        logging.warning(
          "stopped (%s) at step %d after saving; the same command resumes",
          summary["preempted"],
          summary["step"],
        )
        return 0
      res = summary["eval"]
      path = str(paths.resolve(_WORKDIR.value) / "eval" / "results.json")
    else:
      res = evaluation.evaluate(config, _WORKDIR.value)
      path = res["results"]
  except (state.StateError, trainer.NonFiniteLossError, checkpoint.CheckpointWriteError) as e:
    return _stopped(e)
  if jax.process_index() == 0:
    n = res["num_videos"]
    print(
      f"top1 {res['top1']:.4f}  top5 {res['top5']:.4f}  ({n} video{'' if n == 1 else 's'}, "
      f"{res.get('views', '?')} views) -> {path}"
    )
  return 0


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
