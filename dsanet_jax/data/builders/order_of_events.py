"""`order_of_events`: the embedded default dataset (synthetic, deterministic, no downloads).

What it tests. Every video shows the same four events, one after another, each filling about a
quarter of the video (with short gaps between them, below):
  square: a red filled square      disc:  a green filled disc
  bar:    a blue horizontal bar    cross: a yellow plus sign
A class is an ORDER of the four events. The default classes are the 4 cyclic rotations of
(square, disc, bar, cross), so that, over the classes, every event occurs at every position
exactly once (a Latin square). A model that classifies each snippet on its own and averages the
predictions (TSN: it sees one event and not where in the video it is) therefore sees the same
evidence for every class and stays at chance (25%); a model that mixes neighbouring snippets and
knows the video's ends (DSA with U=4) can tell the orders apart.

Gaps close the leaks. A snippet that saw two events would show a transition (e.g.
square->disc), and the transitions differ between classes (ABCD has A->B, B->C, C->D; BCDA lacks
A->B), so TSN could learn the order from boundary snippets. So every event is preceded and followed
by 3 frames of background only (also at the start and the end of the video, otherwise "A then
nothing" would give away that A comes last). A snippet spanning at most 4 frames
(T * frame_interval <= 4, as in configs/default.py) therefore shows one event, whole or with some
blank frames before or after it, and the same such snippets occur in every class: TSN gets the same
evidence whatever the class. Longer snippets (span >= 5) can see two events; raise `gap_frames`
for them.

Nuisance per video (so it is not memorisable): a random dark background colour with per-frame
pixel noise, per-event colour jitter, shape size and position, a slow random drift, random event
lengths (each 75-125% of a quarter of the non-gap frames) and 40-56 frames per video. Rendered at
short_side x 4/3 short_side (default 32 x 43) and stored through the same path as real videos
(`decode.encode_frames`: resize to `short_side`, here a no-op, then one JPEG per frame) at a
nominal 12 fps. Splits: 512 train and 128 validation videos, classes exactly balanced, every
video a function of (seed, split, index) only. Builds in about 10 s on 2 cores.
"""

import dataclasses
import functools
import itertools
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from dsanet_jax.data.builders import base, video

EVENT_NAMES = ("square", "disc", "bar", "cross")
EVENT_COLOURS = ((220, 40, 40), (40, 200, 60), (50, 80, 230), (235, 220, 40))
ROTATIONS = tuple(tuple((s + i) % 4 for i in range(4)) for s in range(4))
ALL_ORDERS = tuple(itertools.permutations(range(4)))
_SPLIT_CODE = {"train": 0, "validation": 1}


@dataclasses.dataclass
class OrderOfEventsConfig(video.VideoBuilderConfig):
  """Shape of the synthetic set (module docstring); `orderings` are the classes."""

  short_side: int | None = 32
  num_train: int = 512
  num_validation: int = 128
  seed: int = 0
  min_frames: int = 40
  max_frames: int = 56
  gap_frames: tuple[int, int] = (3, 3)  # min, max background-only frames between two events
  fps: float = 12.0
  noise: int = 6
  orderings: tuple[tuple[int, ...], ...] = ROTATIONS


def class_name(order: tuple[int, ...]) -> str:
  return "-".join(EVENT_NAMES[e] for e in order)


def event_lengths(rng: np.random.Generator, num_frames: int, num_events: int) -> np.ndarray:
  """Frames per event: each 75-125% of num_frames / num_events, summing to num_frames."""
  w = 1.0 + rng.uniform(-0.25, 0.25, num_events)
  bounds = np.round(np.cumsum(w) / w.sum() * num_frames).astype(int)
  return np.diff(np.concatenate([[0], bounds]))


def _shape_mask(event: int, dy: np.ndarray, dx: np.ndarray, size: float) -> np.ndarray:
  r = size / 2
  if event == 0:  # square
    return (np.abs(dx) <= r) & (np.abs(dy) <= r)
  if event == 1:  # disc
    return dx**2 + dy**2 <= r**2
  if event == 2:  # horizontal bar
    return (np.abs(dx) <= 1.4 * r) & (np.abs(dy) <= 0.45 * r)
  arm = max(1.5, r / 3)  # plus sign
  return ((np.abs(dx) <= r) & (np.abs(dy) <= arm)) | ((np.abs(dy) <= r) & (np.abs(dx) <= arm))


def render_video_and_events(
  cfg: OrderOfEventsConfig, split: str, index: int, label: int
) -> tuple[np.ndarray, np.ndarray, float]:
  """One video of class `label`: uint8 frames [F, H, W, 3] (H = short_side, W = 4/3 H), the
  event shown in each frame, int32 [F] (-1 = a gap), and the fps."""
  rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split], index])
  h = cfg.short_side or 32  # rendered at the stored size: the resize in encode_frames is a no-op
  w = round(h * 4 / 3)
  num_frames = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
  order = cfg.orderings[label]
  # Gaps before every event and after the last one (see the module docstring).
  gaps = rng.integers(cfg.gap_frames[0], cfg.gap_frames[1] + 1, len(order) + 1)
  lengths = event_lengths(rng, num_frames - int(gaps.sum()), len(order))
  background = rng.integers(20, 91, 3)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  frames = np.empty((num_frames, h, w, 3), np.uint8)
  frames[:] = background.astype(np.uint8)
  events = np.full((num_frames,), -1, np.int32)
  t = int(gaps[0])
  for i, (event, length) in enumerate(zip(order, lengths)):
    colour = np.clip(np.asarray(EVENT_COLOURS[event]) + rng.integers(-25, 26, 3), 0, 255)
    size = rng.uniform(0.3, 0.42) * min(h, w)
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    vy, vx = rng.uniform(-0.5, 0.5, 2)
    k = np.arange(length, dtype=np.float32)[:, None, None]
    mask = _shape_mask(event, yy - (cy + vy * k), xx - (cx + vx * k), size)  # [length, h, w]
    frames[t : t + length][mask] = colour.astype(np.uint8)
    events[t : t + length] = event
    t += length + int(gaps[i + 1])
  # Grey pixel noise, uniform in [-2*noise, 2*noise] (cheaper than Gaussian, same role).
  noise = rng.integers(-2 * cfg.noise, 2 * cfg.noise + 1, (num_frames, h, w, 1), dtype=np.int16)
  return np.clip(frames + noise, 0, 255).astype(np.uint8), events, cfg.fps


def render_video(
  cfg: OrderOfEventsConfig, split: str, index: int, label: int
) -> tuple[np.ndarray, float]:
  """`render_video_and_events` without the events: (frames, fps)."""
  frames, _, fps = render_video_and_events(cfg, split, index, label)
  return frames, fps


def split_labels(cfg: OrderOfEventsConfig, split: str, num: int) -> np.ndarray:
  """Exactly balanced labels in a fixed random order."""
  rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split], 1 << 30])
  return rng.permutation(np.arange(num) % len(cfg.orderings))


class OrderOfEvents(base.VideoDatasetBuilder):
  """Synthetic videos whose classes differ only in the order of four events (see module doc)."""

  name = "order_of_events"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {
    "1.0.0": "4 events back to back, 24-40 frames.",
    "1.1.0": "3 blank frames around every event (no order leak to TSN), 40-56 frames.",
  }
  BUILDER_CONFIGS: ClassVar[list[OrderOfEventsConfig]] = [
    OrderOfEventsConfig(name="default", description="4 rotations of 4 events, 32px short side."),
    OrderOfEventsConfig(
      name="all_orders",
      description="All 24 orders of the 4 events (harder; TSN still at chance).",
      orderings=ALL_ORDERS,
      num_train=2400,
      num_validation=480,
    ),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _class_names(self) -> list[str]:
    return [class_name(o) for o in self.builder_config.orderings]

  def _description(self) -> str:
    return __doc__

  def target_fps(self) -> float:
    return float(self.builder_config.fps)  # every video is rendered at this rate

  def _list_items(self, manual_dir: str | None) -> dict[str, list[video.VideoItem]]:
    del manual_dir  # nothing to download
    cfg = self.builder_config
    sizes = {"train": cfg.num_train, "validation": cfg.num_validation}
    return {split: self._items(split, n) for split, n in sizes.items()}

  def _items(self, split: str, num: int) -> list[video.VideoItem]:
    cfg = self.builder_config
    return [
      video.VideoItem(
        video_id=f"{split}_{i:05d}",
        label=int(label),
        render=functools.partial(render_video, cfg, split, i, int(label)),
      )
      for i, label in enumerate(split_labels(cfg, split, num))
    ]
