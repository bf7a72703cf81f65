"""What the data stage needs from a config, as one small frozen value (architecture.md, "Seams").

The trainer, the evaluator, the predictor and the tools resolve the config once with
`from_config(config)` and hand the `DataSpec` down: the tf.data pipeline (`data/pipeline.py`),
`tools/sample_frames`, the predictor's view builder (`train/inference.py`) and the benchmarks read
only its fields, never the config. A renamed config field is fixed here, in `from_config`, alone.

The spec also holds the one definition of input normalisation: batches leave the host as uint8
RGB (0-255), and the jitted steps (train, eval, the predictor) call `DataSpec.model_input` on the
device: `(x - mean) / std` per channel in float32, cast to `dtype`.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections

from dsanet_jax.common.dtypes import parse_dtype


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """The data stage's view of a config; every field is a plain, hashable value."""

  # the dataset (a project builder name or any TFDS name, prepared in data_dir)
  name: str
  data_dir: str | None
  train_split: str
  eval_split: str
  fps: float | None  # the frame rate the recipe assumes (None: native rates)
  # sampling: U snippets of T frames at stride frame_interval
  num_segments: int  # U (the model's snippets per clip)
  num_frames: int  # T
  frame_interval: int  # tau
  # training crop: 'random_resized' | 'random_resized_original' | 'scale_jitter'
  train_crop: str
  crop_size: int
  rrc_scale: tuple[float, float]
  rrc_ratio: tuple[float, float]
  scale_jitter_short_side: tuple[int, int]
  flip: bool
  flip_label_pairs: tuple[tuple[str, str], ...]  # mirror classes swapped on a flipped clip
  # normalisation on the device: (rgb_0_255 - mean) / std, then cast to dtype
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  dtype: str  # 'float32' | 'bfloat16'
  # test views
  short_side: int  # test frames: short side resized to this
  eval_crop_size: int
  eval_num_segments: int  # U_test of the final test
  eval_num_crops: int
  val_num_segments: int  # U_test of periodic validation
  val_num_crops: int
  # batch sizes (global, videos) and seeds
  train_batch_size: int
  eval_batch_size: int
  seed: int
  # tf.data
  shuffle_buffer: int
  num_parallel_calls: int | None  # < 0 or None: AUTOTUNE
  prefetch: int

  @property
  def frames_per_clip(self) -> int:
    """U * T: the frames one training clip reads."""
    return self.num_segments * self.num_frames

  def replace(self, **changes: Any) -> "DataSpec":
    """A copy with `changes` (field=value) applied."""
    return dataclasses.replace(self, **changes)

  def model_input(self, video: Any) -> Any:
    """The model's input from a batch's video, on the device (inside a jitted step).

    uint8 [..., 3] RGB on the 0-255 scale -> `(x - mean) / std` per channel, computed in float32
    and cast to `dtype`; a floating-point video is taken as already normalised (a converted
    `--input_npy`, the exported model's float32 input) and only cast to `dtype`.
    """
    import jax.numpy as jnp

    dtype = jnp.dtype(parse_dtype(self.dtype, key="data.dtype"))
    if video.dtype == jnp.uint8:
      mean = jnp.asarray(self.mean, jnp.float32)
      inv_std = 1.0 / jnp.asarray(self.std, jnp.float32)
      return ((video.astype(jnp.float32) - mean) * inv_std).astype(dtype)
    if not jnp.issubdtype(video.dtype, jnp.floating):
      raise ValueError(
        f"video dtype {video.dtype}: expected uint8 (0-255) or floating (normalised)"
      )
    return video.astype(dtype)


def input_fn(spec: DataSpec | None) -> Callable[[Any], Any]:
  """The steps' video -> model input: `spec.model_input`; without a spec, the identity on a
  video that already arrives normalised (floating point), and an error on any other dtype."""
  if spec is not None:
    return spec.model_input

  def normalised(video: Any) -> Any:
    import jax.numpy as jnp

    if not jnp.issubdtype(video.dtype, jnp.floating):
      raise ValueError(
        f"a {video.dtype} video needs the DataSpec to be normalised on the device "
        "(pass data=data_spec.from_config(config))"
      )
    return video

  return normalised


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
  return tuple(tuple(p) for p in (value or ()))


def from_config(config: ml_collections.ConfigDict) -> DataSpec:
  """Resolves the data stage's spec from a full experiment config (configs/base.py's layout).

  Raises ValueError naming the key when `data.dtype` is not a known dtype.
  """
  data, ev = config.data, config.eval
  parse_dtype(data.dtype, key="data.dtype")
  npc = data.num_parallel_calls
  return DataSpec(
    name=data.name,
    data_dir=data.data_dir,
    train_split=data.train_split,
    eval_split=data.eval_split,
    fps=None if data.get("fps") is None else float(data.fps),
    num_segments=int(config.model.num_segments),
    num_frames=int(data.num_frames),
    frame_interval=int(data.frame_interval),
    train_crop=data.train_crop,
    crop_size=int(data.crop_size),
    rrc_scale=tuple(float(x) for x in data.rrc_scale),
    rrc_ratio=tuple(float(x) for x in data.rrc_ratio),
    scale_jitter_short_side=tuple(int(x) for x in data.scale_jitter_short_side),
    flip=bool(data.flip),
    flip_label_pairs=_pairs(data.flip_label_pairs),
    mean=tuple(float(x) for x in data.mean),
    std=tuple(float(x) for x in data.std),
    dtype=data.dtype,
    short_side=int(ev.short_side),
    eval_crop_size=int(ev.crop_size),
    eval_num_segments=int(ev.num_segments),
    eval_num_crops=int(ev.num_crops),
    val_num_segments=int(ev.val_num_segments),
    val_num_crops=int(ev.val_num_crops),
    train_batch_size=int(config.train.global_batch_size),
    eval_batch_size=int(ev.batch_size),
    seed=int(config.seed),
    shuffle_buffer=int(data.shuffle_buffer),
    num_parallel_calls=None if npc is None else int(npc),
    prefetch=int(data.prefetch),
  )
