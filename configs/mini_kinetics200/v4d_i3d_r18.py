"""V4D + I3D ResNet-18 on Mini-Kinetics-200, U=4 x T=4 (paper table a, the main baseline).

Command:
  python main.py --config=configs/mini_kinetics200/v4d_i3d_r18.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet18.pth

Hardware and recipe: as mini_kinetics200/dsa_i3d_r18.py (V4D's own Mini-K recipe: lr 0.01,
steps 55/80/100, 110 epochs, batch 48). Not yet run with this code base.
Test: 4 x 8 x 3 here; the paper quotes V4D at 4 x 10 x 3.
Paper: 75.6% top-1, 92.7% top-5 (33.1M parameters).
"""

import ml_collections

from configs.kinetics400 import v4d_i3d_r18 as k400


def get_config() -> ml_collections.ConfigDict:
  c = k400.get_config()
  c.data.name = "kinetics400/mini200"
  c.model.num_classes = 200
  return c
