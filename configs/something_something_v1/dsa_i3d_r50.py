"""DSA + I3D ResNet-50 on Something-Something V1 (174 classes), U=4 x T=8, no horizontal flip.

Command:
  python main.py --config=configs/something_something_v1/dsa_i3d_r50.py --workdir=WORKDIR
  (dataset: builder `something_something_v1`, frames at 12 fps; docs/data.md)

Hardware: the paper gives no SSv1 recipe; this reuses the original K400 recipe (8 GPUs x 12
videos, 100 epochs) with flipping off (left/right classes). Not yet run with this code base.
Test: 8 x 8 x 3 views.
Paper: 51.8% top-1 (I3D R50 "our impl." 48.7%, V4D+I3D R50 50.4%).
"""

import ml_collections

from configs.kinetics400 import dsa_i3d_r50 as k400


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = k400.get_config()
  c.data.name = "something_something_v1"
  c.model.num_classes = 174
  c.data.flip = False  # "pushing left to right" etc.: a flipped clip changes its class
  c.data.train_crop = "scale_jitter"
  if arg == "i3d":  # the paper's I3D R50 baseline (48.7%)
    c.model.aggregation = "tsn"
    c.model.insert_freq = (0, 0, 0, 0)
  elif arg:
    raise ValueError(f"configs/something_something_v1/dsa_i3d_r50.py:{arg}: variant '' or 'i3d'")
  return c
