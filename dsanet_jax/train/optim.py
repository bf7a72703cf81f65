"""Optimiser and learning-rate schedule from `config.train` (optax).

The learning rate is `base_lr * global_batch_size / reference_batch_size`. The schedule is a
linear warm-up from `warmup_start_factor * lr` over `warmup_epochs`, then 'step' (x`lr_decay_factor`
at each of `lr_decay_epochs`), 'cosine' (to 0 at the end) or 'constant'. With `train.num_steps` set,
the schedule's epochs are `num_steps / num_epochs` steps each, so that warm-up and decay keep their
place in the run however long it is (`schedule_steps_per_epoch`). As the original, weight
decay applies to every parameter (BatchNorm and DSA included), as coupled L2 for SGD (PyTorch's SGD
`weight_decay`) and decoupled for AdamW; gradients are clipped by global norm before both.
"""

import ml_collections
import optax


def peak_learning_rate(train_cfg: ml_collections.ConfigDict) -> float:
  """`base_lr` scaled linearly by `global_batch_size / reference_batch_size`."""
  return train_cfg.base_lr * train_cfg.global_batch_size / train_cfg.reference_batch_size


def schedule_steps_per_epoch(
  train_cfg: ml_collections.ConfigDict, steps_per_epoch: float, total_steps: int
) -> float:
  """Steps per schedule epoch: the data's, or `total_steps / num_epochs` when `num_steps` is set."""
  if train_cfg.num_steps and train_cfg.num_epochs > 0:
    return total_steps / train_cfg.num_epochs
  return steps_per_epoch


def make_schedule(
  train_cfg: ml_collections.ConfigDict, steps_per_epoch: float, total_steps: int
) -> optax.Schedule:
  """Returns step -> learning rate (f32 scalar) over a run of `total_steps`.

  `steps_per_epoch` is the data's; with `train.num_steps` set the epochs of the schedule are
  rescaled to the run (`schedule_steps_per_epoch`).
  """
  lr = peak_learning_rate(train_cfg)
  steps_per_epoch = schedule_steps_per_epoch(train_cfg, steps_per_epoch, total_steps)
  warmup = round(train_cfg.warmup_epochs * steps_per_epoch)
  kind = train_cfg.schedule
  if kind == "step":
    boundaries = {
      round(e * steps_per_epoch): train_cfg.lr_decay_factor for e in train_cfg.lr_decay_epochs
    }
    main = optax.piecewise_constant_schedule(lr, boundaries)
  elif kind == "cosine":
    main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
  elif kind == "constant":
    main = optax.constant_schedule(lr)
  else:
    raise ValueError(f"config.train.schedule={kind!r}: expected 'step', 'cosine' or 'constant'")
  if warmup <= 0:
    return main
  ramp = optax.linear_schedule(train_cfg.warmup_start_factor * lr, lr, warmup)
  if kind == "step":
    # mmcv's warm-up multiplies the regular (step) schedule; the steps count from 0, not warmup.
    return lambda step: ramp(step) * main(step) / lr
  return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(
  train_cfg: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
  """clip-by-global-norm -> (L2 + SGD Nesterov) or AdamW, following `config.train`."""
  parts = []
  if train_cfg.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(train_cfg.grad_clip_norm))
  name = train_cfg.optimizer
  if name == "sgd":
    if train_cfg.weight_decay:
      parts.append(optax.add_decayed_weights(train_cfg.weight_decay))
    parts.append(
      optax.sgd(schedule, momentum=train_cfg.momentum or None, nesterov=train_cfg.nesterov)
    )
  elif name == "adamw":
    parts.append(optax.adamw(schedule, weight_decay=train_cfg.weight_decay))
  else:
    raise ValueError(f"config.train.optimizer={name!r}: expected 'sgd' or 'adamw'")
  return optax.chain(*parts)
