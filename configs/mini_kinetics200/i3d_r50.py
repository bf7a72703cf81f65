"""I3D ResNet-50 (TSN over U=4 x T=4, no DSA) on Mini-Kinetics-200 (paper tables g and h).

Command:
  python main.py --config=configs/mini_kinetics200/i3d_r50.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet50.pth

Hardware and recipe: as mini_kinetics200/dsa_i3d_r50.py. Not yet run with this code base.
Paper: 78.0% top-1, 93.9% top-5 (DSA+I3D R50: 81.8%).
"""

import ml_collections

from configs.kinetics400 import i3d_r50 as k400


def get_config() -> ml_collections.ConfigDict:
  c = k400.get_config()
  c.data.name = "kinetics400/mini200"
  c.model.num_classes = 200
  c.data.num_frames = 4
  return c
