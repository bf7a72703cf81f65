"""DSA + I3D ResNet-18 (res4/res5 3x3x3) with U=4 snippets x T=4 frames.

Command:
  # ImageNet ResNet-18 inflated at start-up; dataset built at 30 fps
  python main.py --config=configs/kinetics400/dsa_i3d_r18.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet18.pth
(init_from: torchvision's resnet18-f37072fd.pth; the original shipped no resnet18.pth.)

Hardware: none given by the paper; the recipe is the R50 one (the original has no R18 config).
Not yet run with this code base.
Model: DSA at position II of block 1 of res3 and of res4 (2 modules, +144 parameters).
Size: 32,025,696 parameters (32.3M with a 1000-way fc, as the paper counts); 54.9 GMACs per view
at U4 x T4 x 224^2.
Paper (table a, Mini-Kinetics-200 setting, T x U_test x crops = 4x8x3): 77.3% top-1, 93.9% top-5.
"""

import ml_collections

from configs.base import DSA_R18_INSERT_FREQ, IMAGENET_R18, KINETICS_FPS, get_base_config


def get_config() -> ml_collections.ConfigDict:
  c = get_base_config()
  c.model.backbone = "i3d_resnet"
  c.model.depth = 18
  c.model.aggregation = "dsa"
  c.model.insert_freq = DSA_R18_INSERT_FREQ
  c.model.insert_place = "res_2"
  c.model.inflate_freq = (0, 0, 1, 1)
  c.model.num_segments = 4
  c.model.bn_group_size = 12
  c.data.num_frames = 4
  c.data.frame_interval = 8
  c.data.fps = KINETICS_FPS
  c.init_expected = IMAGENET_R18
  return c
