"""Test set-up: 8 fake CPU devices (before JAX starts), quiet TF, paths to ../shared."""

import os
import pathlib

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
