"""SENet + I3D ResNet-18 on Mini-Kinetics-200: SE at DSA's place, U=4 x T=4 (paper table h).

Command:
  python main.py --config=configs/mini_kinetics200/se_i3d_r18.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet18.pth

Hardware and recipe: as mini_kinetics200/dsa_i3d_r18.py. Not yet run with this code base.
Paper: 73.8% top-1 (I3D R18 72.2%, DSA+I3D R18 77.3%).
"""

import ml_collections

from configs.kinetics400 import se_i3d_r18 as k400


def get_config() -> ml_collections.ConfigDict:
  c = k400.get_config()
  c.data.name = "kinetics400/mini200"
  c.model.num_classes = 200
  return c
