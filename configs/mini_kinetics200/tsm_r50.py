"""TSM ResNet-50 and DSA + TSM ResNet-50 on Mini-Kinetics-200, U=4 x T=8 (paper table g).

Variants: `--config=configs/mini_kinetics200/tsm_r50.py` (TSM) and
`--config=configs/mini_kinetics200/tsm_r50.py:dsa` (DSA + TSM, DSA as in dsa_i3d_r50).

Command:
  python main.py --config=configs/mini_kinetics200/tsm_r50.py:dsa --workdir=WORKDIR \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet50.pth

Hardware and recipe: as mini_kinetics200/dsa_i3d_r50.py. Not yet run with this code base.
Paper: TSM R50 77.4% / 93.4%, DSA+TSM R50 80.4% / 95.0% top-1 / top-5.
"""

import ml_collections

from configs.kinetics400 import dsa_tsm_r50 as k400


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in (None, "", "dsa"):
    raise ValueError(f"configs/mini_kinetics200/tsm_r50.py:{arg}: the variant is '' or 'dsa'")
  c = k400.get_config()
  c.data.name = "kinetics400/mini200"
  c.model.num_classes = 200
  if arg != "dsa":
    c.model.aggregation = "tsn"
    c.model.insert_freq = (0, 0, 0, 0)
  return c
