"""DSA + TSM ResNet-50: a 2D ResNet-50 with TSM's temporal shift (1/8 + 1/8 channels, on each
residual branch input, along the video's U*T frames) and DSA inserted as in dsa_i3d_r50.

The original code cannot combine TSM and DSA (spec dsanet.md §3.3); this code base can.

Command:
  # ImageNet ResNet-50, a 2D network: loaded without inflation; dataset at 30 fps
  python main.py --config=configs/kinetics400/dsa_tsm_r50.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet50.pth

Hardware: none given; the DSA R50 recipe is reused. Not yet run with this code base.
Paper (table g): TSM R50 77.4% top-1, DSA+TSM R50 80.4% (Mini-Kinetics-200 setting).
"""

import ml_collections

from configs.base import DSA_R50_INSERT_FREQ, IMAGENET_R50, KINETICS_FPS, get_base_config


def get_config() -> ml_collections.ConfigDict:
  c = get_base_config()
  c.model.backbone = "tsm_resnet"
  c.model.depth = 50
  c.model.aggregation = "dsa"
  c.model.insert_freq = DSA_R50_INSERT_FREQ
  c.model.insert_place = "res_2"
  c.model.inflate_freq = (0, 0, 0, 0)  # a 2D ResNet
  c.model.tsm.shift_div = 8
  c.model.num_segments = 4
  c.model.bn_group_size = 12
  c.data.num_frames = 8
  c.data.frame_interval = 8
  c.data.fps = KINETICS_FPS
  c.init_expected = IMAGENET_R50
  return c
