"""The pipeline's snippet sampling (sampling.py, TF) against the original's index formulas, written
here from spec dsanet.md §4.2."""

import numpy as np
import pytest
import tensorflow as tf

from dsanet_jax.data import sampling

U, T, TAU = 4, 8, 8
L = T * TAU  # 64


def _tf_train(nf: int, seed: int, u: int = U, t: int = T, tau: int = TAU) -> np.ndarray:
  s = tf.constant([seed, 7], tf.int32)
  return sampling.train_offsets(tf.constant(nf), u, t, tau, s).numpy()


def spec_test_offsets(nf: int, u: int, t: int = T, tau: int = TAU) -> list[int]:
  """Spec §4.2 test starts: tick = (F - L + 1) / U (float); o_x = int(tick / 2 + tick x), or 0
  when tick <= 0."""
  tick = (nf - t * tau + 1) / float(u)
  return [int(tick / 2.0 + tick * x) if tick > 0 else 0 for x in range(u)]


def spec_frame_indices(offsets, nf: int, t: int, tau: int) -> np.ndarray:
  """Spec §4.2: frames o_u + tau * j, j = 0..T-1, clipped to F - 1."""
  return np.array([[min(o + tau * j, nf - 1) for j in range(t)] for o in offsets])


def _check_train_bounds(offsets: np.ndarray, nf: int, u: int = U, span: int = L) -> str:
  """Asserts one draw of train offsets follows the formulas; returns the case name."""
  a = (nf - span + 1) // u
  if a > 0:
    lo = np.arange(u) * a
    assert np.all(offsets >= lo) and np.all(offsets <= lo + a - 1), (nf, offsets)
    return "segments"
  if nf > max(u, span):
    assert np.all(np.diff(offsets) >= 0), offsets
    assert offsets.min() >= 0 and offsets.max() <= nf - span, (nf, offsets)
    return "uniform"
  assert np.all(offsets == 0), (nf, offsets)
  return "zeros"


@pytest.mark.parametrize(
  ("nf", "case"),
  [
    (300, "segments"),
    (67, "segments"),
    (66, "uniform"),
    (65, "uniform"),
    (64, "zeros"),
    (3, "zeros"),
  ],
)
def test_train_offsets_follow_the_formula(nf: int, case: str):
  for seed in range(40):
    assert _check_train_bounds(_tf_train(nf, seed), nf) == case


def test_train_offsets_cover_every_start():
  # F=75: a = (75 - 64 + 1) // 4 = 3, so each segment's start takes all of u*3 + {0, 1, 2}.
  draws = np.stack([_tf_train(75, s) for s in range(120)])
  for u in range(U):
    assert set(draws[:, u].tolist()) == {3 * u, 3 * u + 1, 3 * u + 2}
  # F=66: a = 0 and F > max(U, L): starts in [0, F - L] = [0, 2], all values reached.
  draws = np.stack([_tf_train(66, s) for s in range(60)])
  assert set(draws.ravel().tolist()) == {0, 1, 2}


def test_train_offsets_are_a_function_of_the_seed():
  a = [_tf_train(300, s) for s in range(5)]
  b = [_tf_train(300, s) for s in range(5)]
  np.testing.assert_array_equal(np.stack(a), np.stack(b))
  assert len({tuple(x) for x in a}) > 1


def test_test_offsets_are_segment_centres():
  # F=300, U_test=8, L=64: tick = 237 / 8 = 29.625, o_x = int(14.8125 + 29.625 x).
  expected = [14, 44, 74, 103, 133, 162, 192, 222]
  assert spec_test_offsets(300, 8) == expected
  np.testing.assert_array_equal(
    sampling.test_offsets(tf.constant(300), 8, T, TAU).numpy(), expected
  )
  for nf in [1, 10, 62, 63, 64, 65, 66, 100, 251, 252, 1000]:
    for u in [1, 3, 4, 8, 10]:
      want = spec_test_offsets(nf, u)
      got = sampling.test_offsets(tf.constant(nf), u, T, TAU).numpy()
      np.testing.assert_array_equal(got, want, err_msg=f"F={nf} U={u}")
  # F <= L - 1: tick <= 0, every start is 0.
  assert not sampling.test_offsets(tf.constant(63), 8, T, TAU).numpy().any()


def test_frame_indices_clip_to_the_last_frame():
  got = sampling.frame_indices(tf.constant([0, 5]), tf.constant(20), 4, 8).numpy()
  np.testing.assert_array_equal(got, [[0, 8, 16, 19], [5, 13, 19, 19]])
  np.testing.assert_array_equal(spec_frame_indices([0, 5], 20, 4, 8), got)
  # A 3-frame video: every start 0, indices repeat the last frame.
  offs = sampling.train_offsets(tf.constant(3), U, T, TAU, tf.constant([1, 2]))
  idx = sampling.frame_indices(offs, tf.constant(3), T, TAU).numpy()
  np.testing.assert_array_equal(idx, np.tile([0, 2, 2, 2, 2, 2, 2, 2], (U, 1)))


def test_example_seeds_differ_by_epoch_and_index():
  seeds = {
    tuple(sampling.example_seed(0, e, i).numpy().tolist()) for e in range(3) for i in range(4)
  }
  assert len(seeds) == 12
  np.testing.assert_array_equal(sampling.example_seed(3, 1, 2), sampling.example_seed(3, 1, 2))
  assert int(sampling.epoch_shuffle_seed(0, 1)) != int(sampling.epoch_shuffle_seed(0, 2))
