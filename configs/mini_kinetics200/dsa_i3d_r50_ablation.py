"""The DSA ablation rows of the paper (tables b-f): DSA + I3D R50 on Mini-Kinetics-200, U=4 x T=4.

One config, one row per argument (`--config=configs/mini_kinetics200/dsa_i3d_r50_ablation.py:ROW`):

  table b, position (res5, alpha 2, beta 1):   pos=I 81.4 | pos=II 81.5 | pos=III 80.8
                                               | pos=IV 81.4
  table c, alpha (pos II, beta 1, res5):       alpha=1 81.0 | alpha=2 81.5 | alpha=4 81.2
                                               | alpha=8 81.3
  table d, stage (pos II, alpha 2, beta 1):    stage=res2 81.4 | stage=res3 81.3 | stage=res4 81.3
                                               | stage=res5 81.5
  table e, beta (pos II, alpha 2, res5):       beta=1 81.5 | beta=1/2 81.7 | beta=1/4 81.6
                                               | beta=1/8 81.5
  table f, blocks (pos II, alpha 2, beta 1/8): blocks=res5 81.5 (1) | blocks=res45 81.5 (4)
                                               | blocks=res34 81.8 (5) | blocks=res23 81.4 (3)

(top-1 %, 4 x 8 x 3 views.) In a stage, DSA goes after the odd-numbered blocks (1, 3, 5), as the
original's insertion map; one stage alone (tables b-e) puts it in that stage's blocks 1, 3, ...

Command:
  python main.py --config=configs/mini_kinetics200/dsa_i3d_r50_ablation.py:pos=III --workdir=W \
    --config.data.data_dir=/data/tfds --config.init_from=/path/resnet50.pth

Hardware and recipe: as mini_kinetics200/dsa_i3d_r50.py. Not yet run with this code base.
"""

import ml_collections

from configs.mini_kinetics200 import dsa_i3d_r50 as dsa

_BLOCKS = {"res2": 3, "res3": 4, "res4": 6, "res5": 3}  # ResNet-50 blocks per stage
_POS = {"I": "res_1", "II": "res_2", "III": "res_3", "IV": "res_4"}
_BETA = {"1": 1.0, "1/2": 0.5, "1/4": 0.25, "1/8": 0.125}
_GROUPS = {
  "res5": ("res5",),
  "res45": ("res4", "res5"),
  "res34": ("res3", "res4"),
  "res23": ("res2", "res3"),
}


def _insert_freq(stages: tuple[str, ...]) -> tuple:
  return tuple(tuple(b % 2 for b in range(n)) if s in stages else 0 for s, n in _BLOCKS.items())


def get_config(arg: str = "pos=II") -> ml_collections.ConfigDict:
  key, _, value = (arg or "pos=II").partition("=")
  c = dsa.get_config()
  c.model.insert_place, c.model.dsa.alpha, c.model.dsa.beta = "res_2", 2, 1.0
  stages = ("res5",)
  if key == "pos" and value in _POS:
    c.model.insert_place = _POS[value]
  elif key == "alpha" and value in ("1", "2", "4", "8"):
    c.model.dsa.alpha = int(value)
  elif key == "stage" and value in _BLOCKS:
    stages = (value,)
  elif key == "beta" and value in _BETA:
    c.model.dsa.beta = _BETA[value]
  elif key == "blocks" and value in _GROUPS:
    stages = _GROUPS[value]
    c.model.dsa.beta = 0.125
  else:
    raise ValueError(
      f"configs/mini_kinetics200/dsa_i3d_r50_ablation.py:{arg}: expected pos=I..IV, "
      "alpha=1|2|4|8, stage=res2..res5, beta=1|1/2|1/4|1/8 or blocks=res5|res45|res34|res23"
    )
  c.model.insert_freq = _insert_freq(stages)
  return c
