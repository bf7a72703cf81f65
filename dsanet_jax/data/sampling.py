"""Snippet sampling: which frames of a video a clip reads (the original's `SampleFrames`).

A video of F frames is cut into U segments; each segment gives one snippet of T frames at stride
tau, so a snippet spans L = T * tau frames. Formulas (spec dsanet.md §4.2, mmaction `SampleFrames`):

  train: a = (F - L + 1) // U
         a > 0            -> o_u = u * a + randint[0, a - 1]
         F > max(U, L)    -> sort(U draws of randint[0, F - L])
         otherwise        -> o_u = 0
  test:  tick = (F - L + 1) / U_test (float); o_x = int(tick / 2 + tick * x), or 0 if F < L.
  frame indices = o_u + tau * j (j = 0..T-1), clipped to F - 1 (short videos repeat the last frame).

TF ops, run inside the tf.data maps (pipeline.train_frame_indices / test_frame_indices) and by
`dsanet_jax.tools.sample_frames`; randomness from stateless ops, so a draw is a pure function of
its seed. Every random draw of the pipeline derives from (seed, epoch, example index) through
`example_seed`.
"""

import tensorflow as tf

# ---------------------------------------------------------------- seeds


def example_seed(
  seed: int | tf.Tensor, epoch: int | tf.Tensor, index: int | tf.Tensor
) -> tf.Tensor:
  """The stateless seed of one example in one epoch: int32 [2], a pure function of its inputs."""
  base = tf.stack([tf.constant(0x5EED, tf.int64), tf.cast(seed, tf.int64)])
  s = tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))
  return tf.random.experimental.stateless_fold_in(s, tf.cast(index, tf.int64))


def epoch_shuffle_seed(seed: int | tf.Tensor, epoch: int | tf.Tensor, stream: int = 0) -> tf.Tensor:
  """The int64 scalar seed of epoch `epoch`'s shuffle number `stream` (0: examples, 1: files);
  a pure function of its inputs."""
  base = tf.stack([tf.constant(0x5F1E + stream, tf.int64), tf.cast(seed, tf.int64)])
  s = tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))
  s = tf.cast(s, tf.int64)
  return s[0] * 4294967296 + (s[1] & 0xFFFFFFFF)


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
  """`num` independent stateless seeds (int32 [2] each) from one."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


# ---------------------------------------------------------------- TF (inside tf.data)


def train_offsets(
  num_frames: tf.Tensor, num_segments: int, clip_len: int, frame_interval: int, seed: tf.Tensor
) -> tf.Tensor:
  """Training snippet starts int32 [U] for a video of `num_frames` (int32 scalar) frames.

  The three cases of the module docstring; random draws are stateless in `seed` (int32 [2]).
  """
  f = tf.cast(num_frames, tf.int32)
  span = clip_len * frame_interval
  avg = (f - span + 1) // num_segments
  seed_a, seed_b = split_seed(seed, 2)
  base = tf.range(num_segments, dtype=tf.int32)

  def segments() -> tf.Tensor:
    jitter = tf.random.stateless_uniform(
      [num_segments], seed_a, minval=0, maxval=tf.maximum(avg, 1), dtype=tf.int32
    )
    return base * avg + jitter

  def uniform_sorted() -> tf.Tensor:
    hi = tf.maximum(f - span + 1, 1)
    starts = tf.random.stateless_uniform(
      [num_segments], seed_b, minval=0, maxval=hi, dtype=tf.int32
    )
    return tf.sort(starts)

  def zeros() -> tf.Tensor:
    return tf.zeros([num_segments], tf.int32)

  return tf.case(
    [(avg > 0, segments), (f > max(num_segments, span), uniform_sorted)],
    default=zeros,
    exclusive=False,
  )


def test_offsets(
  num_frames: tf.Tensor, num_segments: int, clip_len: int, frame_interval: int
) -> tf.Tensor:
  """Test snippet starts int32 [U_test]: segment centres, in float64 as the original's NumPy."""
  f = tf.cast(num_frames, tf.int32)
  span = clip_len * frame_interval
  tick = tf.cast(f - span + 1, tf.float64) / float(num_segments)
  centres = tf.cast(tf.range(num_segments, dtype=tf.float64) * tick + tick / 2.0, tf.int32)
  return tf.where(f > span - 1, centres, tf.zeros_like(centres))


def frame_indices(
  offsets: tf.Tensor, num_frames: tf.Tensor, clip_len: int, frame_interval: int
) -> tf.Tensor:
  """Frame indices int32 [U, T] of snippets starting at `offsets` int32 [U], clipped to F - 1."""
  steps = frame_interval * tf.range(clip_len, dtype=tf.int32)
  idx = offsets[:, None] + steps[None, :]
  return tf.minimum(idx, tf.cast(num_frames, tf.int32) - 1)
