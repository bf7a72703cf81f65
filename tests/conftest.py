"""Test set-up: 8 fake CPU devices (before JAX starts), quiet TF, paths to ../shared."""

import fcntl
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import typing

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The test run never reads or writes the user's home: TFDS's default data dir (a config whose
# data.data_dir is None) and every HOME-derived cache (~/.cache, ~/.config, ~/.keras, ...) point
# into one temporary folder for the whole run, set before TFDS, JAX or torch are imported and
# inherited by every subprocess a test starts. `_real_home_untouched` fails a test writing there.
# A test whose config leaves data.data_dir None reads the embedded order_of_events from there: it
# is built once per test run (on first use, under builders.ensure_prepared's file lock), at its
# 12 fps; configs with another data.fps (the paper's 30) set data.fps=12 to read it.
# pytest-xdist's workers (the README's `-n 2`) inherit the first process's environment: they share
# its temporary home (datasets and caches built once) and know the real one.
REAL_HOME = pathlib.Path(
  os.environ.setdefault("DSANET_TESTS_REAL_HOME", os.path.expanduser("~"))
).resolve()
if "DSANET_TESTS_HOME" not in os.environ:
  os.environ["DSANET_TESTS_HOME"] = tempfile.mkdtemp(prefix="dsanet_test_home_")
TEST_HOME = pathlib.Path(os.environ["DSANET_TESTS_HOME"])
os.environ["HOME"] = str(TEST_HOME)
os.environ["TFDS_DATA_DIR"] = str(TEST_HOME / "tensorflow_datasets")
for _var, _sub in (("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config")):
  os.environ[_var] = str(TEST_HOME / _sub)
# One XLA compilation cache for the run (in-process and subprocess runs of the same tiny models
# compile once): about halves the suite's time on 2 cores; removed with the temp home.
os.environ["JAX_COMPILATION_CACHE_DIR"] = str(TEST_HOME / "jax_cache")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
# The tests' programs are tiny: XLA's optimisation passes, not running them, are most of their time
# (a width-4 R18 train step compiles in 22 s instead of 124 s on 2 cores, same losses). So the test
# run compiles with most optimisations off, and every subprocess inherits it; the headline runs
# (full trainings of the shipped default, where run time dominates) turn them back on.
os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"


def pytest_unconfigure(config) -> None:
  """Removes the run's temporary home (datasets and caches built during the tests), in the first
  process only (not in an xdist worker)."""
  if not hasattr(config, "workerinput"):
    shutil.rmtree(TEST_HOME, ignore_errors=True)


# pytest-xdist's workers (`-n 2`) take whole test files (`--dist=loadfile`, pyproject.toml), so a
# file's module fixtures are built once. (`--dist=loadgroup` with `xdist_group` marks does not group
# under pytest 9: xdist 3.8 renames `item._nodeid`, which pytest 9 no longer reads, so every test
# was scheduled alone and module fixtures and the headline runs were built on both workers.)
# The files taking minutes go first, longest first, so that the two workers end together: xdist
# would order files by their number of tests (`--no-loadscope-reorder` keeps this order), and a long
# file of one or two tests scheduled last ran alone for minutes. Seconds per file with -n 2 on 2
# cores, measured with `--durations=0` on 2026-12-04; a file not listed keeps its place after them.
FIRST = {
  "test_main.py": 668,
  "test_docs.py": 604,
  "test_hosts.py": 223,
  "test_init_from.py": 170,
  "test_gcs.py": 159,
  "test_models.py": 148,
  "test_device_check.py": 136,
  "test_storage_faults.py": 119,
  "test_convert.py": 114,
  "test_export.py": 101,
  "test_train_step.py": 94,
  "test_train_multiprocess.py": 90,
  "test_train_loop_lifecycle.py": 86,
}


def pytest_collection_modifyitems(config, items) -> None:
  """Longest files first (FIRST); a stable sort keeps each file's tests together and in order."""
  items.sort(key=lambda item: -FIRST.get(item.path.name, 0))


REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALCLIPS = SHARED / "data" / "realclips"
# main.py overrides that make the default config tiny (width 4, 2 frames, 16 px, one eval crop):
# the runs of main.py in test_main, test_hosts, test_gcs and test_train_multiprocess.
TINY_MODEL = [
  "--config.model.base_width=4",
  "--config.data.num_frames=2",
  "--config.data.crop_size=16",
  "--config.eval.short_side=16",
  "--config.eval.crop_size=16",
  "--config.eval.num_segments=4",
  "--config.eval.num_crops=1",
]


@pytest.fixture(scope="session")
def realclips() -> pathlib.Path:
  """The real Kinetics/SSv2 clips in ../shared (never copied into the repo)."""
  if not REALCLIPS.is_dir():
    pytest.fail(f"{REALCLIPS} is missing: the tests read real clips from ../shared beside the repo")
  return REALCLIPS


class HeadlineRuns:
  """The embedded default trained end to end through main.py, once per test run and config.

  `workdir('dsa')` runs configs/default.py, `workdir('tsn')` configs/default_tsn.py, exactly as
  shipped (only the dataset location is a temporary dir), on one CPU device in a subprocess, and
  returns the finished workdir (eval/results.json, eval/predictions.npz). Minutes per run. The runs
  live in the test run's temporary home, shared by the xdist workers: the first worker to need a
  run trains it under a file lock, a worker needing it meanwhile waits, later ones reuse it.
  """

  CONFIGS: typing.ClassVar[dict[str, str]] = {
    "dsa": "configs/default.py",
    "tsn": "configs/default_tsn.py",
  }

  def __init__(self, root: pathlib.Path):
    self.root = root
    self.root.mkdir(parents=True, exist_ok=True)

  def workdir(self, name: str) -> pathlib.Path:
    workdir = self.root / name
    done = self.root / f"{name}.done"
    with open(self.root / f"{name}.lock", "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
      if not done.exists():
        shutil.rmtree(workdir, ignore_errors=True)  # a failed attempt of another worker
        env = dict(os.environ)
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS")  # trained as shipped: run time, not compile
        cmd = [
          sys.executable,
          "main.py",
          f"--config={self.CONFIGS[name]}",
          f"--workdir={workdir}",
          f"--config.data.data_dir={self.root / 'tfds'}",
        ]
        proc = subprocess.run(
          cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False
        )
        if proc.returncode != 0:
          pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        (self.root / f"{name}.console.txt").write_text(proc.stderr + proc.stdout)
        done.touch()
    return workdir

  def console(self, name: str) -> str:
    """What the run printed (stderr, then stdout)."""
    self.workdir(name)
    return (self.root / f"{name}.console.txt").read_text()


@pytest.fixture(scope="session")
def headline_runs() -> HeadlineRuns:
  """Shared end-to-end runs of the embedded default (DSA and TSN), started on first use."""
  return HeadlineRuns(TEST_HOME / "headline")


def _home_snapshot() -> dict[str, int]:
  """The real home's top-level names and the mtime_ns of the trees tools write to (TFDS, caches)."""
  snap: dict[str, int] = {}
  if not REAL_HOME.is_dir():
    return snap
  for entry in REAL_HOME.iterdir():  # names only: other programs' own state may change mtimes
    snap[str(entry)] = 0
  for sub in ("tensorflow_datasets", ".cache", ".config", ".keras"):
    root = REAL_HOME / sub
    if root.is_dir():
      for dirpath, dirnames, _ in os.walk(root):
        snap[dirpath] = os.lstat(dirpath).st_mtime_ns
        if dirpath.count(os.sep) - str(root).count(os.sep) >= 2:
          dirnames.clear()  # caches can be deep; a new entry changes its parent's mtime
  return snap


@pytest.fixture(autouse=True)
def _real_home_untouched(request):
  """Fails the test if it created, removed or renamed anything in the user's real home."""
  before = _home_snapshot()
  yield
  after = _home_snapshot()
  changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
  if changed:
    pytest.fail(
      f"{request.node.nodeid} wrote to the user's home {REAL_HOME} (tests must use tmp "
      f"folders; HOME is {TEST_HOME} during tests): {changed[:10]}"
    )
