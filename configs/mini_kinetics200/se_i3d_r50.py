"""SENet + I3D ResNet-50 on Mini-Kinetics-200: SE at DSA's places of dsa_i3d_r50 (paper table h).

Command:
  python main.py --config=configs/mini_kinetics200/se_i3d_r50.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet50.pth

Hardware and recipe: as mini_kinetics200/dsa_i3d_r50.py. Not yet run with this code base.
Paper: 78.5% top-1 (I3D R50 78.0%, DSA+I3D R50 81.8%).
"""

import ml_collections

from configs.mini_kinetics200 import dsa_i3d_r50 as dsa


def get_config() -> ml_collections.ConfigDict:
  c = dsa.get_config()
  c.model.aggregation = "se"
  c.model.se.reduction = 16
  return c
