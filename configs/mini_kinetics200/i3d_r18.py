"""Clip-level I3D ResNet-18 on Mini-Kinetics-200: one snippet per video (U=1), T=4 or 16 frames.

Paper table a, rows 1-2. Variants: `--config=configs/mini_kinetics200/i3d_r18.py` (T=4) and
`--config=configs/mini_kinetics200/i3d_r18.py:16` (T=16).

Command:
  python main.py --config=configs/mini_kinetics200/i3d_r18.py --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet18.pth

Hardware and recipe: as mini_kinetics200/dsa_i3d_r18.py. Not yet run with this code base.
Test: T x 10 x 3 (U_test=10 single-snippet passes x three 256^2 crops), as the paper.
Paper: 72.2% / 91.2% (4x1) and 73.4% / 91.1% (16x1) top-1 / top-5.
"""

import ml_collections

from configs.mini_kinetics200 import dsa_i3d_r18 as dsa


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = dsa.get_config()
  c.model.aggregation = "tsn"
  c.model.insert_freq = (0, 0, 0, 0)
  c.model.num_segments = 1
  c.data.num_frames = int(arg or 4)
  c.eval.num_segments = 10
  c.eval.val_num_segments = 1
  return c
