"""DSA + I3D ResNet-50 on Kinetics-400: the original's only recipe (spec dsanet.md §5).

Command:
  # ImageNet ResNet-50 inflated at start-up, as the original; dataset built at 30 fps
  python -m dsanet_jax.data.prepare --dataset=kinetics400 --manual_dir=/data/k400 \
    --data_dir=/data/tfds
  python main.py --config=configs/kinetics400/dsa_i3d_r50.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet50.pth
(init_from: torchvision's resnet50-0676ba61.pth or the original's pretrained/resnet50.pth;
`--config.init_from=scratch` trains from random weights instead.)

Hardware: the original trained on 8 GPUs x 12 videos (96 per step, per-GPU BatchNorm over 12
videos = `bn_group_size=12` here), 100 epochs. Not yet run with this code base.
Model: DSA at position II ('res_2') of res3 blocks 1, 3 and res4 blocks 1, 3, 5 (5 modules,
+360 parameters), alpha=2, beta=1/8, U=4 snippets x T=8 frames (stride 8) at 224^2.
Size: 32,454,456 parameters; 83.5 GMACs per view at U4 x T4 x 224^2 (167.0 at T8).
Data: frames at 30 fps (data.fps=30, as the original extracted them), U=4 snippets of T=8 frames
at stride 8 (a 57-frame span, 1.9 s); test 8 x 8 x 3 (U_test=8 as two interleaved passes of U=4,
three 256^2 crops), grouped per crop (eval.grouping='per_crop'; 'original' = the original's mixing).
Paper (K400 val, T x U_test x crops): 77.7% top-1 at 4x8x3 (`--config.data.num_frames=4`), 78.2% at
8x8x3 (167.7 GFLOPs x 6 views); the (4+8)x8x3 79.0% row averages the two runs' scores
(python -m dsanet_jax.tools.fuse_scores RUN_T4 RUN_T8).
"""

import ml_collections

from configs.base import DSA_R50_INSERT_FREQ, IMAGENET_R50, KINETICS_FPS, get_base_config


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
  c.data.fps = KINETICS_FPS
  c.init_expected = IMAGENET_R50
  c.train.global_batch_size = 96
  c.train.base_lr = 0.015
  c.train.num_epochs = 100.0
  c.train.lr_decay_epochs = (50, 75, 90)
  return c
