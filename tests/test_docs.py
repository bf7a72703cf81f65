"""The shell commands of README.md and docs/*.md: run (reduced) or marked as needing what is absent.

What counts as a command: inside a fenced code block that is not tagged `python`, every logical line
(backslash continuations joined) whose first word is `python`, `python3`, `pip` or `.venv/bin/...`
(after an optional leading `cd DIR &&`), and every line that starts with a `--flag` (a fragment that
continues a command, as in docs/data.md's runner list). Shell plumbing in the same block (mkdir,
printf, for, ln) runs with the block it belongs to. Inline `code` in prose is not checked.

Each command is either
- listed in RUN below, by its exact text, under a group; the group's test takes the commands FROM
  the doc and runs them with the explicit substitutions of that group (paths to tmp_path, smaller
  sizes, `[optional]` parts dropped), or
- marked in the doc: a trailing comment containing `needs: WHAT` (`# needs: a GPU`, `# 8x3; needs:
  ...`), or a `# needs: WHAT` comment line of its block before it (it covers the rest of the block).
A command neither listed nor marked, or a listed one that is no longer in the docs, fails
`test_every_doc_command_is_run_or_marked` with its file, line and text.
"""

import dataclasses
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
from concurrent import futures

import pytest

from tests.conftest import REPO

DOC_FILES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
_COMMAND_START = re.compile(r"^(cd \S+ && )?(python3?|pip|\.venv/bin/\S+)\s|^--")
_NEEDS = re.compile(r"#.*\bneeds:\s*\S")


@dataclasses.dataclass(frozen=True)
class Command:
  file: str
  line: int
  text: str  # the logical line, continuations joined, whitespace normalised
  marked: bool

  def __str__(self) -> str:
    return f"{self.file}:{self.line}: {self.text}"


def extract(file: str) -> list[Command]:
  """The commands of one doc file, in order."""
  out: list[Command] = []
  lines = (REPO / file).read_text().splitlines()
  in_block, shell, block_marked = False, False, False
  i = 0
  while i < len(lines):
    line = lines[i]
    if line.lstrip().startswith("```"):
      in_block = not in_block
      shell = in_block and line.lstrip()[3:].strip() != "python"
      block_marked = False
      i += 1
      continue
    if not (in_block and shell):
      i += 1
      continue
    start, parts = i, [line.strip()]
    while parts[-1].endswith("\\") and i + 1 < len(lines):
      i += 1
      parts[-1] = parts[-1][:-1].rstrip()
      parts.append(lines[i].strip())
    i += 1
    text = " ".join(parts)
    if text.startswith("#"):
      block_marked |= bool(_NEEDS.search(text))
      continue
    if _COMMAND_START.search(text):
      out.append(Command(file, start + 1, text, block_marked or bool(_NEEDS.search(text))))
  return out


def all_commands() -> list[Command]:
  return [c for f in DOC_FILES for c in extract(f)]


# Commands run by this module, by group (the exact doc text, whitespace normalised).
RUN: dict[str, list[str]] = {
  # The headline_runs fixture runs these (main.py on the embedded default; only data_dir differs).
  "headline": [
    "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/python main.py"
    " --config=configs/default.py --workdir=/tmp/dsanet_default",
    "python main.py --config=configs/default.py --workdir=/tmp/dsanet_default",
    "python main.py --config=configs/default_tsn.py --workdir=/tmp/dsanet_default_tsn",
    "python main.py --config=C --workdir=W",
  ],
  # .ci/run runs the README's test command.
  "ci": [
    "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/python -m"
    " pytest -q -n 2 tests",
  ],
  # The tools on the two finished headline runs (DSA and TSN).
  "tools": [
    "python -m dsanet_jax.tools.plot_runs /tmp/dsanet_default /tmp/dsanet_tsn --out=curves.png",
    "python -m dsanet_jax.tools.results_table /tmp/dsanet_default /tmp/dsanet_tsn",
    "python -m dsanet_jax.tools.explain --config=configs/default.py"
    " --checkpoint=/tmp/dsanet_default --video=clip.mp4 --out=explain.png [--json]",
    "python -m dsanet_jax.tools.fuse_scores RUN_T4 RUN_T8 [--weights=1,1] [--softmax] [--json]",
    "python -m dsanet_jax.tools.plot_runs /tmp/dsanet_default /tmp/dsanet_tsn --out=curves.png"
    " [--metrics=train/loss,val/top1@4x1] [--x=epoch]",
    "python -m dsanet_jax.tools.explain --config=configs/default.py"
    " --checkpoint=/tmp/dsanet_default --video=a.mp4[,b.mp4] --out=explain.png [--json]",
  ],
  # main.py's other modes and the predictor on a copy of the finished DSA headline run.
  "modes": [
    "python main.py --config=C --workdir=W --mode=eval",
    "python main.py --mode=predict --config=C --workdir=W --video=clip.mp4",
    "python -m dsanet_jax.predict --config=C --checkpoint=W_OR_DIR --video=clip.mp4",
    "python main.py --mode=export --config=C --workdir=W [--export_dir=D]",
  ],
  # docs/pipeline.md's benchmark recipe (the whole block, as a script) and its generic form.
  "pipeline_recipe": [
    "cd $REPO && python -m dsanet_jax.data.prepare --dataset=labelled_videos"
    " --config_name=k400_realclips --manual_dir=/tmp/k400bench --class_names=classes.txt"
    " --train_list=train.txt --video_root=videos --data_dir=/tmp/tfds_k400bench --target_fps=30",
    "python -m dsanet_jax.tools.benchmark_input --config=configs/kinetics400/dsa_i3d_r50.py"
    " --config.data.name=labelled_videos/k400_realclips"
    " --config.data.data_dir=/tmp/tfds_k400bench --batch_size=8"
    " [--num_batches=24 --raw_clips=96 --repeats=7]",
    "python -m dsanet_jax.tools.benchmark_input --config=configs/kinetics400/dsa_i3d_r50.py"
    " --config.data.name=NAME --config.data.data_dir=DIR [--pipeline=train|eval] [--batch_size=8]"
    " [--json]",
  ],
  # The embedded dataset's build and the build benchmark on the real clips.
  "data": [
    "python -m dsanet_jax.data.prepare --dataset=order_of_events --data_dir=~/tensorflow_datasets",
    "python -m dsanet_jax.tools.benchmark_build --clips=../shared/data/realclips --repeat=3",
  ],
}


def _normalised(text: str) -> str:
  """Whitespace collapsed, a trailing `# comment` dropped (RUN lists commands without it)."""
  return " ".join(re.sub(r"\s+#.*$", "", text).split())


def _group_commands(group: str) -> list[Command]:
  wanted = {_normalised(t) for t in RUN[group]}
  found = [c for c in all_commands() if _normalised(c.text) in wanted]
  if not found:
    pytest.fail(f"none of group {group!r}'s commands is in the docs any more: update RUN")
  return found


def _env(home: pathlib.Path) -> dict[str, str]:
  env = dict(os.environ)
  env.update(
    HOME=str(home),
    REPO=str(REPO),
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    TF_CPP_MIN_LOG_LEVEL="2",
  )
  return env


def _adapt(text: str, subs: dict[str, str], extra: str = "") -> str:
  """The doc command without its comment and `[optional]` parts, words substituted, flags added."""
  text = re.sub(r"\s+#.*$", "", text)
  text = re.sub(r"\[[^\]]*\]", "", text)
  text = re.sub(r"(^|&& )python3? ", rf"\g<1>{shlex.quote(sys.executable)} ", text)
  for old, new in subs.items():
    text = re.sub(rf"(?<![\w/.]){re.escape(old)}(?![\w])", new, text)
  return f"{text} {extra}".strip()


def _run(cmd: str, home: pathlib.Path, timeout: int = 600) -> str:
  proc = subprocess.run(
    ["bash", "-c", f"set -euo pipefail; {cmd}"],
    cwd=REPO,
    env=_env(home),
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )
  assert proc.returncode == 0, f"{cmd}\nexited {proc.returncode}:\n{proc.stderr[-3000:]}"
  return proc.stdout


def _run_all(cmds: list[str], home: pathlib.Path) -> dict[str, str]:
  """Runs distinct commands, two at a time (each is mostly a Python start-up)."""
  distinct = list(dict.fromkeys(cmds))
  with futures.ThreadPoolExecutor(2) as pool:
    outs = list(pool.map(lambda c: _run(c, home), distinct))
  return dict(zip(distinct, outs, strict=True))


def test_every_doc_command_is_run_or_marked():
  commands = all_commands()
  listed = {_normalised(t) for group in RUN.values() for t in group}
  bad = [str(c) for c in commands if not c.marked and _normalised(c.text) not in listed]
  assert not bad, (
    "doc commands neither run by tests/test_docs.py (RUN) nor marked `# needs: WHAT`:\n"
    + "\n".join(bad)
  )
  present = {_normalised(c.text) for c in commands}
  stale = sorted(listed - present)
  assert not stale, "tests/test_docs.py RUN lists commands no longer in the docs:\n" + "\n".join(
    stale
  )
  marked_and_listed = [str(c) for c in commands if c.marked and _normalised(c.text) in listed]
  assert not marked_and_listed, "run AND marked `# needs:`:\n" + "\n".join(marked_and_listed)


def test_extract_rule():
  cmds = extract("docs/data.md")
  texts = [c.text for c in cmds]
  # A continued command is one command, at its first line; a `--flag` fragment counts.
  assert any(
    t.startswith("python -m dsanet_jax.data.prepare --dataset=labelled_videos") for t in texts
  )
  assert any(t.startswith("--beam_options=") for t in texts)
  # A directory listing in a plain block is not a command.
  assert not any(
    "kinetics-400_train.csv" in t and not t.startswith(("python", "--")) for t in texts
  )


@pytest.mark.slow
def test_headline_commands_are_the_headline_runs(headline_runs):
  """The README's first command (and training.md's) is what the headline_runs fixture runs."""
  for c in _group_commands("headline"):
    main = c.text.split("&& ")[-1]
    main = re.sub(r"\s+#.*$", "", main)
    args = shlex.split(main)
    assert args[0].endswith("python") and args[1] == "main.py", str(c)
    config = dict(a.split("=", 1) for a in args[2:])["--config"]
    name = {"configs/default.py": "dsa", "configs/default_tsn.py": "tsn", "C": "dsa"}[config]
    assert headline_runs.CONFIGS[name] == config or config == "C", str(c)
    assert set(dict(a.split("=", 1) for a in args[2:])) == {"--config", "--workdir"}, str(c)
    assert (headline_runs.workdir(name) / "eval" / "results.json").exists()
  # A quiet console, also where the run built the dataset: no third-party line in absl's format
  # (XLA's C++ "Very slow compile?" notice may show on a loaded machine), no traceback, and not
  # TFDS's notices, which it prints to stdout (they go to log.txt).
  for name in headline_runs.CONFIGS:
    text = headline_runs.console(name)
    other = [
      s
      for s in text.splitlines()
      if (re.match(r"^\[?[IWEF]\d{4} ", s) and "slow_operation_alarm" not in s)
      or "Traceback" in s
      or "prepared" in s
    ]
    assert not other, (name, other[:10])
  built = [
    n for n in headline_runs.CONFIGS if "building order_of_events" in headline_runs.console(n)
  ]
  assert len(built) == 1, built


def test_ci_runs_the_readme_test_command():
  ci = (REPO / ".ci" / "run").read_text()
  for c in _group_commands("ci"):
    assert c.text.split("&& ")[-1] in ci, f"{c}: not in .ci/run"


@pytest.mark.slow
def test_tools_commands_on_the_headline_runs(headline_runs, realclips, tmp_path):
  dsa, tsn = headline_runs.workdir("dsa"), headline_runs.workdir("tsn")
  clip = str(realclips / "kinetics400" / "mmaction2_test.mp4")
  subs = {
    "/tmp/dsanet_default": str(dsa),
    "/tmp/dsanet_tsn": str(tsn),
    "RUN_T8": str(dsa),
    "RUN_T4": str(tsn),
    "clip.mp4": clip,
    "a.mp4": clip,
    "curves.png": str(tmp_path / "curves.png"),
    "explain.png": str(tmp_path / "explain.png"),
  }
  data_dir = f"--config.data.data_dir={headline_runs.root / 'tfds'}"
  cmds = [
    _adapt(c.text, subs, data_dir if "--config=" in c.text else "")
    for c in _group_commands("tools")
  ]
  outs = _run_all(cmds, tmp_path / "home")
  assert len(outs) == 4, list(outs)  # plot_runs, results_table, explain, fuse_scores
  assert (tmp_path / "curves.png").stat().st_size > 0
  assert (tmp_path / "explain.png").stat().st_size > 0
  for cmd, out in outs.items():
    assert out.strip(), f"{cmd}: printed nothing"


@pytest.mark.slow
def test_main_modes_and_predict_on_a_copy_of_the_headline_run(headline_runs, realclips, tmp_path):
  work = tmp_path / "W"
  shutil.copytree(headline_runs.workdir("dsa"), work)
  subs = {
    "C": "configs/default.py",
    "W": str(work),
    "W_OR_DIR": str(work),
    "clip.mp4": str(realclips / "kinetics400" / "mmaction2_test.mp4"),
  }
  data_dir = f"--config.data.data_dir={headline_runs.root / 'tfds'}"
  cmds = [_adapt(c.text, subs, data_dir) for c in _group_commands("modes")]
  outs = _run_all(cmds, tmp_path / "home")
  assert len(outs) == 4, list(outs)
  assert (work / "export" / "model.jax").exists()
  assert len(list((work / "eval").glob("*_step*/results.json"))) >= 1


@pytest.mark.slow
def test_pipeline_benchmark_recipe(tmp_path):
  """docs/pipeline.md's recipe block as one script: 6 copies -> 1, 8 batches -> 2 clips, 1 round."""
  recipe = next(c for c in _group_commands("pipeline_recipe") if "prepare" in c.text)
  lines = (REPO / recipe.file).read_text().splitlines()
  start = max(i for i in range(recipe.line) if lines[i].startswith("```")) + 1
  end = next(i for i in range(recipe.line, len(lines)) if lines[i].startswith("```"))
  script = "\n".join(lines[start:end])
  script = script.replace("for c in 0 1 2 3 4 5;", "for c in 0;")
  script = script.replace("/tmp/tfds_k400bench", str(tmp_path / "tfds"))
  script = script.replace("/tmp/k400bench", str(tmp_path / "k400bench"))
  script = re.sub(r"(^|&& )python ", rf"\g<1>{shlex.quote(sys.executable)} ", script, flags=re.M)
  script = script.replace("--batch_size=8", "--batch_size=2")
  script = re.sub(r"\[--num_batches=\d+ --raw_clips=\d+ --repeats=\d+\]", "", script)
  script += " --num_batches=2 --raw_clips=4 --repeats=1 --json"
  out = _run(script, tmp_path / "home")
  assert '"ratio"' in out, out[-2000:]
  # the generic form above the recipe is its benchmark command with NAME and DIR left open: its
  # words are the recipe's (checked, not run a second time)
  generic = next(c for c in _group_commands("pipeline_recipe") if "NAME" in c.text)
  subs = {"NAME": "labelled_videos/k400_realclips", "DIR": "/tmp/tfds_k400bench"}
  bench = "\n".join(lines[start:end]).split("python -m dsanet_jax.tools.benchmark_input", 1)[1]
  bench = re.sub(r"\[[^\]]*\]", "", bench.replace("\\\n", " "))
  words = shlex.split(_adapt(generic.text, subs))
  assert words[1:3] == ["-m", "dsanet_jax.tools.benchmark_input"], words
  assert set(words[3:]) <= set(shlex.split(bench)), (words, bench)


@pytest.mark.slow
def test_data_commands(tmp_path):
  cmds = _group_commands("data")
  prepare = next(c for c in cmds if "order_of_events" in c.text)
  out = _run(_adapt(prepare.text, {"~/tensorflow_datasets": str(tmp_path / "tfds")}), tmp_path)
  assert (tmp_path / "tfds" / "order_of_events").is_dir(), out
  bench = next(c for c in cmds if "benchmark_build" in c.text)
  subs = {
    "--repeat=3": "--repeat=1",
    "../shared/data/realclips": str(REPO.parent / "shared/data/realclips"),
  }
  out = _run(_adapt(bench.text, subs, "--modes=plain:1 --json"), tmp_path)
  assert out.strip(), "benchmark_build printed nothing"
