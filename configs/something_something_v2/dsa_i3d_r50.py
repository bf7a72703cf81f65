"""DSA + I3D ResNet-50 on Something-Something V2 (174 classes), U=4 snippets x T=8 consecutive
frames, no horizontal flip.

Command:
  # ImageNet ResNet-50 inflated at start-up, as the original's K400 recipe
  python -m dsanet_jax.data.prepare --dataset=something_something_v2 --manual_dir=/data/ssv2 \
    --data_dir=/data/tfds
  python main.py --config=configs/something_something_v2/dsa_i3d_r50.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet50.pth
(init_from: torchvision's resnet50-0676ba61.pth or the original's pretrained/resnet50.pth;
`--config.init_from=scratch` trains from random weights.)

Sampling: as configs/something_something_v1/dsa_i3d_r50.py (its docstring gives the reasons):
T=8 at stride 1, U=4 training snippets, 8 test snippets; distinct and covering at least half of
every video of 16-80 frames. SSv2's webm videos are 12 fps; the builder keeps their native rate
(data.fps=None).
Crop: the K400 recipe's RandomResizedCrop; scale jitter is `--config.data.train_crop=scale_jitter`.
Flip: off, because SSv2 has left/right classes; to flip with label swapping set
`data.flip=True` and `data.flip_label_pairs` to the pairs of mirror-image class names.
Hardware: the original K400 recipe (8 GPUs x 12 videos = 96 per step, per-12-video BatchNorm,
100 epochs); e.g. a TPU v4-8 at global batch 96. Not yet run with this code base.
Test: 8 x 8 x 3 views.
Paper: no SSv2 result (SSv1: 51.8% top-1, configs/something_something_v1/dsa_i3d_r50.py).
"""

import ml_collections

from configs.something_something_v1 import dsa_i3d_r50 as ssv1


def get_config() -> ml_collections.ConfigDict:
  c = ssv1.get_config()
  c.data.name = "something_something_v2"
  return c
