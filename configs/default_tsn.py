"""The embedded default with TSN aggregation: the contrast run for configs/default.py.

Command:
  python main.py --config=configs/default_tsn.py --workdir=/tmp/dsanet_default_tsn

Hardware: a 2-core CPU, under 5 minutes in total (as configs/default.py).

Expected: within 15 points of chance (25%, 4 classes) on the held-out split. The classes of
`order_of_events` differ only in the order of four events, and every event occurs at every
position in exactly one class, so snippet-wise classification averaged over the video (TSN) sees
the same evidence for every class; DSA, which mixes the U snippets of a video, reaches >= 90%.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.get_config()
  c.model.aggregation = "tsn"
  c.model.insert_freq = (0, 0, 0, 0)
  return c
