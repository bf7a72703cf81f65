"""DSA + I3D ResNet-50 on Something-Something V1 (174 classes), U=4 snippets x T=8 consecutive
frames, no horizontal flip.

Command:
  # ImageNet ResNet-50 inflated at start-up, as the original's K400 recipe
  python -m dsanet_jax.data.prepare --dataset=something_something_v1 --manual_dir=/data/ssv1 \
    --data_dir=/data/tfds
  python main.py --config=configs/something_something_v1/dsa_i3d_r50.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet50.pth
(init_from: torchvision's resnet50-0676ba61.pth or the original's pretrained/resnet50.pth;
`--config.init_from=scratch` trains from random weights.) Variant `:i3d` = the I3D R50 baseline.

Sampling (chosen here; the paper and the original give none for SS): SSv1 videos are 12 fps JPEG
frames, about 16-80 frames long (data.fps=None: the builder keeps the released frames as they are).
The K400 recipe (T=8 at stride 8, a 57-frame span) starts every snippet at frame 0 in videos of up
to 64 frames (train and test), so the U snippets would be one clip. Here T=8 at stride 1 (an
8-frame span, 0.67 s): the K400 training formula then draws U=4 distinct snippets, one per quarter
of the video, for any video of at least 11 frames, and the 8 test snippets are distinct segment
centres for videos of at least 15 frames; over 16-80 frames the training snippets together span
at least half the video, and so do the test snippets (tests/test_recipes.py; `python -m
dsanet_jax.tools.sample_frames --config=THIS --num_video_frames=N`). Stride 2 would repeat test
snippets in videos under 23 frames.
Crop: the K400 recipe's RandomResizedCrop (data.train_crop='random_resized'); scale jitter is
`--config.data.train_crop=scale_jitter`.
Flip: off (left/right classes such as "pushing something from left to right").
Hardware and recipe: the original K400 recipe (SGD Nesterov 0.015 at 96 videos, 100 epochs,
per-12-video BatchNorm; 8 GPUs x 12 videos or a TPU v4-8). Not yet run with this code base.
Test: 8 x 8 x 3 views (U_test=8 as two interleaved passes of U=4, three 256^2 crops).
Paper: 51.8% top-1 (I3D R50 "our impl." 48.7%, V4D+I3D R50 50.4%).
"""

import ml_collections

from configs.kinetics400 import dsa_i3d_r50 as k400


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = k400.get_config()
  c.data.name = "something_something_v1"
  c.model.num_classes = 174
  c.data.flip = False  # "pushing left to right" etc.: a flipped clip changes its class
  c.data.fps = None  # the released 12 fps frames, stored as they are
  c.data.num_frames = 8
  c.data.frame_interval = 1  # module docstring: distinct snippets over 16-80 frames
  c.data.train_crop = "random_resized"
  c.eval.num_segments = 8
  c.eval.num_crops = 3
  if arg == "i3d":  # the paper's I3D R50 baseline (48.7%)
    c.model.aggregation = "tsn"
    c.model.insert_freq = (0, 0, 0, 0)
  elif arg:
    raise ValueError(f"configs/something_something_v1/dsa_i3d_r50.py:{arg}: variant '' or 'i3d'")
  return c
