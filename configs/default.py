"""The embedded default: a small DSA network on the synthetic `order_of_events` dataset.

Command:
  python main.py --config=configs/default.py --workdir=/tmp/dsanet_default
(builds the dataset into ~/tensorflow_datasets on first use, or --config.data.data_dir=DIR;
trains, then writes /tmp/dsanet_default/eval/results.json).

Hardware: a 2-core CPU (no accelerator), under 5 minutes in total, including start-up, the dataset
build, compilation and the final 8x3-view evaluation. A second invocation with the same workdir
finds the finished run and does not retrain.

Expected: >= 90% top-1 on the 128 held-out videos (4 classes, chance 25%); the same network with
TSN aggregation (configs/default_tsn.py) stays near chance, because the classes differ only in the
ORDER of four events (dsanet_jax/data/builders/order_of_events.py).

Model: DSA + I3D ResNet-18 at base width 8, U=4 snippets x T=4 frames at 32x32.
"""

import ml_collections

from configs.base import DSA_R18_INSERT_FREQ, get_base_config


def get_config() -> ml_collections.ConfigDict:
  c = get_base_config()
  c.seed = 0

  c.model.backbone = "i3d_resnet"
  c.model.depth = 18
  c.model.base_width = 8
  c.model.num_classes = 4
  c.model.num_segments = 4
  c.model.aggregation = "dsa"
  c.model.insert_freq = DSA_R18_INSERT_FREQ
  c.model.insert_place = "res_2"
  c.model.inflate_freq = (0, 0, 1, 1)
  c.model.dropout_rate = 0.2
  c.model.bn_group_size = 0

  c.data.name = "order_of_events"
  c.data.fps = 12.0  # order_of_events renders every video at 12 fps
  c.data.num_frames = 4
  c.data.frame_interval = 1
  c.data.crop_size = 32
  c.data.train_crop = "random_resized"
  c.data.rrc_scale = (0.5, 1.0)
  c.data.flip = True
  c.data.shuffle_buffer = 512

  c.train.global_batch_size = 32
  c.train.reference_batch_size = 32
  c.train.num_epochs = 12.0
  c.train.optimizer = "adamw"
  c.train.base_lr = 3e-3
  c.train.weight_decay = 1e-4
  c.train.schedule = "cosine"
  c.train.warmup_epochs = 1.0
  c.train.grad_clip_norm = 10.0
  c.train.log_every_steps = 16
  c.train.eval_every_steps = 0

  c.eval.num_segments = 8  # two interleaved passes of U=4
  c.eval.num_crops = 3
  c.eval.short_side = 32
  c.eval.crop_size = 32
  c.eval.batch_size = 32
  c.eval.val_num_segments = 4
  c.eval.val_num_crops = 1

  c.checkpoint.every_steps = 64
  c.checkpoint.keep = 2
  c.checkpoint.keep_best = 0
  return c
