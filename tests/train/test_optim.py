"""Optimizer pieces: schedule values, linear LR scaling, weight-decay mask, gradient accumulation."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mvit_jax.train import config as config_lib
from mvit_jax import models
from mvit_jax.train import optim
from mvit_jax.models import layout


def _config(**optimizer):
  c = config_lib.base_config()
  c.num_train_steps = 110
  c.batch_size = 256
  for k, v in optimizer.items():
    c.optimizer[k] = v
  return c


def test_warmup_cosine_values_and_batch_scaling():
  # Batch 256 of base 512: every LR is halved. Peak 1.6e-3 -> 8e-4, start/end 1.6e-5 -> 8e-6.
  c = _config(base_lr=1.6e-3, warmup_start_lr=1.6e-5, end_lr=1.6e-5, warmup_steps=10, schedule='cosine')
  schedule = optim.make_schedule(c)
  np.testing.assert_allclose(schedule(0), 8e-6, rtol=1e-6)
  np.testing.assert_allclose(schedule(5), 8e-6 + 0.5 * (8e-4 - 8e-6), rtol=1e-6)  # Halfway up the linear ramp.
  np.testing.assert_allclose(schedule(10), 8e-4, rtol=1e-6)
  # Half-cosine over the remaining 100 updates: at 60 (halfway) the mean of peak and end.
  np.testing.assert_allclose(schedule(60), (8e-4 + 8e-6) / 2, rtol=1e-5)
  np.testing.assert_allclose(schedule(110), 8e-6, rtol=1e-5)


def test_grad_accumulation_counts_updates():
  # 4 micro-steps per update: 110 micro-steps = 27 updates, warm-up 12 micro-steps = 3 updates, effective batch
  # 1024 doubles the LR.
  c = _config(base_lr=1e-3, warmup_start_lr=0.0, warmup_steps=12, schedule='constant')
  c.grad_accum_steps = 4
  schedule = optim.make_schedule(c)
  np.testing.assert_allclose([schedule(0), schedule(1), schedule(3), schedule(26)],
                             [0.0, 2e-3 / 3, 2e-3, 2e-3], rtol=1e-6)


def test_decay_mask_skips_1d_params():
  params = {'dense': {'kernel': jnp.ones((3, 4)), 'bias': jnp.ones(4)}, 'norm': {'scale': jnp.ones(4)},
            'pos_embed': jnp.ones((1, 5, 4)), 'cls_token': jnp.ones((1, 4))}
  assert optim.decay_mask(params) == {'dense': {'kernel': True, 'bias': False}, 'norm': {'scale': False},
                                      'pos_embed': True, 'cls_token': True}


def test_decay_mask_same_in_both_block_layouts():
  """Stacked biases and norm scales of a scanned run are not decayed: the mask of the scanned params is the
  unrolled mask in the scanned layout."""
  shapes = {}
  for scan in (False, True):
    model = models.create_model('mvit_b_16x4', num_classes=10, scan_blocks=scan)
    shapes[scan] = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 224, 224, 3)))['params'])
  assert 'blocks_4_12' in shapes[True]  # A scanned run: its leaves have a leading 'layers' axis.
  unrolled_mask = optim.decay_mask(shapes[False])
  expected = layout.to_block_layout(jax.tree.map(lambda m, x: np.full(x.shape, m), unrolled_mask, shapes[False]),
                                    shapes[True])
  jax.tree.map(lambda m, e: np.testing.assert_array_equal(m, bool(e.flat[0])), optim.decay_mask(shapes[True]),
               expected)
  assert not optim.decay_mask(shapes[True])['blocks_4_12']['norm1']['scale']


def test_adamw_weight_decay_only_on_masked_params():
  # Zero gradient: the Adam step is 0, so the update is exactly -lr * wd * p on decayed params and 0 elsewhere.
  c = _config(base_lr=0.1, base_batch_size=256, weight_decay=0.5, schedule='constant', warmup_steps=0,
              grad_clip_norm=0.0)
  params = {'kernel': jnp.full((2, 2), 2.0), 'bias': jnp.full((2,), 2.0)}
  tx, _ = optim.make_optimizer(c, params)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(updates['kernel'], -0.1 * 0.5 * 2.0)
  np.testing.assert_allclose(updates['bias'], 0.0)


def test_multisteps_equals_big_batch_sgd():
  """Two micro-batches accumulated give the update of their mean gradient (SGD, so exactly comparable)."""
  def loss(p, x):
    return jnp.mean((x @ p['w']) ** 2)

  x = jax.random.normal(jax.random.key(0), (8, 3))
  params = {'w': jnp.arange(6.0).reshape(3, 2)}
  accum = _config(name='sgd', base_lr=0.1, base_batch_size=8, momentum=0.0, weight_decay=0.0,
                  schedule='constant', warmup_steps=0, grad_clip_norm=0.0)
  accum.batch_size, accum.grad_accum_steps = 4, 2
  tx, _ = optim.make_optimizer(accum, params)
  state = tx.init(params)
  p = params
  for half in (x[:4], x[4:]):
    updates, state = tx.update(jax.grad(loss)(p, half), state, p)
    p = optax.apply_updates(p, updates)
  big = _config(name='sgd', base_lr=0.1, base_batch_size=8, momentum=0.0, weight_decay=0.0,
                schedule='constant', warmup_steps=0, grad_clip_norm=0.0)
  big.batch_size = 8
  tx_big, _ = optim.make_optimizer(big, params)
  updates, _ = tx_big.update(jax.grad(loss)(params, x), tx_big.init(params), params)
  np.testing.assert_allclose(p['w'], params['w'] + updates['w'], rtol=1e-6)
  np.testing.assert_allclose(p['w'], params['w'] - 0.1 * jax.grad(loss)(params, x)['w'], rtol=1e-6)


def test_clipping_applies_to_global_norm():
  c = _config(name='sgd', base_lr=1.0, base_batch_size=256, momentum=0.0, weight_decay=0.0, schedule='constant',
              warmup_steps=0, grad_clip_norm=1.0)
  params = {'a': jnp.zeros(2), 'b': jnp.zeros(1)}
  tx, _ = optim.make_optimizer(c, params)
  grads = {'a': jnp.array([3.0, 0.0]), 'b': jnp.array([4.0])}  # Global norm 5 -> scaled by 1/5.
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['a'], [-0.6, 0.0], rtol=1e-6)
  np.testing.assert_allclose(updates['b'], [-0.8], rtol=1e-6)
