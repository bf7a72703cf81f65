"""DSA + I3D ResNet-50 on Something-Something V2 (174 classes), U=4 x T=8, no horizontal flip.

Command:
  python main.py --config=configs/something_something_v2/dsa_i3d_r50.py --workdir=WORKDIR
  (dataset: builder `something_something_v2`, native 12 fps, short side 256; docs/data.md)

Hardware: the original K400 recipe (8 GPUs x 12 videos = 96 per step, per-12-video BatchNorm,
100 epochs) with flipping off; e.g. a TPU v4-8 at global batch 96. Not yet run with this code base.
Flip: off, because SSv2 has left/right classes; to flip with label swapping set
`data.flip=True` and `data.flip_label_pairs` to the pairs of mirror-image class names.
Test: 8 x 8 x 3 views.
Paper: no SSv2 result (SSv1: 51.8% top-1, configs/something_something_v1/dsa_i3d_r50.py).
"""

import ml_collections

from configs.kinetics400 import dsa_i3d_r50 as k400


def get_config() -> ml_collections.ConfigDict:
  c = k400.get_config()
  c.data.name = "something_something_v2"
  c.model.num_classes = 174
  c.data.flip = False
  c.data.train_crop = "scale_jitter"
  return c
