"""DSA + I3D ResNet-18 on Mini-Kinetics-200, U=4 snippets x T=4 frames (paper tables a, Mini-K).

Command:
  python main.py --config=configs/mini_kinetics200/dsa_i3d_r18.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet18.pth
  (dataset: python -m dsanet_jax.data.prepare, builder `kinetics400/mini200`; docs/data.md)

Hardware: the paper gives none for Mini-K; the recipe is the original's only one (K400 R50: SGD
Nesterov 0.015 at 96 videos, 100 epochs, steps at 50/75/90, 10 warm-up epochs, clip 40, per-12-video
BatchNorm), e.g. 8 GPUs or a TPU v4-8 with global batch 96. Not yet run with this code base.
Test: 4 x 8 x 3 views (T x U_test x crops: two interleaved passes of U=4, three 256^2 crops).
Paper: 77.3% top-1, 93.9% top-5 (32.3M parameters with a 1000-way fc).
"""

import ml_collections

from configs.kinetics400 import dsa_i3d_r18 as k400


def get_config() -> ml_collections.ConfigDict:
  c = k400.get_config()
  c.data.name = "kinetics400/mini200"
  c.model.num_classes = 200
  c.eval.num_segments = 8
  c.eval.num_crops = 3
  return c
