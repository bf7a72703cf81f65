"""TSN + I3D ResNet-50 on Kinetics-400: the DSA recipe without DSA (plain I3D per snippet, logits
averaged over the U=4 snippets).

Command:
  # ImageNet ResNet-50 inflated at start-up; dataset built at 30 fps
  python main.py --config=configs/kinetics400/i3d_r50.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet50.pth

Hardware: as dsa_i3d_r50 (8 GPUs x 12 videos in the original). Not yet run with this code base.
Size: 32,454,096 parameters; 83.5 GMACs per view at U4 x T4 x 224^2.
Paper: I3D R50 78.0% top-1 (ablation tables g/h, the Mini-Kinetics setting); TSN+I3D R50 at
4 x 4 x 224^2: 83.8 GFLOPs (table i).
"""

import ml_collections

from configs.base import IMAGENET_R50, KINETICS_FPS, get_base_config


def get_config() -> ml_collections.ConfigDict:
  c = get_base_config()
  c.model.backbone = "i3d_resnet"
  c.model.depth = 50
  c.model.aggregation = "tsn"
  c.model.insert_freq = (0, 0, 0, 0)
  c.model.inflate_freq = (0, 0, 1, 1)
  c.model.num_segments = 4
  c.model.bn_group_size = 12
  c.data.num_frames = 8
  c.data.frame_interval = 8
  c.data.fps = KINETICS_FPS
  c.init_expected = IMAGENET_R50
  return c
