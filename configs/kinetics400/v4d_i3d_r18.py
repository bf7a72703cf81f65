"""V4D + I3D ResNet-18: V4D's R4D block (x + dense (3,3,1,1) conv over (U, T, H, W)) after block 1
of res3 (128 ch) and of res4 (256 ch), U=4 x T=4 (spec dsanet.md §8).

Command:
  # ImageNet ResNet-18 inflated at start-up, R4D blocks fresh; dataset built at 30 fps
  python main.py --config=configs/kinetics400/v4d_i3d_r18.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet18.pth

Hardware: none given; the DSA recipe is reused. Not yet run with this code base.
Size: 32,762,832 parameters (33.1M with a 1000-way fc, as the paper counts); 58.6 GMACs per view
at U4 x T4 x 224^2.
Paper (table a, Mini-Kinetics-200 setting, 4x10x3): 75.6% top-1, 92.7% top-5.
"""

import ml_collections

from configs.base import IMAGENET_R18, KINETICS_FPS, get_base_config


def get_config() -> ml_collections.ConfigDict:
  c = get_base_config()
  c.model.backbone = "i3d_resnet"
  c.model.depth = 18
  c.model.aggregation = "v4d"
  c.model.insert_freq = (0, (0, 1), (0, 1), 0)  # R4D after blocks with index % 2 == 1
  c.model.inflate_freq = (0, 0, 1, 1)
  c.model.num_segments = 4
  c.model.bn_group_size = 12
  c.data.num_frames = 4
  c.data.frame_interval = 8
  c.data.fps = KINETICS_FPS
  c.init_expected = IMAGENET_R18
  return c
