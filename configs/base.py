"""The shared base config: every field the library reads, with its default.

Experiment configs call `get_base_config()` and override what differs. Configs are locked by
`main.py` (and the tools), so a misspelt `--config.x.y=` override fails at start-up.

Sections:
  model:  the network (backbone, depth, aggregation and its settings, dtype).
  data:   the dataset (TFDS name and dir), clip sampling and augmentation, eval views.
  train:  optimisation, schedule, batch, steps.
  eval:   multi-view evaluation.
  mesh / checkpoint / logging: distributed layout, Orbax, writers.
"""

import ml_collections

# ImageNet mean/std on the 0-255 scale, as the original (`Normalize`, RGB order).
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)

# The original's R50 insertion map (its configs/kinetics400/r50_e100.py): res3 blocks 1, 3;
# res4 blocks 1, 3, 5.
DSA_R50_INSERT_FREQ = (0, (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), 0)
# R18 analogue (spec §2.2): block 1 of res3 and of res4.
DSA_R18_INSERT_FREQ = (0, (0, 1), (0, 1), 0)

# What the paper recipes expect in `init_from` (their `init_expected`): the ImageNet 2D ResNets
# the original inflated (spec §3.1). No download happens here; fetch the file once.
IMAGENET_R50 = (
  "torchvision ImageNet ResNet-50 weights in torchvision key layout (.pth or .safetensors), e.g. "
  "resnet50-0676ba61.pth (https://download.pytorch.org/models/resnet50-0676ba61.pth, torchvision "
  "IMAGENET1K_V1) or the original's pretrained/resnet50.pth"
)
IMAGENET_R18 = (
  "torchvision ImageNet ResNet-18 weights in torchvision key layout (.pth or .safetensors), e.g. "
  "resnet18-f37072fd.pth (https://download.pytorch.org/models/resnet18-f37072fd.pth, torchvision "
  "IMAGENET1K_V1); the original shipped no resnet18.pth"
)
# Kinetics frames as the original extracted them (ffmpeg -fps 30, spec §4.1).
KINETICS_FPS = 30.0


def get_base_config() -> ml_collections.ConfigDict:
  """Returns the base config (DSA + I3D ResNet-50, Kinetics-400 shapes)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  # ---------------------------------------------------------------- model
  c.model = ml_collections.ConfigDict()
  c.model.backbone = "i3d_resnet"  # 'i3d_resnet' | 'tsm_resnet'
  c.model.depth = 50  # 18 | 34 | 50 | 101
  c.model.base_width = 64  # channels of the stem / res2; 64 is the real network
  c.model.num_classes = 400
  c.model.num_segments = 4  # U: snippets per video seen by one forward pass
  c.model.aggregation = "dsa"  # 'tsn' | 'dsa' | 'v4d' | 'se'
  # Per stage (res2..res5): 0 = none, 1 = every block, or a tuple with one flag per block.
  c.model.insert_freq = DSA_R50_INSERT_FREQ
  # 'res_1'..'res_4' = the paper's positions I-IV inside the residual branch; 'bottom' = on the
  # block output (with identity).
  c.model.insert_place = "res_2"
  c.model.dsa = ml_collections.ConfigDict(
    dict(alpha=2, beta=1 / 8, kernel_size=3, with_identity=False)
  )
  c.model.se = ml_collections.ConfigDict(dict(reduction=16))
  c.model.tsm = ml_collections.ConfigDict(dict(shift_div=8))
  c.model.inflate_freq = (0, 0, 1, 1)
  c.model.inflate_style = "3x1x1"  # Bottleneck only; BasicBlocks inflate to 3x3x3
  c.model.dropout_rate = 0.5
  c.model.dtype = "float32"  # compute dtype: 'float32' | 'bfloat16'; parameters stay float32
  c.model.remat = False  # rematerialise each residual block in the backward pass
  # 'auto' | 'conv3d' | 'frames2d' (kt x k x k as kt 2D convs over frames).
  c.model.conv_impl = "auto"
  c.model.bn_momentum = 0.9  # Flax convention (PyTorch momentum 0.1)
  c.model.bn_epsilon = 1e-5
  # Videos per BatchNorm statistics group, DSA's BatchNorm included. 0 = the whole global batch
  # (synchronised BN). The paper used per-GPU statistics over 12 videos: bn_group_size=12.
  c.model.bn_group_size = 0

  # ---------------------------------------------------------------- data
  c.data = ml_collections.ConfigDict()
  c.data.name = "kinetics400"  # a TFDS builder name (see dsanet_jax/data/builders)
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data_dir
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.num_frames = 8  # T: frames per snippet
  c.data.frame_interval = 8  # tau: stride between the frames of a snippet
  c.data.crop_size = 224
  # 'random_resized' | 'random_resized_original' (the original's distribution, spec §4.3) |
  # 'scale_jitter'
  c.data.train_crop = "random_resized"
  # Frame rate the recipe assumes the dataset was built at (checked against the dataset's
  # recorded rate at start-up); None = each video's native rate.
  c.data.fps = ml_collections.FieldReference(None, field_type=float)
  c.data.rrc_scale = (0.08, 1.0)
  c.data.rrc_ratio = (3 / 4, 4 / 3)
  c.data.scale_jitter_short_side = (256, 320)
  c.data.flip = True
  # Pairs of class names swapped when a clip is flipped (Something-Something left/right classes).
  c.data.flip_label_pairs = ()
  c.data.mean = IMAGENET_MEAN_255
  c.data.std = IMAGENET_STD_255
  # dtype of the normalised video handed to the model (batches leave the host as uint8 and are
  # normalised on the device, in the jitted step)
  c.data.dtype = "float32"
  c.data.shuffle_buffer = 256
  c.data.num_parallel_calls = -1  # tf.data AUTOTUNE
  c.data.prefetch = 2

  # ---------------------------------------------------------------- train
  c.train = ml_collections.ConfigDict()
  c.train.global_batch_size = 96
  c.train.num_epochs = 100.0
  c.train.num_train_examples = ml_collections.FieldReference(0, field_type=int)  # 0 = from TFDS
  c.train.optimizer = "sgd"  # 'sgd' (Nesterov momentum) | 'adamw'
  c.train.base_lr = 0.015  # at reference_batch_size; scaled linearly by the global batch size
  c.train.reference_batch_size = 96
  c.train.momentum = 0.9
  c.train.nesterov = True
  c.train.weight_decay = 1e-4
  c.train.schedule = "step"  # 'step' | 'cosine' | 'constant'
  c.train.lr_decay_epochs = (50, 75, 90)
  c.train.lr_decay_factor = 0.1
  c.train.warmup_epochs = 10.0
  c.train.warmup_start_factor = 0.01
  c.train.grad_clip_norm = 40.0  # 0 = off
  c.train.label_smoothing = 0.0
  c.train.grad_accum_steps = 1
  c.train.log_every_steps = 50
  c.train.eval_every_steps = 0  # 0 = only at the end
  c.train.num_steps = 0  # > 0 overrides num_epochs (smoke tests, benchmarks)
  # Resume even though the data layout recorded in the checkpoint (global batch size, process
  # count, dataset, split, size, fingerprint) changed: the data order is remapped (logged).
  c.train.allow_data_change = False
  c.train.log_gmacs = True  # log GMACs per view at step 0 (counted on the lowered eval forward)
  # (first, last) step of a jax.profiler trace written under WORKDIR/profile; () = off.
  c.train.profile_steps = ()
  # With several processes, SIGTERM/SIGINT are agreed on (an allgather) every N steps.
  c.train.preemption_check_every_steps = 10
  # Initial weights: None (from scratch, allowed only when init_expected is empty), 'scratch'
  # (explicitly from scratch), a converted checkpoint dir, or a torchvision-layout 2D ResNet
  # (.pth / .safetensors), inflated to I3D at start-up as the original does.
  c.init_from = ml_collections.FieldReference(None, field_type=str)
  # What a paper recipe expects in init_from (e.g. ImageNet ResNet-50 weights); non-empty makes
  # init_from mandatory (a run without it fails at start-up naming this).
  c.init_expected = ""

  # ---------------------------------------------------------------- eval
  c.eval = ml_collections.ConfigDict()
  c.eval.num_segments = 8  # U_test; a multiple of model.num_segments (interleaved passes)
  c.eval.num_crops = 3  # 3 = ThreeCrop of crop_size at short side resize; 1 = centre crop
  c.eval.short_side = 256
  c.eval.crop_size = 256
  c.eval.batch_size = 8  # global, videos per eval step
  c.eval.aggregate = "logits"  # 'logits' | 'probs'
  # How U_test snippets x crops are cut into passes of U: 'per_crop' (clean: each pass is one
  # crop's interleaved snippets) | 'original' (the original's crop/snippet mixing, spec §4.4).
  c.eval.grouping = "per_crop"
  c.eval.val_num_segments = 4  # views during periodic validation while training
  # --mode=eval/export/predict from a training workdir: the checkpoint of this step (0 = latest)
  c.eval.checkpoint_step = 0
  c.eval.val_num_crops = 1

  # ---------------------------------------------------------------- mesh, checkpoints, logging
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # devices on the data axis; -1 = all
  c.mesh.fsdp = 1  # devices on the parameter-sharding axis
  c.mesh.fsdp_min_size = 2**18  # with fsdp > 1, shard arrays of at least this many elements
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 1000
  c.checkpoint.keep = 3
  c.checkpoint.keep_best = 1
  c.checkpoint.async_save = True
  # Seconds a save may take, storage retries included (a stalled bucket); after that the run stops
  # naming the checkpoint (exit status 5) and the previous one is what a rerun resumes from.
  c.checkpoint.save_timeout_s = 1200
  # Several processes: a process that stops (killed, its host gone) ends the others within this
  # many seconds, in one line naming it and the last checkpoint, exit status 4
  # (dsanet_jax/train/hosts.py; also JAX's shutdown timeout; JAX's heartbeat timeout is
  # max(100, 4x this), behind the watchdog).
  c.multihost = ml_collections.ConfigDict()
  c.multihost.timeout_s = 60
  return c
