"""dsanet-jax entry point: train (with periodic validation), eval, or predict on a video file.

  python main.py --config=configs/default.py --workdir=/tmp/dsanet_default
  python main.py --config=configs/default.py --workdir=W --mode=eval
  python main.py --mode=predict --config=configs/kinetics400/dsa_i3d_r50.py \
      --config.init_from=CONVERTED_DIR --video=clip.mp4
  python main.py --config=... --workdir=W --config.train.base_lr=0.01   # override any field

Multi-host: `jax.distributed.initialize()` runs when a cluster is detected (Cloud TPU pod slice,
SLURM with several tasks, Open MPI) or when --coordinator_address/--num_processes/--process_id are
given; every process runs the same command.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Path to a config file (configs/...py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict"], "What to run.")
_VIDEO = flags.DEFINE_string("video", None, "Video file for --mode=predict.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Classes printed by --mode=predict.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NUM_PROC = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROC_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
_VERBOSE = flags.DEFINE_bool(
  "verbose", False, "Console shows every library's INFO lines (always in WORKDIR/log.txt)."
)
_TF_NOTICES = ("oneDNN custom operations", "absl::InitializeLog() is called")


def _cluster_detected() -> bool:
  env = os.environ
  if int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return True
  return "," in env.get("TPU_WORKER_HOSTNAMES", "") or "JAX_COORDINATOR_ADDRESS" in env


def _maybe_initialize_distributed() -> None:
  if _COORD.value or _NUM_PROC.value:
    if _COORD.value is None or _NUM_PROC.value is None or _PROC_ID.value is None:
      raise app.UsageError(
        "multi-host flags need all of --coordinator_address, --num_processes and --process_id"
      )
    jax.distributed.initialize(
      coordinator_address=_COORD.value,
      num_processes=_NUM_PROC.value,
      process_id=_PROC_ID.value,
    )
  elif _cluster_detected():
    jax.distributed.initialize()


def _import_tensorflow_quietly() -> None:
  """Imports TensorFlow (for tf.data) keeping its C++ start-up notices off the console."""
  import tempfile

  with tempfile.TemporaryFile(mode="w+") as tmp:
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(tmp.fileno(), 2)
    try:
      import tensorflow  # noqa: F401
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      sys.stderr.writelines(s for s in tmp if not any(n in s for n in _TF_NOTICES))


def _log_config_source() -> None:
  overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
  path = config_flags.get_config_filename(flags.FLAGS["config"])
  logging.info("config %s %s", path, " ".join(overrides))


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/default.py")
  _maybe_initialize_distributed()
  _import_tensorflow_quietly()
  from dsanet_jax.train import logging as log_lib

  log_path = log_lib.setup_console(_WORKDIR.value, verbose=_VERBOSE.value)
  _log_config_source()
  if log_path:
    logging.info("log file (every library's INFO lines): %s", log_path)
  from dsanet_jax.train import inference, trainer  # after distributed initialisation

  if _MODE.value == "predict":
    if not _VIDEO.value:
      raise app.UsageError("--mode=predict needs --video=PATH")
    top = inference.predict_video(config, _VIDEO.value, workdir=_WORKDIR.value, top_k=_TOP_K.value)
    if jax.process_index() == 0:
      print(inference.format_top_k(_VIDEO.value, top))
    return 0
  if not _WORKDIR.value:
    raise app.UsageError(f"--mode={_MODE.value} needs --workdir")
  try:
    if _MODE.value == "train":
      summary = trainer.train_and_evaluate(config, _WORKDIR.value)
      if summary.get("preempted"):
        logging.warning(
          "stopped (%s) at step %d after saving; the same command resumes",
          summary["preempted"],
          summary["step"],
        )
        return 0
      res = summary["eval"]
    else:
      res = trainer.evaluate(config, _WORKDIR.value)
  except trainer.NonFiniteLossError as e:
    logging.error("%s", e)
    print(f"ERROR: {e}", file=sys.stderr)
    return 3
  if jax.process_index() == 0:
    print(
      f"top1 {res['top1']:.4f}  top5 {res['top5']:.4f}  ({res['num_videos']} videos, "
      f"{res.get('views', '?')} views) -> {os.path.join(_WORKDIR.value, 'eval', 'results.json')}"
    )
  return 0


if __name__ == "__main__":
  app.run(main)
