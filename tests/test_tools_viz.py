"""plot_runs, results_table and explain (issue 11) on crafted runs and a tiny model."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.default import get_config
from dsanet_jax.convert import checkpoint_io
from dsanet_jax.models import build_model
from dsanet_jax.models.dsa import DSA
from dsanet_jax.tools import explain, plot_runs, results_table
from dsanet_jax.train import evaluator as eval_lib
from dsanet_jax.train import inference
from dsanet_jax.train.writers import JsonlWriter

CLASS_NAMES = ["a-b", "b-a", "c-d", "d-c"]


def _train_record(step: int, rate: float, loss: float) -> dict[str, float]:
  return {
    "train/loss": loss,
    "train/accuracy": 0.5,
    "train/learning_rate": 1e-3,
    "train/steps_per_sec": rate,
    "train/clips_per_sec": 4 * 8 * rate,
    "train/data_wait_fraction": 0.1,
    "train/epoch": step / 4,
  }


def _write_run(workdir, *, resumed: bool, base_width: int, aggregation: str) -> None:
  """metrics.jsonl with the trainer's writer and records; eval/results.json with write_results."""
  cfg = get_config()
  cfg.model.base_width = base_width
  cfg.model.aggregation = aggregation
  w = JsonlWriter(str(workdir / "metrics.jsonl"))
  w.write_scalars(0, {"num_params": 123456.0, "gmacs_per_view": 0.5})
  w.write_hparams({"config": cfg.to_json_best_effort()})
  for s in (1, 4, 8):
    w.write_scalars(s, _train_record(s, rate=2.0, loss=1.0 / s))
  w.write_scalars(8, {"val/top1@4x1": 0.5, "val/top5@4x1": 1.0})
  if resumed:  # restarted from the step-4 checkpoint: steps 5 and 8 again
    w.write_scalars(5, _train_record(5, rate=1.0, loss=0.3))
    w.write_scalars(8, _train_record(8, rate=4.0, loss=0.25))
    w.write_scalars(8, {"val/top1@4x1": 0.75, "val/top5@4x1": 1.0})
  w.write_scalars(12, _train_record(12, rate=4.0, loss=0.1))
  w.write_scalars(12, {"test/top1@8x3": 0.875, "test/mean_class_accuracy@8x3": 0.8})
  w.close()
  metrics = {
    "top1": 0.875,
    "top5": 1.0,
    "mean_class_accuracy": 0.8,
    "mAP": 0.9,
    "per_class_accuracy": np.array([1.0, 0.6, 0.8, 0.8]),
    "confusion_matrix": np.eye(4, dtype=np.int64),
    "num_videos": 8,
    "num_classes": 4,
    "num_views": 6,
    "views": "8x3",
    "eval_seconds": 1.0,
  }
  predictions = {
    "video_id": ["v0"],
    "label": np.zeros(1, np.int64),
    "scores": np.zeros((1, 4), np.float32),
  }
  extra = {"step": 12, "split": "validation", "checkpoint": f"{workdir}/checkpoints@12"}
  eval_lib.write_results(str(workdir / "eval"), metrics, predictions, CLASS_NAMES, extra=extra)


@pytest.fixture
def runs(tmp_path):
  a, b = tmp_path / "run_dsa", tmp_path / "run_tsn"
  a.mkdir()
  b.mkdir()
  _write_run(a, resumed=True, base_width=8, aggregation="dsa")
  _write_run(b, resumed=False, base_width=64, aggregation="tsn")
  return [str(a), str(b)]


def _distinct_steps(path: str) -> dict[str, set[int]]:
  """Independently of the tool: metric -> the set of steps that log it."""
  out: dict[str, set[int]] = {}
  with open(path) as f:
    for line in f:
      rec = json.loads(line)
      if "kind" in rec:
        continue
      for k in rec:
        if k not in ("step", "time"):
          out.setdefault(k, set()).add(rec["step"])
  return out


def test_plot_runs_series_match_metrics_jsonl(runs, tmp_path):
  out = tmp_path / "plots" / "curves.png"
  metrics = ["train/loss", "val/top1", "train/clips_per_sec", "train/learning_rate"]
  drawn = plot_runs.plot_runs(runs, str(out), metrics)
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
  assert set(drawn) == {"run_dsa (dsa i3d_resnet18 w8)", "run_tsn (tsn i3d_resnet18)"}
  for run, label in zip(runs, ("run_dsa (dsa i3d_resnet18 w8)", "run_tsn (tsn i3d_resnet18)")):
    steps = _distinct_steps(f"{run}/metrics.jsonl")
    for metric in metrics:
      key = metric if metric in steps else metric + "@4x1"
      xs, ys = drawn[label][metric]
      assert len(xs) == len(ys) == len(steps[key]), (run, metric)
      np.testing.assert_array_equal(xs, sorted(steps[key]))
  # The resumed run logs steps 5 and 8 twice (and step 8's val twice): counted once, last wins.
  series = plot_runs.load_series(plot_runs.load_run(runs[0]))
  assert list(series["train/loss"][0]) == [1, 4, 5, 8, 12]
  assert series["train/loss"][1][3] == 0.25 and series["val/top1@4x1"][1].tolist() == [0.75]
  by_epoch = plot_runs.plot_runs(runs, str(out), ["train/loss"], x="epoch")
  np.testing.assert_allclose(
    by_epoch["run_dsa (dsa i3d_resnet18 w8)"]["train/loss"][0],
    [
      0.25,
      1,
      1.25,
      2,
      3,
    ],
  )


def test_results_table_rows(runs):
  table = results_table.results_table(runs).splitlines()
  assert len(table) == 4 and table[0].startswith("| config | U x T | views | top-1")
  cells = [c.strip() for c in table[2].strip("|").split("|")]
  assert cells == [
    "run_dsa (dsa i3d_resnet18 w8)",
    "4x4",
    "8x3",
    "87.5",
    "100.0",
    "80.0",
    "0.5 x 6",
    "0.12M",
    "12",
    "0m 05s",  # after dedup: 1/2 + 3/2 + 1/1 + 3/4 + 4/4 = 4.75 s
  ]
  # Without the resume: 1/2 + 3/2 + 4/2 + 4/4 = 5 s.
  assert results_table.train_seconds(plot_runs.load_run(runs[1])) == pytest.approx(5.0)
  assert results_table.train_seconds(plot_runs.load_run(runs[0])) == pytest.approx(4.75)


def _tiny_config():
  cfg = get_config()
  cfg.eval.num_segments = 8  # two interleaved passes of U=4
  cfg.eval.num_crops = 1
  cfg.eval.short_side = 32
  cfg.eval.crop_size = 32
  return cfg


def _tiny_model(cfg, seed: int = 3):
  model = build_model(cfg.model, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  model.eval()
  return model


def test_dsa_switches_keep_numerics_and_turn_off_aggregation():
  dsa = DSA(16, 4, rngs=nnx.Rngs(0))  # C' = 2 aggregated channels
  dsa.eval()
  x = jnp.asarray(np.random.RandomState(0).randn(2 * 4, 2, 3, 3, 16), jnp.float32)  # N=2, U=4
  plain = nnx.jit(lambda m, v: m(v))(dsa, x)
  recording = nnx.view(dsa, record_kernels=True)
  y, inter = nnx.jit(lambda m, v: nnx.capture(m, nnx.Intermediate)(v))(recording, x)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(plain))  # recording changes nothing
  (k,) = inter["kernels"].get_value()
  np.testing.assert_allclose(np.asarray(k), np.asarray(dsa.kernels(x)), rtol=1e-6, atol=1e-7)
  assert k.shape == (2, 2, 3) and dsa.aggregate and not dsa.record_kernels  # the original kept
  assert np.abs(np.asarray(plain) - np.asarray(x)).max() > 1e-3
  identity = nnx.view(dsa, aggregate=False)
  np.testing.assert_array_equal(np.asarray(nnx.jit(lambda m, v: m(v))(identity, x)), np.asarray(x))


def test_explain_on_a_real_clip(tmp_path, realclips):
  cfg = _tiny_config()
  model = _tiny_model(cfg)
  checkpoint_io.save_model(
    tmp_path / "ckpt", model, {"config": cfg.model, "class_names": CLASS_NAMES}
  )
  clip = str(realclips / "kinetics400" / "Tw2yXa6CzWE.mp4")
  result = explain.explain(cfg, str(tmp_path / "ckpt"), [clip])
  (res,) = result["videos"]
  # The video-level top-5 is the network's prediction (as `predict --video` computes it).
  want = inference.aggregate_probs(inference.view_logits(model, cfg, clip), cfg.eval.aggregate)
  assert [n for n, _ in res["top5"]] == [CLASS_NAMES[i] for i in np.argsort(-want)[:5]]
  np.testing.assert_allclose([p for _, p in res["top5"]], np.sort(want)[::-1][:5], rtol=1e-4)
  assert len(res["snippets"]) == 8 and res["views"] == "8x1" and res["num_views"] == 2
  # The average prediction: the same network with every DSA module the identity.
  identity = nnx.view(model, only=DSA, aggregate=False)
  avg = inference.aggregate_probs(inference.view_logits(identity, cfg, clip), cfg.eval.aggregate)
  np.testing.assert_allclose([p for _, p in res["average_top5"]], np.sort(avg)[::-1][:5], rtol=1e-4)
  assert not np.allclose(avg, want, atol=1e-4)
  assert [m["module"] for m in res["dsa"]] == ["backbone.layer2[1].dsa", "backbone.layer3[1].dsa"]
  for m in res["dsa"]:
    assert sum(m["mean"].values()) == pytest.approx(1.0, abs=1e-5)
    assert m["off_centre"] == pytest.approx(1.0 - m["mean"]["current"], abs=1e-5)
    per = m["per_snippet"]
    # Snippets 0, 1 open their pass (no previous snippet), 6, 7 close it (no next).
    assert [p["mean"]["prev"] for p in per[:2]] == [0.0, 0.0]
    assert [p["mean"]["next"] for p in per[6:]] == [0.0, 0.0]
    assert all(p["mean"]["prev"] > 0 and p["mean"]["next"] > 0 for p in per[2:6])
    assert m["end_weight"]["first"] == pytest.approx(1.0 - m["mean"]["prev"], abs=1e-5)
  offs = [m["off_centre"] for m in res["dsa"]]
  assert result["off_centre"] == pytest.approx(np.mean(offs))
  out = tmp_path / "explain.png"
  explain.draw(result, str(out))
  assert out.read_bytes()[:4] == b"\x89PNG"
  json.dumps(result)  # --json prints it
  assert "mean off-centre tap weight" in explain.summary(result)
