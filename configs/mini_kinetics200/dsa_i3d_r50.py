"""DSA + I3D ResNet-50 on Mini-Kinetics-200, U=4 x T=4 (paper Mini-K table; ablations b-h).

Command:
  python main.py --config=configs/mini_kinetics200/dsa_i3d_r50.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet50.pth

Hardware: the original recipe (configs/kinetics400/dsa_i3d_r50.py: 8 GPUs x 12 videos, 100 epochs),
e.g. a TPU v4-8 with global batch 96 and bn_group_size=12. Not yet run with this code base.
Model: DSA at position II of res3 blocks 1, 3 and res4 blocks 1, 3, 5, alpha=2, beta=1/8.
Test: 4 x 8 x 3 views.
Paper: 81.8% top-1, 95.4% top-5 (table f row res{3,4}, table g, Mini-K table).
"""

import ml_collections

from configs.kinetics400 import dsa_i3d_r50 as k400


def get_config() -> ml_collections.ConfigDict:
  c = k400.get_config()
  c.data.name = "kinetics400/mini200"
  c.model.num_classes = 200
  c.data.num_frames = 4
  return c
