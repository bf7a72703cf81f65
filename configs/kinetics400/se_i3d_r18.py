"""SENet + I3D ResNet-18: an SE module (reduction 16) at DSA's place (position II of block 1 of
res3 and res4), U=4 x T=4.

Command:
  # ImageNet ResNet-18 inflated at start-up; dataset built at 30 fps
  python main.py --config=configs/kinetics400/se_i3d_r18.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet18.pth

Hardware: none given; the DSA recipe is reused. Not yet run with this code base.
Paper (table h, Mini-Kinetics-200 setting): SENet+I3D R18 73.8% top-1 (I3D 72.2, DSA+I3D 77.3).
"""

import ml_collections

from configs.base import DSA_R18_INSERT_FREQ, IMAGENET_R18, KINETICS_FPS, get_base_config


def get_config() -> ml_collections.ConfigDict:
  c = get_base_config()
  c.model.backbone = "i3d_resnet"
  c.model.depth = 18
  c.model.aggregation = "se"
  c.model.insert_freq = DSA_R18_INSERT_FREQ
  c.model.insert_place = "res_2"
  c.model.se.reduction = 16
  c.model.inflate_freq = (0, 0, 1, 1)
  c.model.num_segments = 4
  c.model.bn_group_size = 12
  c.data.num_frames = 4
  c.data.frame_interval = 8
  c.data.fps = KINETICS_FPS
  c.init_expected = IMAGENET_R18
  return c
