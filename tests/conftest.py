"""Test set-up: 8 fake CPU devices (before JAX starts), quiet TF, paths to ../shared."""

import os
import pathlib
import subprocess
import sys
import typing

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALCLIPS = SHARED / "data" / "realclips"


@pytest.fixture(scope="session")
def realclips() -> pathlib.Path:
  """The real Kinetics/SSv2 clips in ../shared (never copied into the repo)."""
  if not REALCLIPS.is_dir():
    pytest.fail(f"{REALCLIPS} is missing: the tests read real clips from ../shared beside the repo")
  return REALCLIPS


class HeadlineRuns:
  """The embedded default trained end to end through main.py, once per session and config.

  `workdir('dsa')` runs configs/default.py, `workdir('tsn')` configs/default_tsn.py, exactly as
  shipped (only the dataset location is a temporary dir), on one CPU device in a subprocess, and
  returns the finished workdir (eval/results.json, eval/predictions.npz). Minutes per run.
  """

  CONFIGS: typing.ClassVar[dict[str, str]] = {
    "dsa": "configs/default.py",
    "tsn": "configs/default_tsn.py",
  }

  def __init__(self, root: pathlib.Path):
    self.root = root
    self.done: dict[str, pathlib.Path] = {}

  def workdir(self, name: str) -> pathlib.Path:
    if name not in self.done:
      workdir = self.root / name
      env = dict(os.environ)
      env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
      env["TF_CPP_MIN_LOG_LEVEL"] = "2"
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
      self.done[name] = workdir
    return self.done[name]


@pytest.fixture(scope="session")
def headline_runs(tmp_path_factory) -> HeadlineRuns:
  """Shared end-to-end runs of the embedded default (DSA and TSN), started on first use."""
  return HeadlineRuns(tmp_path_factory.mktemp("headline"))
