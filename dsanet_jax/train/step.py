"""The train step: loss, gradients (optionally accumulated over micro-batches), optimiser update.

Pure and data-free (no tf.data, no TensorFlow), so that the trainer, `tools.benchmark_model` and
`tools.device_check` compile the same program; the trainer jits it with its shardings.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dsanet_jax.common import data_spec
from dsanet_jax.train.state import ModelDef, State, fresh_rngs


def cross_entropy(
  logits: jax.Array, labels: jax.Array, mask: jax.Array, label_smoothing: float
) -> tuple[jax.Array, jax.Array]:
  """Mean (over mask) cross-entropy with label smoothing; and the count of correct top-1."""
  k = logits.shape[-1]
  onehot = (
    optax.smooth_labels(jax.nn.one_hot(labels, k), label_smoothing)
    if label_smoothing
    else (jax.nn.one_hot(labels, k))
  )
  ce = optax.softmax_cross_entropy(logits.astype(jnp.float32), onehot)
  w = mask.astype(jnp.float32)
  loss = jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)
  correct = jnp.sum((jnp.argmax(logits, -1) == labels) * w)
  return loss, correct


def make_train_step(
  mdef: ModelDef,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  *,
  seed: int,
  grad_accum_steps: int = 1,
  label_smoothing: float = 0.0,
  data: data_spec.DataSpec | None = None,
) -> Callable[[State, dict[str, jax.Array]], tuple[State, dict[str, jax.Array]]]:
  """Returns `train_step(state, batch) -> (state, metrics)` (pure; jit it with shardings).

  batch: `video` [B, U, T, H, W, 3], `label` int32 [B], `mask` bool [B]. The video is the
  pipeline's uint8, normalised on the device by `data.model_input`; without `data` it must arrive
  normalised (floating point). With gradient accumulation
  the batch is split into `grad_accum_steps` micro-batches (micro-batch m takes rows m, m + A, ...,
  so each stays spread over the devices), BatchNorm statistics run through them in turn, and the
  averaged gradient makes one optimiser step.
  """
  base_key = jax.random.key(seed)
  acc = grad_accum_steps
  model_input = data_spec.input_fn(data)

  def loss_fn(params: Any, stats: Any, rngs: Any, mb: dict[str, jax.Array]) -> tuple[Any, Any]:
    model = nnx.merge(mdef.train_graph, params, stats, rngs)
    logits = model(model_input(mb["video"]))
    loss, correct = cross_entropy(logits, mb["label"], mb["mask"], label_smoothing)
    return loss, (nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)), correct)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: State, batch: dict[str, jax.Array]) -> tuple[State, dict[str, Any]]:
    step = state["step"]
    key = jax.random.fold_in(base_key, step)
    params = state["params"]
    if acc == 1:
      rngs = fresh_rngs(mdef.abstract_rngs, key)
      (loss, (stats, correct)), grads = grad_fn(params, state["batch_stats"], rngs, batch)
    else:
      micro = jax.tree.map(
        lambda x: jnp.moveaxis(x.reshape(x.shape[0] // acc, acc, *x.shape[1:]), 1, 0), batch
      )

      def body(carry: tuple[Any, ...], xs: tuple[Any, Any]) -> tuple[tuple[Any, ...], None]:
        g_sum, stats, loss_sum, corr_sum = carry
        i, mb = xs
        rngs = fresh_rngs(mdef.abstract_rngs, jax.random.fold_in(key, i))
        (loss, (stats, correct)), g = grad_fn(params, stats, rngs, mb)
        g_sum = jax.tree.map(jnp.add, g_sum, g)
        return (g_sum, stats, loss_sum + loss, corr_sum + correct), None

      zeros = jax.tree.map(jnp.zeros_like, params)
      init = (zeros, state["batch_stats"], jnp.zeros(()), jnp.zeros(()))
      (grads, stats, loss, correct), _ = jax.lax.scan(body, init, (jnp.arange(acc), micro))
      grads = jax.tree.map(lambda g: g / acc, grads)
      loss = loss / acc
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    n = jnp.maximum(jnp.sum(batch["mask"].astype(jnp.float32)), 1.0)
    metrics = {
      "loss": loss,
      "accuracy": correct / n,
      "grad_norm": optax.tree.norm(grads),
      "param_norm": optax.tree.norm(new_params),
      "learning_rate": jnp.asarray(schedule(step), jnp.float32),
    }
    new_state = {
      "params": new_params,
      "batch_stats": stats,
      "opt_state": opt_state,
      "step": step + 1,
    }
    return new_state, metrics

  return train_step
