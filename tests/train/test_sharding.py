"""Mesh construction, logical rules, parameter / optimizer-state shardings and global batch assembly."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mvit_jax.train import optim
from mvit_jax.train import config as config_lib
from mvit_jax.train import sharding as sharding_lib


class _Tiny(nn.Module):
  """Stand-in with the model's logical names: a Dense (embed -> mlp), a 1-D LayerNorm, a 10-class head."""

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(16, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ('embed', 'mlp')))(x)
    x = nn.with_logical_constraint(x, ('batch', 'mlp'))
    x = nn.LayerNorm(scale_init=nn.with_logical_partitioning(nn.initializers.ones, ('mlp',)),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('mlp',)))(x)
    return nn.Dense(10, kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                                 ('mlp', 'classes')))(x)


def test_make_mesh_sizes_and_errors():
  mesh = sharding_lib.make_mesh({'data': -1, 'fsdp': 2, 'model': 1})
  assert dict(mesh.shape) == {'data': 4, 'fsdp': 2, 'model': 1}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  with pytest.raises(ValueError, match='needs 6 devices, have 8'):
    sharding_lib.make_mesh({'data': 3, 'fsdp': 2, 'model': 1})
  with pytest.raises(ValueError, match='at most one axis may be -1'):
    sharding_lib.make_mesh({'data': -1, 'fsdp': -1, 'model': 1})
  with pytest.raises(ValueError, match='unknown mesh axes'):
    sharding_lib.rules_from_config([('batch', 'dta')])


def test_fit_spec_drops_axes_that_do_not_divide():
  mesh = sharding_lib.make_mesh({'data': 2, 'fsdp': 4, 'model': 1})
  assert sharding_lib.fit_spec(jax.P('fsdp', None), (16, 10), mesh) == jax.P('fsdp', None)
  assert sharding_lib.fit_spec(jax.P(None, 'fsdp'), (16, 10), mesh) == jax.P(None, None)
  assert sharding_lib.fit_spec(jax.P(('data', 'fsdp')), (12,), mesh) == jax.P(None)
  assert sharding_lib.fit_spec(jax.P(('data', 'fsdp')), (16,), mesh) == jax.P(('data', 'fsdp'))


def test_param_and_opt_state_shardings_follow_rules():
  mesh = sharding_lib.make_mesh({'data': 2, 'fsdp': 2, 'model': 2})
  rules = sharding_lib.rules_from_config(config_lib.base_config().sharding_rules)
  model = _Tiny()
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((8, 8)))['params'])
  shardings = sharding_lib.param_shardings(boxed, mesh, rules)
  assert shardings['Dense_0']['kernel'].spec == jax.P('fsdp', 'model')     # (embed, mlp)
  assert shardings['LayerNorm_0']['scale'].spec == jax.P('model')           # (mlp,)
  assert shardings['Dense_1']['kernel'].spec == jax.P('model', None)        # (mlp, classes): classes replicated
  assert shardings['Dense_0']['bias'].spec == jax.P(None)                   # Unannotated: replicated.

  abstract = nn.unbox(boxed)
  tx = optax.MultiSteps(optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, mask=optim.decay_mask)), 2)
  opt_abstract = jax.eval_shape(tx.init, abstract)
  opt_shardings = sharding_lib.opt_state_shardings(opt_abstract, abstract, shardings, mesh)
  # Adam moments and the accumulated gradients follow the params; counters are replicated.
  inner_adam = opt_shardings.inner_opt_state[1][0]
  assert inner_adam.mu['Dense_0']['kernel'].spec == jax.P('fsdp', 'model')
  assert inner_adam.nu['LayerNorm_0']['scale'].spec == jax.P('model')
  assert opt_shardings.acc_grads['Dense_0']['kernel'].spec == jax.P('fsdp', 'model')
  assert inner_adam.count.spec == jax.P()
  assert opt_shardings.mini_step.spec == jax.P()


def test_global_batch_is_split_over_data_and_fsdp():
  mesh = sharding_lib.make_mesh({'data': 2, 'fsdp': 2, 'model': 2})
  local = {'video': np.arange(8 * 3, dtype=np.float32).reshape(8, 3), 'label': np.arange(8, dtype=np.int32)}
  batch = sharding_lib.global_batch(local, mesh)
  assert batch['video'].shape == (8, 3)
  assert batch['video'].sharding.spec == jax.P(('data', 'fsdp'))
  # 4 batch shards of 2 rows each, every shard held twice (the 'model' axis replicates).
  assert {s.data.shape for s in batch['video'].addressable_shards} == {(2, 3)}
  np.testing.assert_array_equal(np.asarray(batch['label']), np.arange(8))
