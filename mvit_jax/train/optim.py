"""Optimizer from the config: AdamW or SGD, warm-up + cosine schedule, global-norm clipping, weight-decay mask,
gradient accumulation with optax.MultiSteps, frozen parameters (`config.train_only`) and layer-wise learning-rate
decay (`config.optimizer.layer_decay`).

Units: the training loop counts *micro-steps* (one loader batch of `config.batch_size` clips each).
With `grad_accum_steps = k` the optimizer updates every k micro-steps, so the schedule runs over optimizer updates
(`num_train_steps // k`, warm-up `warmup_steps // k`) and the learning rate is scaled by the effective batch
`batch_size * k / base_batch_size` (linear scaling rule, as in PySlowFast).
"""
from collections.abc import Callable
import fnmatch

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mvit_jax.models import config as model_config_lib
from mvit_jax.models import layout
from mvit_jax.system.errors import did_you_mean
from mvit_jax.system.errors import InputError
from mvit_jax.train.config import ConfigError


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


def _unrolled(params) -> tuple[list[str], list, jax.tree_util.PyTreeDef]:
  """(paths, leaves, treedef) of `params` in the unrolled block layout."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(layout.to_block_layout(params, {}))
  return ['/'.join(str(k.key) for k in path) for path, _ in flat], [leaf for _, leaf in flat], treedef


def param_paths(params) -> list[str]:
  """'/'-joined paths of the leaves of MViT `params` (either block layout) as the unrolled layout names them, one
  `blocks_{i}` per block: 'patch_embed/proj/kernel', 'blocks_3/attn/qkv/kernel', 'head/kernel'. These are the
  names `config.train_only` patterns match (`python -m mvit_jax.train.optim MODEL` prints them)."""
  return _unrolled(params)[0]


def _depth(paths: list[str]) -> int:
  return 1 + max((int(p.split('/')[0][len('blocks_'):]) for p in paths if p.startswith('blocks_')), default=-1)


def layer_id(path: str, depth: int) -> int:
  """Layer of a parameter for layer-wise decay, in BEiT's convention (unilm beit/optim_factory.py
  get_layer_id_for_vit, also MAE's util/lr_decay.py): patch embedding, class token and absolute position tables
  0, block i at i + 1, everything after the blocks (final norm, head) depth + 1. MViT's relative position tables
  live in their block and take its layer."""
  top = path.split('/')[0]
  if top in ('patch_embed', 'pos_embed'):
    return 0
  if top.startswith('blocks_'):
    return int(top[len('blocks_'):]) + 1
  return depth + 1


def _trainable_patterns(train_only: str, model_config: model_config_lib.MViTConfig | None, depth: int) -> list[str]:
  """The patterns `train_only` stands for; 'last_stage' expands to the blocks from the last Q-pooling block on
  (the last token grid), the final norm and the head."""
  patterns = []
  for item in (p.strip() for p in train_only.split(',')):
    if item == 'all':
      patterns.append('*')
    elif item == 'last_stage':
      if model_config is None:
        raise ValueError("train_only 'last_stage' needs the model config (its stages)")
      specs = model_config_lib.block_specs(model_config)
      first = max((i for i, spec in enumerate(specs) if spec.q_stride != (1, 1, 1)), default=0)
      patterns += [f'blocks_{i}' for i in range(first, depth)] + ['norm', 'head']
    else:
      patterns.append(item)
  return patterns


def _matches(pattern: str, path: str) -> bool:
  """fnmatch of the path or of any of its '/'-prefixes, so 'head' selects 'head/kernel' and 'head/bias'."""
  parts = path.split('/')
  return any(fnmatch.fnmatchcase('/'.join(parts[:n]), pattern) for n in range(1, len(parts) + 1))


def update_factors(params, train_only: str = 'all', layer_decay: float = 1.0,
                   model_config: model_config_lib.MViTConfig | None = None):
  """Per-leaf update multipliers for `params` in their own block layout: 0 for a frozen parameter, else
  layer_decay ** (depth + 1 - layer_id) (1 everywhere with layer_decay 1).

  `train_only`: 'all', 'head', 'last_stage', or comma-separated fnmatch patterns on `param_paths` names ('*'
  also crosses '/'; a pattern selects a leaf when it matches its path or a '/'-prefix of it: 'head',
  'blocks_15', 'blocks_1[45]/mlp/*'); 'last_stage' may stand among them. A stacked leaf (a scanned run of blocks,
  leading 'layers' axis) gets one factor per block, shaped (n, 1, ...) to broadcast along that axis; every other
  leaf a scalar. Raises ConfigError naming a pattern that selects nothing.
  """
  paths, _, treedef = _unrolled(params)
  depth = _depth(paths)
  patterns = _trainable_patterns(train_only, model_config, depth)
  for pattern in patterns:
    if not any(_matches(pattern, path) for path in paths):
      tops = sorted({path.split('/')[0] for path in paths})
      raise ConfigError(f'config.train_only: pattern {pattern!r} matches no parameter'
                        f'{did_you_mean(pattern, tops)}; names look like {paths[0]!r}, {paths[-1]!r} '
                        f'(python -m mvit_jax.train.optim MODEL lists them)')
  def factor(path: str) -> np.ndarray:
    trained = any(_matches(pattern, path) for pattern in patterns)
    return np.float32(layer_decay ** (depth + 1 - layer_id(path, depth)) if trained else 0.0)

  per_block = jax.tree_util.tree_unflatten(treedef, [factor(path) for path in paths])
  stacked = layout.to_block_layout(per_block, params)  # Scanned runs: (n,) vectors, one factor per block.
  return jax.tree.map(lambda f, x: np.reshape(f, f.shape + (1,) * (len(x.shape) - f.ndim)), stacked, params)


def _core(config: ml_collections.ConfigDict, schedule: Callable) -> optax.GradientTransformation:
  """Clipping, AdamW or SGD with weight decay (`decay_mask`), accumulation: the update of trained parameters."""
  opt = config.optimizer
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
  return core


def make_optimizer(config: ml_collections.ConfigDict, params,
                   model_config: model_config_lib.MViTConfig | None = None
                   ) -> tuple[optax.GradientTransformation, Callable]:
  """Returns (tx, schedule) for `params` (arrays or jax.ShapeDtypeStructs of the trainer's layout); tx works on
  micro-step gradients and accumulates `grad_accum_steps` of them. `model_config` gives 'last_stage' its blocks.

  Frozen parameters (`config.train_only`) go through optax.set_to_zero in an optax.multi_transform: the core
  (clipping, moments, weight decay, accumulation) never sees them, so they hold no optimizer state and their
  update is exactly 0. Layer-wise decay multiplies each update (weight decay included, as a per-group learning
  rate scale does in PyTorch) by its `update_factors` value. A block frozen inside a stacked run that also trains
  other blocks keeps the run's moments and gets a factor of 0.
  """
  schedule = make_schedule(config)
  core = _core(config, schedule)
  factors = update_factors(params, config.train_only, config.optimizer.layer_decay, model_config)
  frozen = jax.tree.map(lambda f: not f.any(), factors)
  if any(jax.tree.leaves(frozen)):
    core = optax.multi_transform({'train': core, 'frozen': optax.set_to_zero()},
                                 jax.tree.map(lambda f: 'frozen' if f else 'train', frozen))
  if any(np.any(f != 1) for f, z in zip(jax.tree.leaves(factors), jax.tree.leaves(frozen)) if not z):
    core = optax.chain(core, optax.stateless(lambda updates, _: jax.tree.map(jnp.multiply, updates, factors)))
  trained = sum(int(np.prod(x.shape)) for x, z in zip(jax.tree.leaves(params), jax.tree.leaves(frozen)) if not z)
  logging.info('train_only=%r: %d of %d parameters trained; layer_decay %s', config.train_only, trained,
               sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)), config.optimizer.layer_decay)
  return core, schedule


def main(argv) -> None:
  """Prints the `param_paths` of a model variant with their shapes and layer ids."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from mvit_jax import models  # pylint: disable=g-import-not-at-top
  if len(argv) != 2 or argv[1] not in models.VARIANTS:
    raise InputError('usage: python -m mvit_jax.train.optim MODEL_NAME (a name in mvit_jax.models.VARIANTS)'
                     f'{did_you_mean(argv[-1], models.VARIANTS) if len(argv) == 2 else ""}')
  model = models.create_model(argv[1], scan_blocks=False)
  c = model.config
  clip = jax.ShapeDtypeStruct((1, c.num_frames, c.input_size, c.input_size, 3), jnp.float32)
  params = nn.unbox(jax.eval_shape(lambda x: model.init(jax.random.key(0), x)['params'], clip))
  paths, leaves, _ = _unrolled(params)
  for path, leaf in zip(paths, leaves):
    print(f'{path:48s} {str(tuple(leaf.shape)):20s} layer {layer_id(path, _depth(paths))}')


if __name__ == '__main__':
  from mvit_jax.system import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
