"""User-given locations stay URLs: no os.path / open / os.makedirs on them (issue 15, item 1)."""

import ast
import pathlib

import pytest

from dsanet_jax.common import paths
from dsanet_jax.train import checkpoint as ckpt_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Modules whose user-given locations go through dsanet_jax.common.paths (etils.epath). Every
# remaining local-file call in them is listed in ALLOWED with why.
CONVERTED = (
  "main.py",
  "dsanet_jax/common/paths.py",
  "dsanet_jax/data/frame_index.py",
  "dsanet_jax/train/checkpoint.py",
  "dsanet_jax/train/evaluation.py",
  "dsanet_jax/train/evaluator.py",
  "dsanet_jax/train/export.py",
  "dsanet_jax/train/logging.py",
  "dsanet_jax/train/trainer.py",
  "dsanet_jax/tools/fuse_scores.py",
  "dsanet_jax/tools/plot_runs.py",
  "dsanet_jax/tools/results_table.py",
  "dsanet_jax/tools/explain.py",
  "dsanet_jax/train/state.py",
  "dsanet_jax/train/restore.py",
  "dsanet_jax/train/init_from.py",
  "dsanet_jax/train/inference.py",
  "dsanet_jax/predict.py",
  "dsanet_jax/convert/checkpoint_io.py",
  "dsanet_jax/convert/torch_checkpoint.py",
  "dsanet_jax/convert/__main__.py",
  "dsanet_jax/convert/port.py",
  "dsanet_jax/data/pipeline.py",
  "dsanet_jax/data/prepare.py",
  "dsanet_jax/data/builders/__init__.py",
  "dsanet_jax/data/builders/video.py",
  "dsanet_jax/tools/device_check.py",
)
# Modules whose local-file calls are on local inputs by design, never on a user's output or
# shared location: the raw videos and annotation files of a manual download (`--manual_dir`), which
# PyAV and the frame reader decode from local files; a build benchmark's own temporary folders.
LOCAL_BY_DESIGN = (
  "dsanet_jax/data/annotations.py",
  "dsanet_jax/data/decode.py",
  "dsanet_jax/data/builders/base.py",
  "dsanet_jax/data/builders/kinetics.py",
  "dsanet_jax/data/builders/labelled_videos.py",
  "dsanet_jax/data/builders/something_something.py",
  "dsanet_jax/tools/benchmark_build.py",
)
ALLOWED = {
  # the project's own source tree (which log records are ours)
  ("dsanet_jax/train/logging.py", "os.path.dirname"),
  ("dsanet_jax/train/logging.py", "os.path.abspath"),
  ("dsanet_jax/train/logging.py", "os.path.join"),
  # --config is a local Python file (ml_collections loads it); --video (a file or frame folder) is
  # read locally by PyAV / the frame reader
  ("main.py", "os.path.isfile"),
  ("main.py", "os.path.exists"),
  *(
    ("dsanet_jax/train/inference.py", f"os.path.{f}")
    for f in ("isdir", "exists", "basename", "normpath")
  ),
  ("dsanet_jax/tools/explain.py", "os.path.isfile"),
  ("dsanet_jax/tools/explain.py", "os.path.basename"),
  # the build lock: a local (or NFS) data_dir only (object storage has none; builders._build_lock)
  ("dsanet_jax/data/builders/__init__.py", "open"),
  ("dsanet_jax/data/builders/__init__.py", "fcntl.flock"),
  # paths.py itself: os.fspath only
  ("dsanet_jax/common/paths.py", "os.fspath"),
}
FORBIDDEN_PREFIXES = (
  "os.path.", "os.makedirs", "os.replace", "os.rename", "os.remove", "os.listdir", "os.walk",
  "shutil.", "pathlib.", "fcntl.",
)  # fmt: skip
FORBIDDEN_NAMES = ("open", "np.savez", "np.load", "np.save")


def _dotted(node: ast.AST) -> str:
  if isinstance(node, ast.Name):
    return node.id
  if isinstance(node, ast.Attribute):
    return f"{_dotted(node.value)}.{node.attr}"
  return ""


def _in_memory(call: ast.Call) -> bool:
  """np.load / np.savez on an io.BytesIO (the bytes then go through epath)."""
  arg = call.args[0] if call.args else None
  return (isinstance(arg, ast.Name) and arg.id == "buf") or (
    isinstance(arg, ast.Call) and _dotted(arg.func) == "io.BytesIO"
  )


def _local_file_calls(rel: str) -> list[str]:
  """`file:line: call(...)` of each local-only file call in module `rel` not in ALLOWED."""
  tree = ast.parse((ROOT / rel).read_text(), filename=rel)
  bad = []
  for node in ast.walk(tree):
    if not isinstance(node, ast.Call):
      continue
    name = _dotted(node.func)
    if (rel, name) in ALLOWED or _in_memory(node):
      continue
    if name.startswith(FORBIDDEN_PREFIXES) or name in FORBIDDEN_NAMES:
      bad.append(f"{rel}:{node.lineno}: {name}(...)")
  return bad


@pytest.mark.parametrize("rel", CONVERTED)
def test_no_local_file_calls_on_user_paths(rel):
  bad = _local_file_calls(rel)
  assert not bad, "local-only file calls (use dsanet_jax.common.paths / epath):\n" + "\n".join(bad)


def test_every_module_with_file_calls_is_scanned_or_local_by_design():
  """A new module making local-file calls must be added to CONVERTED (and pass the scan) or to
  LOCAL_BY_DESIGN (with why), so that no user location escapes the scan unnoticed."""
  modules = ["main.py", *(str(p.relative_to(ROOT)) for p in (ROOT / "dsanet_jax").rglob("*.py"))]
  unlisted = [m for m in modules if m not in CONVERTED + LOCAL_BY_DESIGN and _local_file_calls(m)]
  assert not unlisted, f"modules with local-file calls, in neither list: {sorted(unlisted)}"


def test_url_stays_a_url():
  assert ckpt_lib.checkpoint_dir("gs://bkt/run") == "gs://bkt/run/checkpoints"
  assert str(paths.resolve("gs://bkt/run") / "eval" / "results.json") == (
    "gs://bkt/run/eval/results.json"
  )
  assert paths.is_url("gs://bkt/run") and not paths.is_url("runs/a")


def test_local_path_made_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert ckpt_lib.checkpoint_dir("run") == str(tmp_path / "run" / "checkpoints")


def test_unknown_scheme_is_one_clear_error():
  with pytest.raises(ValueError, match="nosuch://x: unsupported URL scheme"):
    paths.resolve("nosuch://x")
