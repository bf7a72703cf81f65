"""Spatial ops for video clips: boxes and coins (TF, inside tf.data maps), and the frames' resize,
flip and crops (numpy, in one `tf.numpy_function` per clip). One box and one flip coin per video.

Boxes are `(y, x, h, w)` int32 in the coordinates of the stored frames. Training crops are taken
as "crop the box, resize it to crop_size", so that `tf.io.decode_and_crop_jpeg` decodes only the
box (pipeline.decode_train_clip): RandomResizedCrop is exactly that, and scale jitter (resize the
short side to s, crop crop_size at a random place) is the same up to resampling with a box of side
crop_size * short / s.

All random draws are stateless (a seed int32 [2] in, the same box out).
"""

import math
from collections.abc import Sequence

import cv2
import numpy as np
import tensorflow as tf

cv2.setNumThreads(1)  # frames are resized in tf.data's threads; OpenCV's own pool only adds waits

# ---------------------------------------------------------------- boxes


def random_resized_crop_box(
  height: tf.Tensor,
  width: tf.Tensor,
  seed: tf.Tensor,
  scale: Sequence[float] = (0.08, 1.0),
  ratio: Sequence[float] = (3 / 4, 4 / 3),
  attempts: int = 10,
) -> tf.Tensor:
  """RandomResizedCrop's box with the axes right: int32 [4] = (y, x, h, w).

  torchvision's algorithm: up to `attempts` draws of an area fraction in `scale` and a log-uniform
  aspect ratio w/h in `ratio`; the first box that fits is placed uniformly. If none fits, the
  original's fallback: a centred square of side min(H, W). (The original compares the width with
  the image height and draws x against the height; spec dsanet.md §4.3. Not copied.)
  """
  h_img = tf.cast(height, tf.int32)
  w_img = tf.cast(width, tf.int32)
  s_area, s_ratio, s_pos = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
  area = tf.cast(h_img * w_img, tf.float32)
  target = area * tf.random.stateless_uniform([attempts], s_area, scale[0], scale[1])
  log_r = tf.random.stateless_uniform([attempts], s_ratio, math.log(ratio[0]), math.log(ratio[1]))
  aspect = tf.exp(log_r)
  w = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
  h = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
  fits = (w > 0) & (h > 0) & (w <= w_img) & (h <= h_img)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  any_fits = tf.reduce_any(fits)
  side = tf.minimum(h_img, w_img)
  bh = tf.where(any_fits, h[first], side)
  bw = tf.where(any_fits, w[first], side)
  u = tf.random.stateless_uniform([2], s_pos, 0.0, 1.0)
  y_rand = tf.cast(tf.floor(u[0] * tf.cast(h_img - bh + 1, tf.float32)), tf.int32)
  x_rand = tf.cast(tf.floor(u[1] * tf.cast(w_img - bw + 1, tf.float32)), tf.int32)
  y = tf.where(any_fits, tf.minimum(y_rand, h_img - bh), (h_img - bh) // 2)
  x = tf.where(any_fits, tf.minimum(x_rand, w_img - bw), (w_img - bw) // 2)
  return tf.stack([y, x, bh, bw])


def random_resized_crop_box_original(
  height: tf.Tensor,
  width: tf.Tensor,
  seed: tf.Tensor,
  scale: Sequence[float] = (0.08, 1.0),
  ratio: Sequence[float] = (3 / 4, 4 / 3),
  attempts: int = 10,
) -> tf.Tensor:
  """The original's RandomResizedCrop box (spec dsanet.md §4.3), before clipping: int32 [4] =
  (y, x, h, w), which may extend past the right or bottom edge; `clip_box` cuts it as the
  original's `mmcv.imcrop` did (pipeline.train_crop_box applies both).

  As the original's `get_params` + `mmcv.imcrop`, per attempt: area fraction ~ U(scale), aspect
  ~ U(ratio) (uniform, not log-uniform), w = round(sqrt(area * aspect)), h = round(sqrt(area /
  aspect)), swapped with probability 1/2. The box is accepted when w <= H and h <= W (the axes
  mixed up: the width is capped by the HEIGHT, so at most 256 px on 256x340 frames); its left edge
  is drawn in [0, W - h] and its top edge in [0, H - w], and the box has width w and height h, so
  about 35% of the boxes on 256x340 frames extend past the border (truncated by `clip_box` before
  the resize). No fit in `attempts` tries: the centred square of side min(H, W).
  """
  h_img = tf.cast(height, tf.int32)
  w_img = tf.cast(width, tf.int32)
  s_area, s_ratio, s_swap, s_pos = tf.unstack(tf.random.experimental.stateless_split(seed, num=4))
  area = tf.cast(h_img * w_img, tf.float32)
  target = area * tf.random.stateless_uniform([attempts], s_area, scale[0], scale[1])
  aspect = tf.random.stateless_uniform([attempts], s_ratio, ratio[0], ratio[1])
  w0 = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
  h0 = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
  swap = tf.random.stateless_uniform([attempts], s_swap, 0.0, 1.0) < 0.5
  w = tf.where(swap, h0, w0)
  h = tf.where(swap, w0, h0)
  fits = (w > 0) & (h > 0) & (w <= h_img) & (h <= w_img)  # the original's comparison
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  any_fits = tf.reduce_any(fits)
  bw, bh = w[first], h[first]
  u = tf.random.stateless_uniform([2], s_pos, 0.0, 1.0)
  x_rand = tf.cast(tf.floor(u[0] * tf.cast(w_img - bh + 1, tf.float32)), tf.int32)
  y_rand = tf.cast(tf.floor(u[1] * tf.cast(h_img - bw + 1, tf.float32)), tf.int32)
  x = tf.minimum(x_rand, w_img - bh)
  y = tf.minimum(y_rand, h_img - bw)
  side = tf.minimum(h_img, w_img)
  return tf.where(
    any_fits,
    tf.stack([y, x, bh, bw]),
    tf.stack([(h_img - side) // 2, (w_img - side) // 2, side, side]),
  )


def clip_box(box: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
  """A box int32 [4] = (y, x, h, w) with y, x >= 0, cut to the frame: int32 [4] (`mmcv.imcrop`)."""
  y, x, h, w = tf.unstack(box)
  h_img = tf.cast(height, tf.int32)
  w_img = tf.cast(width, tf.int32)
  return tf.stack([y, x, tf.minimum(h, h_img - y), tf.minimum(w, w_img - x)])


def scale_jitter_box(
  height: tf.Tensor,
  width: tf.Tensor,
  seed: tf.Tensor,
  crop_size: int,
  short_side_range: Sequence[int] = (256, 320),
) -> tf.Tensor:
  """Scale jitter + random crop as a box: int32 [4] = (y, x, h, w), a square.

  The short side is resized to s ~ U{lo..hi} and a crop_size square is taken at a uniform place;
  in stored-frame coordinates that is a square of side round(crop_size * short / s).
  """
  h_img = tf.cast(height, tf.int32)
  w_img = tf.cast(width, tf.int32)
  s_scale, s_pos = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
  lo, hi = short_side_range
  s = tf.random.stateless_uniform([], s_scale, lo, hi + 1, dtype=tf.int32)
  short = tf.minimum(h_img, w_img)
  side = tf.cast(
    tf.round(crop_size * tf.cast(short, tf.float32) / tf.cast(s, tf.float32)), tf.int32
  )
  side = tf.clip_by_value(side, 1, short)
  u = tf.random.stateless_uniform([2], s_pos, 0.0, 1.0)
  y = tf.minimum(
    tf.cast(tf.floor(u[0] * tf.cast(h_img - side + 1, tf.float32)), tf.int32), h_img - side
  )
  x = tf.minimum(
    tf.cast(tf.floor(u[1] * tf.cast(w_img - side + 1, tf.float32)), tf.int32), w_img - side
  )
  return tf.stack([y, x, side, side])


def flip_coin(seed: tf.Tensor, enabled: bool) -> tf.Tensor:
  """One horizontal-flip coin (bool scalar) per video; always False when not `enabled`."""
  if not enabled:
    return tf.constant(False)
  return tf.random.stateless_uniform([], seed, 0.0, 1.0) < 0.5


# ---------------------------------------------------------------- decoding


def jpeg_shape(jpeg: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """(height, width) int32 of a JPEG string, from its header (no decoding)."""
  shape = tf.io.extract_jpeg_shape(jpeg, output_type=tf.int32)
  return shape[0], shape[1]


# ---------------------------------------------------------------- frames (numpy, on the host)
# The decoded frames are resized, mirrored and cropped by these functions inside one
# `tf.numpy_function` per clip (pipeline.decode_train_clip, decode_eval_clip), straight into the
# clip's array: uint8 in and out, each output pixel written once, no float round trip. OpenCV
# releases the GIL while it resizes.


def _empty(shape: Sequence[int]) -> np.ndarray:
  """An uninitialised uint8 array of `shape`, its data aligned to 64 bytes (so that TF takes the
  buffer of the numpy_function's result as it is)."""
  n = math.prod(shape)
  buf = np.empty(n + 64, np.uint8)
  start = (-buf.ctypes.data) % 64
  return buf[start : start + n].reshape(shape)


def resize_into(frame: np.ndarray, out: np.ndarray) -> None:
  """Bilinear resize of uint8 `frame` [h, w, 3] into uint8 `out` [H, W, 3] (a copy if same size).

  OpenCV's INTER_LINEAR: half-pixel centres, edges replicated, no antialiasing, as
  `tf.image.resize(method='bilinear')`, but in 8-bit fixed point straight to uint8: within one
  unit of the float32 resize (tests/test_benchmarks.py), without a float round trip.
  """
  if frame.shape == out.shape:
    out[...] = frame
  else:
    cv2.resize(frame, (out.shape[1], out.shape[0]), dst=out, interpolation=cv2.INTER_LINEAR)


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) scaled so that the short side is `short_side`, aspect kept: the long side
  rounded (half to even, in float32) and at least short_side."""
  factor = np.float32(short_side) / np.float32(min(height, width))
  long_h = max(int(np.round(np.float32(height) * factor)), short_side)
  long_w = max(int(np.round(np.float32(width) * factor)), short_side)
  return (short_side if height <= width else long_h, short_side if width < height else long_w)


def crop_starts(height: int, width: int, crop_size: int, num_crops: int) -> list[tuple[int, int]]:
  """(y, x) of the test crops of a [height, width] frame.

  num_crops == 1: the centre crop. num_crops == 3: along the long side, first / centre / last
  (left, centre, right for landscape frames; top, centre, bottom for portrait), centred on the short
  side (ThreeCrop). The frame must be at least crop_size on both sides.
  """
  if num_crops not in (1, 3):
    raise ValueError(f"eval num_crops must be 1 or 3, got {num_crops}")
  if min(height, width) < crop_size:
    raise ValueError(f"frames of {height}x{width} are smaller than the test crop {crop_size}")
  cy, cx = (height - crop_size) // 2, (width - crop_size) // 2
  if num_crops == 1:
    return [(cy, cx)]
  if width >= height:
    return [(cy, 0), (cy, cx), (cy, width - crop_size)]
  return [(0, cx), (cy, cx), (height - crop_size, cx)]


def train_frames(
  size: int, frames_per_clip: int, flips: np.ndarray, *frames: np.ndarray
) -> np.ndarray:
  """The decoded crops of clips (uint8 [h, w, 3] each, clip-major; a clip's frames share a
  shape) -> uint8 [len(frames), size, size, 3]: each resized to size x size, mirrored (after the
  resize, which commutes with it) where its clip's `flips` [clips] bool is set."""
  out = _empty((len(frames), size, size, 3))
  for i, frame in enumerate(frames):
    resize_into(frame, out[i])
    if flips[i // frames_per_clip]:
      cv2.flip(out[i], 1, dst=out[i])
  return out


def test_views(
  short_side: int,
  crop_size: int,
  num_crops: int,
  frames_per_clip: int,
  *frames: np.ndarray,
) -> np.ndarray:
  """The decoded test frames of clips (uint8 [H, W, 3] each, clip-major) -> uint8
  [clips, num_crops, frames_per_clip, crop_size, crop_size, 3] (crop-major per clip): short side
  to `short_side` (skipped when it already is), then the `crop_starts` crops."""
  clips = len(frames) // frames_per_clip
  out = _empty((clips, num_crops, frames_per_clip, crop_size, crop_size, 3))
  for c in range(clips):
    for f in range(frames_per_clip):
      frame = frames[c * frames_per_clip + f]
      h, w = short_side_size(frame.shape[0], frame.shape[1], short_side)
      if (h, w) != frame.shape[:2]:
        resized = np.empty((h, w, 3), np.uint8)
        resize_into(frame, resized)
        frame = resized
      for k, (y, x) in enumerate(crop_starts(h, w, crop_size, num_crops)):
        out[c, k, f] = frame[y : y + crop_size, x : x + crop_size]
  return out
