"""train/state.py: one loader for resume, init_from, eval and predict, and its checks.

A tiny run of the default config (R18, width 4, embedded dataset) is trained once in-process (4
steps, checkpoints at 2 and 4); each test works on a copy of its workdir.
"""

import json
import logging as py_logging
import pathlib
import shutil

import jax
import ml_collections
import numpy as np
import pytest
from absl import logging

from dsanet_jax.train import checkpoint as ckpt_lib
from dsanet_jax.train import evaluation, optim, restore, trainer
from dsanet_jax.train import sharding as sharding_lib
from dsanet_jax.train import state as state_lib

TINY = {
  "model.base_width": 4,
  "data.num_frames": 2,
  "data.crop_size": 16,
  "eval.short_side": 16,
  "eval.crop_size": 16,
  "eval.num_segments": 4,
  "eval.num_crops": 1,
  "eval.batch_size": 64,
  "train.global_batch_size": 8,
  "train.log_every_steps": 2,
  "checkpoint.every_steps": 2,
  "checkpoint.async_save": False,
  "train.log_gmacs": False,
  "train.num_steps": 4,
}


def tiny_config(**overrides: object) -> ml_collections.ConfigDict:
  from configs import default

  c = default.get_config()
  for key, value in {**TINY, **overrides}.items():
    *path, leaf = key.split(".")
    node = c
    for p in path:
      node = node[p]
    node[leaf] = value
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> pathlib.Path:
  w = tmp_path_factory.mktemp("run")
  trainer.train_and_evaluate(tiny_config(), str(w))
  assert sorted(ckpt_lib.checkpoint_steps(str(w))) == [2, 4]
  return w


@pytest.fixture
def workdir(run, tmp_path) -> pathlib.Path:
  w = tmp_path / "w"
  shutil.copytree(run, w)
  return w


class _Capture(py_logging.Handler):
  def __init__(self) -> None:
    super().__init__()
    self.lines: list[str] = []

  def emit(self, record: py_logging.LogRecord) -> None:
    self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
  h = _Capture()
  logging.get_absl_logger().addHandler(h)
  yield h.lines
  logging.get_absl_logger().removeHandler(h)


def _mesh():
  return sharding_lib.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1)))


def _resume(config, w):
  tx = optim.make_optimizer(config.train, optim.make_schedule(config.train, 64.0, 4))
  return state_lib.load(
    config,
    _mesh(),
    purpose="train",
    workdir=str(w),
    tx=tx,
    layout=restore.data_layout(config, 512),
  )


def _truncate_largest_state_file(step_dir: pathlib.Path) -> pathlib.Path:
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "ocdbt.process" in str(p)]
  big = max(files, key=lambda p: p.stat().st_size)
  data = big.read_bytes()
  big.write_bytes(data[: len(data) // 3])
  return big


# ----------------------------------------------------------------------------- one loader


def test_resume_eval_and_predict_give_the_same_model(workdir):
  cfg = tiny_config()
  resumed = _resume(cfg, workdir)
  assert resumed.start == "resumed@4" and resumed.step == 4
  ev = state_lib.load(cfg, _mesh(), purpose="eval", workdir=str(workdir))
  assert ev.start == "checkpoint@4" and "opt_state" not in ev.state
  assert ev.class_names == resumed.class_names and len(ev.class_names) == 4
  for a, b in zip(jax.tree.leaves(resumed.state["params"]), jax.tree.leaves(ev.state["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  from dsanet_jax.train import inference

  pred = inference.load_predictor(cfg, checkpoint=str(workdir))  # a training workdir
  assert pred.class_names == ev.class_names and pred.loaded.source == ev.source


def test_predict_accepts_a_training_workdir_as_checkpoint_and_names_bad_ones(tmp_path):
  with pytest.raises(state_lib.StateError, match="neither a training workdir"):
    state_lib.load(tiny_config(), _mesh(), purpose="eval", checkpoint=str(tmp_path))
  with pytest.raises(state_lib.StateError, match="nothing to evaluate: no --workdir"):
    state_lib.load(tiny_config(), _mesh(), purpose="eval")


# ----------------------------------------------------------------------------- config vs checkpoint


def test_architecture_mismatch_is_refused_in_one_line(workdir):
  cfg = tiny_config(**{"model.base_width": 8})
  for purpose in ("eval", "train"):
    with pytest.raises(state_lib.StateError) as e:
      if purpose == "eval":
        state_lib.load(cfg, _mesh(), purpose="eval", workdir=str(workdir))
      else:
        _resume(cfg, workdir)
    msg = str(e.value)
    assert "\n" not in msg and "model.base_width: checkpoint has 4, config 8" in msg, msg
    assert "checkpoints/4" in msg


def test_eval_uses_the_stored_model_section_when_only_run_time_fields_differ(workdir, log_lines):
  cfg = tiny_config(**{"model.bn_group_size": 4, "model.dropout_rate": 0.1})
  ev = state_lib.load(cfg, _mesh(), purpose="eval", workdir=str(workdir))
  assert ev.config.model.bn_group_size == 0 and ev.config.model.dropout_rate == 0.2
  said = [s for s in log_lines if "using the checkpoint's model section" in s]
  assert len(said) == 1 and "model.bn_group_size: checkpoint has 0, config 4" in said[0]


def test_resume_refuses_another_optimiser_structure(workdir):
  with pytest.raises(state_lib.StateError, match=r"train\.optimizer: checkpoint has 'adamw'"):
    _resume(tiny_config(**{"train.optimizer": "sgd"}), workdir)


# ----------------------------------------------------------------------------- corrupt checkpoints


def test_truncated_state_file_names_the_checkpoint_and_the_file_in_eval(workdir):
  _truncate_largest_state_file(workdir / "checkpoints" / "4")
  with pytest.raises(state_lib.CorruptCheckpointError) as e:
    state_lib.load(tiny_config(), _mesh(), purpose="eval", workdir=str(workdir))
  msg = str(e.value)
  assert f"checkpoint {workdir / 'checkpoints' / '4'} is corrupt" in msg and "\n" not in msg, msg
  # TensorStore names the OCDBT database and the array, not the data file inside it
  assert e.value.file.startswith(str(workdir / "checkpoints" / "4" / "state")), e.value.file
  assert "(array params." in e.value.file and "OUT_OF_RANGE" in msg, msg
  # ...and says how to evaluate the older one, which then loads
  assert msg.endswith("; to evaluate an older one: --config.eval.checkpoint_step=2 (steps 2)"), msg
  older = state_lib.load(
    tiny_config(**{"eval.checkpoint_step": 2}), _mesh(), purpose="eval", workdir=str(workdir)
  )
  assert older.start == "checkpoint@2"
  with pytest.raises(state_lib.StateError, match=r"checkpoint_step=3: no such checkpoint"):
    state_lib.load(
      tiny_config(**{"eval.checkpoint_step": 3}), _mesh(), purpose="eval", workdir=str(workdir)
    )


def test_resume_falls_back_from_a_truncated_state_file_and_renames_it_aside(workdir, log_lines):
  _truncate_largest_state_file(workdir / "checkpoints" / "4")
  resumed = _resume(tiny_config(), workdir)
  assert resumed.start == "resumed@2"
  assert ckpt_lib.checkpoint_steps(str(workdir)) == [2]
  assert (workdir / "checkpoints.corrupt" / "4" / "state").is_dir()  # kept, not deleted
  assert any("is corrupt" in s and "resuming from step 2 instead" in s for s in log_lines)


def test_truncated_meta_json_names_the_file_and_resume_falls_back(workdir):
  meta = workdir / "checkpoints" / "4" / "meta" / "metadata"
  meta.write_text(meta.read_text()[:50])
  with pytest.raises(state_lib.CorruptCheckpointError, match=r"meta/metadata: not valid JSON"):
    state_lib.load(tiny_config(), _mesh(), purpose="eval", workdir=str(workdir))
  assert _resume(tiny_config(), workdir).start == "resumed@2"
  assert (workdir / "checkpoints.corrupt" / "4" / "meta" / "metadata").is_file()


def test_all_checkpoints_corrupt_is_one_error_and_nothing_is_moved(workdir):
  for s in (2, 4):
    (workdir / "checkpoints" / str(s) / "meta" / "metadata").write_text("{")
  with pytest.raises(state_lib.StateError, match="no intact checkpoint"):
    _resume(tiny_config(), workdir)
  assert ckpt_lib.checkpoint_steps(str(workdir)) == [2, 4]


# ----------------------------------------------------------------------------- data layout


def test_resume_refuses_a_changed_data_layout_naming_it(workdir):
  cfg = tiny_config(**{"train.global_batch_size": 16})
  with pytest.raises(state_lib.StateError) as e:
    _resume(cfg, workdir)
  assert "global_batch_size: checkpoint has 8, now 16" in str(e.value)
  assert "allow_data_change" in str(e.value)


def test_resume_continues_with_allow_data_change_and_logs_the_remapping(workdir, log_lines):
  cfg = tiny_config(**{"train.global_batch_size": 16, "train.allow_data_change": True})
  assert _resume(cfg, workdir).start == "resumed@4"
  said = [s for s in log_lines if "data layout changed" in s]
  assert said and "read 32 examples" in said[0] and "position 64" in said[0], said


def test_checkpoints_record_the_data_layout(run):
  meta = json.loads((run / "checkpoints" / "4" / "meta" / "metadata").read_text())
  lay = meta["data_layout"]
  assert lay["global_batch_size"] == 8 and lay["process_count"] == 1
  assert lay["dataset"] == "order_of_events" and lay["split"] == "train"
  assert lay["num_examples"] == 512 and len(lay["fingerprint"]) == 16


# ------------------------------------------------------------------------ read-only, eval outputs


def test_eval_leaves_an_in_flight_save_alone_and_writes_its_own_results(workdir):
  tmp = workdir / "checkpoints" / "6.orbax-checkpoint-tmp-1234"
  (tmp / "state").mkdir(parents=True)
  before = json.loads((workdir / "eval" / "results.json").read_text())
  res = evaluation.evaluate(tiny_config(**{"data.eval_split": "train"}), str(workdir))
  assert tmp.is_dir()  # a writable CheckpointManager would have deleted it
  assert res["results"] == str(workdir / "eval" / "train_4x1_step4" / "results.json")
  assert json.loads((workdir / "eval" / "results.json").read_text()) == before  # untouched
  got = json.loads(pathlib.Path(res["results"]).read_text())
  assert got["split"] == "train" and got["step"] == 4 and got["views"] == "4x1"
  assert got["checkpoint"] == f"{workdir / 'checkpoints'}@4" and got["num_videos"] == 512
  assert got["passes_per_video"] == 1 and "num_views" not in got
  assert (workdir / "eval" / "train_4x1_step4" / "predictions.npz").is_file()
  for k in ("split", "step", "views", "checkpoint"):
    assert before[k] is not None, k  # the training run's final test records them too


# ----------------------------------------------------------------------------- class names


def test_dataset_class_names_warn_by_name_or_fail(monkeypatch, log_lines):
  """The trainer used to swallow every exception here, silently turning off the label check."""
  import types

  from dsanet_jax.data import pipeline

  builder = types.SimpleNamespace(
    info=types.SimpleNamespace(features={"label": types.SimpleNamespace(names=None)})
  )
  monkeypatch.setattr(pipeline, "load_builder", lambda cfg: builder)
  assert restore.dataset_class_names(tiny_config()) is None
  assert any("has no class names; the label-order check is off" in s for s in log_lines)

  def broken(cfg):
    raise ValueError("Dataset 'x' is not prepared")

  monkeypatch.setattr(pipeline, "load_builder", broken)
  with pytest.raises(ValueError, match="not prepared"):
    restore.dataset_class_names(tiny_config())
