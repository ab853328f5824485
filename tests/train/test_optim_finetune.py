"""Fine-tuning pieces of the optimizer: frozen parameters (`train_only`) and layer-wise learning-rate decay, in
the scanned block layout the trainer uses."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mvit_jax import models
from mvit_jax.train import config as config_lib
from mvit_jax.train import optim

# mvit_tiny with 6 blocks: Q-pooling at blocks 1 and 3, blocks 4-5 one scanned run ('blocks_4_5').
DEPTH = 6


def _model_and_params(scan_blocks=True):
  """The model and random float32 NumPy params of its shapes (no init: the tests need only values)."""
  model = models.create_model('mvit_tiny', depth=DEPTH, num_classes=3, num_frames=4, input_size=32,
                              scan_blocks=scan_blocks)
  clip = jax.ShapeDtypeStruct((1, 4, 32, 32, 3), jnp.float32)
  shapes = nn.unbox(jax.eval_shape(lambda x: model.init(jax.random.key(0), x)['params'], clip))
  rng = np.random.default_rng(0)
  return model, jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), shapes)


@pytest.fixture(scope='module')
def tiny():
  return _model_and_params()


def _config(train_only='all', layer_decay=1.0, weight_decay=0.5):
  c = config_lib.base_config()
  c.train_only = train_only
  c.optimizer.update(base_lr=0.1, base_batch_size=512, warmup_steps=0, schedule='constant', layer_decay=layer_decay,
                     weight_decay=weight_decay)
  return c


def _step(tx, params):
  """One update with random gradients: (new params, optimizer state after it) as NumPy."""
  rng = np.random.default_rng(1)
  grads = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)

  @jax.jit
  def step(params, grads):
    updates, state = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates), state

  return jax.device_get(step(params, grads))


def test_tiny_model_has_a_scanned_run(tiny):
  _, params = tiny
  assert 'blocks_4_5' in params and params['blocks_4_5']['mlp']['fc1']['kernel'].shape[0] == 2
  assert optim.param_paths(params) == optim.param_paths(_model_and_params(scan_blocks=False)[1])
  assert 'blocks_5/mlp/fc1/kernel' in optim.param_paths(params)


def test_layer_decay_factors(tiny):
  """decay ** (L + 1 - l): patch embedding and position tables l = 0, block i l = i + 1, norm and head L + 1; the
  scanned run 4-5 gets one factor per block along its stacking axis."""
  model, params = tiny
  f = optim.update_factors(params, 'all', 0.5, model.config)
  assert f['patch_embed']['proj']['kernel'].item() == 0.5 ** 7
  assert f['pos_embed']['cls_token'].item() == 0.5 ** 7
  assert f['pos_embed']['pos_embed_spatial'].item() == 0.5 ** 7
  for i in range(4):
    assert f[f'blocks_{i}']['attn']['qkv']['kernel'].item() == 0.5 ** (DEPTH - i)
  stacked = f['blocks_4_5']['attn']['qkv']['kernel']
  assert stacked.shape == (2, 1, 1)  # Broadcasts along the (2, in, out) stacked kernel.
  np.testing.assert_array_equal(stacked.ravel(), [0.5 ** 2, 0.5 ** 1])
  assert f['norm']['scale'].item() == 1.0 and f['head']['kernel'].item() == 1.0


def test_layer_decay_scales_the_updates(tiny):
  """The applied update of each leaf is its factor times the undecayed one (weight decay included)."""
  model, params = tiny
  plain, _ = optim.make_optimizer(_config(), params, model.config)
  decayed, _ = optim.make_optimizer(_config(layer_decay=0.5), params, model.config)
  step_plain, step_decayed = _step(plain, params)[0], _step(decayed, params)[0]
  factors = optim.update_factors(params, 'all', 0.5, model.config)
  jax.tree.map(lambda p, a, b, f: np.testing.assert_allclose(b - p, f * (a - p), rtol=1e-4, atol=1e-6),
               params, step_plain, step_decayed, factors)


def test_head_only_keeps_no_state_and_moves_only_the_head(tiny):
  model, params = tiny
  tx, _ = optim.make_optimizer(_config('head'), params, model.config)
  new, state = _step(tx, params)
  # Adam moments (and nothing else param-shaped) exist only for the head's kernel and bias.
  moments = [x for x in jax.tree.leaves(state) if x.ndim > 0]
  assert sorted(x.shape for x in moments) == sorted([params['head']['kernel'].shape, params['head']['bias'].shape] * 2)
  for path in ('head/kernel', 'head/bias'):
    assert not np.array_equal(_get(new, path), _get(params, path))
  frozen = {k: v for k, v in params.items() if k != 'head'}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32)),
               frozen, {k: new[k] for k in frozen})


def test_frozen_params_untouched_by_weight_decay_with_accumulation(tiny):
  """Zero gradients, weight decay 0.5, SGD with 2-step accumulation: only the trained (decayed) leaves move."""
  model, params = tiny
  c = _config('head', weight_decay=0.5)
  c.optimizer.name, c.grad_accum_steps = 'sgd', 2
  tx, _ = optim.make_optimizer(c, params, model.config)
  @jax.jit
  def two_micro_steps(p):
    state = tx.init(p)
    for _ in range(2):
      updates, state = tx.update(jax.tree.map(jnp.zeros_like, p), state, p)
      p = optax.apply_updates(p, updates)
    return p, state

  p, state = jax.device_get(two_micro_steps(params))
  assert not np.array_equal(p['head']['kernel'], params['head']['kernel'])
  jax.tree.map(np.testing.assert_array_equal, p['blocks_4_5'], params['blocks_4_5'])
  jax.tree.map(np.testing.assert_array_equal, p['norm'], params['norm'])
  accumulated = [x for x in jax.tree.leaves(state) if x.ndim > 0]
  assert len(accumulated) == 2 * 2  # Accumulated gradients and momenta of the head's two leaves.


def test_last_stage_in_the_scanned_layout(tiny):
  model, params = tiny
  f = optim.update_factors(params, 'last_stage', 1.0, model.config)
  trained = {k for k, v in f.items() if any(x.any() for x in jax.tree.leaves(v))}
  assert trained == {'blocks_3', 'blocks_4_5', 'norm', 'head'}  # Block 3 is the last Q-pooling block.


def test_pattern_inside_a_scanned_run_freezes_the_other_block(tiny):
  """'blocks_5' trains one block of the stacked run 4-5: block 4's slice stays bit-identical, block 5's moves."""
  model, params = tiny
  tx, _ = optim.make_optimizer(_config('blocks_5/mlp,head'), params, model.config)
  new, _ = _step(tx, params)
  fc1 = new['blocks_4_5']['mlp']['fc1']['kernel'], params['blocks_4_5']['mlp']['fc1']['kernel']
  np.testing.assert_array_equal(fc1[0][0], fc1[1][0])
  assert not np.array_equal(fc1[0][1], fc1[1][1])
  jax.tree.map(np.testing.assert_array_equal, new['blocks_4_5']['attn'], params['blocks_4_5']['attn'])
  jax.tree.map(np.testing.assert_array_equal, new['blocks_3'], params['blocks_3'])


@pytest.mark.parametrize('train_only', ['head,blocks_9', 'heads', 'blocks_1[67]/*'])
def test_pattern_matching_nothing_is_one_config_error(tiny, train_only):
  model, params = tiny
  with pytest.raises(config_lib.ConfigError, match=r"config\.train_only: pattern '[^']+' matches no parameter"):
    optim.make_optimizer(_config(train_only), params, model.config)


@pytest.mark.parametrize('key, value, match', [('optimizer.layer_decay', 0.0, 'layer_decay must be in'),
                                               ('optimizer.layer_decay', 1.5, 'layer_decay must be in'),
                                               ('train_only', 'head,,norm', 'empty pattern')])
def test_config_checks(key, value, match):
  c = config_lib.base_config()
  group, _, leaf = key.rpartition('.')
  (c[group] if group else c)[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(c)


def _get(tree, path):
  for key in path.split('/'):
    tree = tree[key]
  return tree
