"""DSA + I3D ResNet-50 on Kinetics-400: the original's only recipe (spec dsanet.md §5).

Command:
  python main.py --config=configs/kinetics400/dsa_i3d_r50.py --workdir=WORKDIR

Hardware: the original trained on 8 GPUs x 12 videos (96 per step, per-GPU BatchNorm over 12
videos = `bn_group_size=12` here), 100 epochs. Not yet run with this code base.
Model: DSA at position II ('res_2') of res3 blocks 1, 3 and res4 blocks 1, 3, 5 (5 modules,
+360 parameters), alpha=2, beta=1/8, U=4 snippets x T=8 frames (stride 8) at 224^2.
Size: 32,454,456 parameters; 83.5 GMACs per view at U4 x T4 x 224^2 (167.0 at T8).
Paper (K400 val, T x U_test x crops): 77.7% top-1 at 4x8x3, 78.2% at 8x8x3 (167.7 GFLOPs x 6 views).
"""

import ml_collections

from configs.base import DSA_R50_INSERT_FREQ, get_base_config


def get_config() -> ml_collections.ConfigDict:
  c = get_base_config()
  c.model.backbone = "i3d_resnet"
  c.model.depth = 50
  c.model.aggregation = "dsa"
  c.model.insert_freq = DSA_R50_INSERT_FREQ
  c.model.insert_place = "res_2"
  c.model.inflate_freq = (0, 0, 1, 1)
  c.model.inflate_style = "3x1x1"
  c.model.num_segments = 4
  c.model.num_classes = 400
  c.model.bn_group_size = 12
  c.data.num_frames = 8
  c.data.frame_interval = 8
  c.train.global_batch_size = 96
  c.train.base_lr = 0.015
  c.train.num_epochs = 100.0
  c.train.lr_decay_epochs = (50, 75, 90)
  return c
