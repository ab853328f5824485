"""Optimizer from the config: AdamW or SGD, warm-up + cosine schedule, global-norm clipping, weight-decay mask,
gradient accumulation with optax.MultiSteps.

Units: the training loop counts *micro-steps* (one loader batch of `config.batch_size` clips each).
With `grad_accum_steps = k` the optimizer updates every k micro-steps, so the schedule runs over optimizer updates
(`num_train_steps // k`, warm-up `warmup_steps // k`) and the learning rate is scaled by the effective batch
`batch_size * k / base_batch_size` (linear scaling rule, as in PySlowFast).
"""
from collections.abc import Callable

import jax
import ml_collections
import optax


def scaled_lr(value: float, config: ml_collections.ConfigDict) -> float:
  """`value` is given per `optimizer.base_batch_size` clips; returns it for the effective batch."""
  effective_batch = config.batch_size * config.grad_accum_steps
  return value * effective_batch / config.optimizer.base_batch_size


def make_schedule(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
  """Learning rate as a function of the optimizer-update count."""
  opt = config.optimizer
  k = config.grad_accum_steps
  total = max(config.num_train_steps // k, 1)
  warmup = min(opt.warmup_steps // k, total)
  peak, start, end = (scaled_lr(v, config) for v in (opt.base_lr, opt.warmup_start_lr, opt.end_lr))
  if opt.schedule == 'cosine' and warmup < total:
    # Linear warm-up start -> peak over `warmup` updates, then half-cosine peak -> end over the rest.
    return optax.warmup_cosine_decay_schedule(start, peak, warmup, total, end_value=end)
  if opt.schedule in ('constant', 'cosine'):  # 'cosine' lands here only when warm-up covers the whole run.
    if warmup == 0:
      return optax.constant_schedule(peak)
    return optax.join_schedules([optax.linear_schedule(start, peak, warmup), optax.constant_schedule(peak)],
                                [warmup])
  raise ValueError(f"config.optimizer.schedule: unknown schedule {opt.schedule!r}; use 'cosine' or 'constant'")


NO_DECAY = ('bias', 'scale')  # Leaf names that are not decayed: biases and LayerNorm scales.


def decay_mask(params):
  """True where weight decay applies: every leaf but biases and LayerNorm scales (`NO_DECAY`), by name.

  PySlowFast ZERO_WD_1D_PARAM: the 1-D parameters (biases, norm scales) are not decayed; kernels, position tables
  and the class token are (ZERO_DECAY_POS_CLS False). Naming the leaves holds in both block layouts: a stacked
  bias is still a bias.
  """
  def decays(path, _):
    return not (isinstance(path[-1], jax.tree_util.DictKey) and path[-1].key in NO_DECAY)

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, Callable]:
  """Returns (tx, schedule); tx works on micro-step gradients and accumulates `grad_accum_steps` of them."""
  opt = config.optimizer
  schedule = make_schedule(config)
  if opt.name == 'adamw':
    core = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                       mask=decay_mask)
  elif opt.name == 'sgd':
    # PySlowFast SGD: L2 term added to the gradient before momentum.
    core = optax.chain(optax.add_decayed_weights(opt.weight_decay, mask=decay_mask),
                       optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
  else:
    raise ValueError(f"config.optimizer.name: unknown optimizer {opt.name!r}; use 'adamw' or 'sgd'")
  if opt.grad_clip_norm > 0:
    core = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), core)
  if config.grad_accum_steps > 1:
    core = optax.MultiSteps(core, every_k_schedule=config.grad_accum_steps)
  return core, schedule
