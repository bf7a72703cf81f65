"""The library stands on its own: no `configs` import, declared dependencies, a complete wheel,
and each shared fact defined once."""

import ast
import importlib.metadata
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PKG = REPO / "dsanet_jax"
MODULES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: pathlib.Path) -> set[str]:
  """Top-level names of every absolute import in the file (also inside functions)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out |= {a.name.split(".")[0] for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      out.add(node.module.split(".")[0])
  return out


def _requirement_names(reqs: list[str]) -> set[str]:
  return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_library_never_imports_configs():
  offenders = [str(p.relative_to(REPO)) for p in MODULES if "configs" in _imports(p)]
  assert not offenders, f"dsanet_jax must not import the repo's configs/: {offenders}"


def test_serving_and_the_device_check_import_no_tensorflow():
  """The predictor, export, the train step and the accelerator check run on hosts without
  TensorFlow (the lent GPU image): importing them loads neither TensorFlow nor clu's writers."""
  code = (
    "import sys\n"
    "import dsanet_jax.predict, dsanet_jax.train.export, dsanet_jax.train.step\n"
    "import dsanet_jax.tools.device_check, dsanet_jax.tools.benchmark_model\n"
    "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'clu'))\n"
    "assert not bad, bad[:5]\n"
  )
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_third_party_import_is_a_declared_dependency():
  """Each module's third-party imports map (through the installed distributions) to a name in
  pyproject's [project] dependencies or optional-dependencies."""
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  declared = _requirement_names(project["dependencies"])
  for extra in project["optional-dependencies"].values():
    declared |= _requirement_names(extra)
  dists = importlib.metadata.packages_distributions()
  stdlib = sys.stdlib_module_names
  missing = {}
  for p in MODULES:
    for name in _imports(p) - stdlib - {"dsanet_jax"}:
      names = {d.lower().replace("_", "-") for d in dists.get(name, [])}
      if not names & declared:
        missing.setdefault(name, []).append(str(p.relative_to(REPO)))
  assert not missing, f"imports without a declared distribution in pyproject.toml: {missing}"


def test_wheel_holds_every_module_and_the_label_files(tmp_path):
  """`pip wheel` of a copy of the project (offline: no build isolation, no dependencies)."""
  src = tmp_path / "src"
  shutil.copytree(PKG, src / "dsanet_jax", ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(REPO / "pyproject.toml", src)
  cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
  subprocess.run([*cmd, "-w", str(tmp_path / "dist"), str(src)], check=True, cwd=tmp_path)
  (wheel,) = (tmp_path / "dist").glob("dsanet_jax-*.whl")
  names = set(zipfile.ZipFile(wheel).namelist())
  want = {str(p.relative_to(REPO)) for p in MODULES}
  want |= {str(p.relative_to(REPO)) for p in (PKG / "data" / "labels").iterdir()}
  assert want - names == set(), f"missing from the wheel: {sorted(want - names)}"
  meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
  requires = [
    line.split(": ", 1)[1]
    for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
    if line.startswith("Requires-Dist: ") and "extra ==" not in line
  ]
  assert {"jax", "flax", "optax", "tensorflow-cpu", "tensorflow-datasets"} <= _requirement_names(
    requires
  )


@pytest.mark.parametrize(
  "name",
  ["ARCH", "count_params", "_DTYPES", "expand_stage_flags", "compress_stage_flags", "parse_dtype"],
)
def test_each_fact_defined_once(name):
  """A shared fact (or its function) is defined at module level in exactly one library module."""
  where = []
  for p in MODULES:
    for node in ast.parse(p.read_text()).body:
      targets = []
      if isinstance(node, ast.FunctionDef | ast.ClassDef):
        targets = [node.name]
      elif isinstance(node, ast.Assign):
        targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
      elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        targets = [node.target.id]
      if name in targets:
        where.append(str(p.relative_to(REPO)))
  assert len(where) == 1, f"{name} is defined in {where}"
