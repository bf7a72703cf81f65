"""TSN + I3D ResNet-18 on Mini-Kinetics-200: dsa_i3d_r18 without DSA (paper table a, row 3).

Command:
  python main.py --config=configs/mini_kinetics200/tsn_i3d_r18.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet18.pth

Hardware and recipe: as mini_kinetics200/dsa_i3d_r18.py. Not yet run with this code base.
Test: 4 x 8 x 3 here (U_test must be a multiple of U=4); the paper tested 4 x 10 x 3.
Paper: 73.0% top-1, 91.3% top-5 (DSA+I3D R18: 77.3%).
"""

import ml_collections

from configs.mini_kinetics200 import dsa_i3d_r18 as dsa


def get_config() -> ml_collections.ConfigDict:
  c = dsa.get_config()
  c.model.aggregation = "tsn"
  c.model.insert_freq = (0, 0, 0, 0)
  return c
