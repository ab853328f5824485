"""One training step on a fixed batch is the same on meshes 1x1, 8x1 (data) and 2x4 (data x fsdp)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvit_jax.train import config as config_lib
from mvit_jax import models
from mvit_jax.train import sharding as sharding_lib
from mvit_jax.train import trainer

NUM_CLASSES = 4


def tiny_config():
  """mvit_tiny on (8, 4, 32, 32, 3) clips, SGD (linear in the gradient, so sharding-order float noise stays small),
  multi-hot labels (no mixup randomness)."""
  config = config_lib.base_config()
  config.model.name = 'mvit_tiny'
  config.model.drop_path_rate = 0.0
  config.model.pool_impl = 'conv'  # Compiles faster on CPU; the pooling formulations are tested equal elsewhere.
  config.half_precision = False
  config.batch_size = 8
  config.num_train_steps = 10
  config.optimizer.name = 'sgd'
  config.optimizer.base_lr = 0.5
  config.optimizer.base_batch_size = 8
  config.optimizer.schedule = 'constant'
  config.optimizer.warmup_steps = 2       # LR 0.1 at the first update, 0.5 from the third.
  config.optimizer.warmup_start_lr = 0.1
  config.data.num_frames = 4
  config.data.crop_size = 32
  config.data.num_classes = NUM_CLASSES
  config.data.multi_label = True
  return config


def fixed_batch(config):
  rng = np.random.default_rng(0)
  shape = (config.batch_size, config.data.num_frames, config.data.crop_size, config.data.crop_size, 3)
  labels = np.eye(NUM_CLASSES, dtype=np.float32)[np.arange(config.batch_size) % NUM_CLASSES]
  return {'video': rng.integers(0, 256, shape, dtype=np.uint8), 'label': labels}  # As the loader ships them.


def one_step(config, mesh, host_params=None):
  """(metrics, params after the step, sharded params, initial params on the host) for one step on `mesh`.

  The initial params are created once (on the first mesh) and placed onto the others, so every mesh starts from
  identical values and only the update step is compiled per mesh.
  """
  model = models.create_model(config.model.name, **trainer.model_overrides(config, NUM_CLASSES))
  rules = sharding_lib.rules_from_config(config.sharding_rules)
  ts = trainer.TrainSetup.build(model, config, mesh, rules)
  if host_params is None:
    host_params = jax.device_get(ts.init_params(jax.random.key(0)))
  state = ts.init_state(host_params)
  step_fn = ts.jit_step(trainer.make_train_step(model, ts.tx, ts.schedule, config, NUM_CLASSES))
  batch = sharding_lib.global_batch(fixed_batch(config), mesh)
  with ts.context():
    state, metrics = step_fn(state, batch, jax.random.key(1), np.int32(1))
  return jax.device_get(metrics), jax.device_get(state['params']), state['params'], host_params


def test_one_step_same_on_meshes():
  config = tiny_config()
  ref_metrics, ref_params, _, init = one_step(
      config, sharding_lib.make_mesh({'data': 1, 'fsdp': 1, 'model': 1}, jax.devices()[:1]))
  assert np.isfinite(ref_metrics['loss'])
  assert ref_metrics['lr'] == pytest.approx(0.1)  # The LR optax applied to this first update.
  for mesh_shape in ({'data': 8, 'fsdp': 1, 'model': 1}, {'data': 2, 'fsdp': 4, 'model': 1}):
    mesh = sharding_lib.make_mesh(mesh_shape)
    metrics, params, sharded, _ = one_step(config, mesh, init)
    # float32 reductions run in a different order when split over devices: agreement to ~1e-6 relative.
    np.testing.assert_allclose(metrics['loss'], ref_metrics['loss'], rtol=1e-5)
    np.testing.assert_allclose(metrics['grad_norm'], ref_metrics['grad_norm'], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, ref_params)
    if mesh_shape['fsdp'] == 4:
      # FSDP really shards: the qkv kernel (embed=32, qkv=96) is split 4-way along 'embed'.
      kernel = sharded['blocks_0']['attn']['qkv']['kernel']
      assert kernel.sharding.spec == jax.P('fsdp', 'model')  # 'model' has size 1 here.
      assert kernel.addressable_shards[0].data.shape == (8, 96)


def test_model_overrides_from_config():
  """half_precision -> bfloat16 compute with float32 params; data shapes fill unset model overrides."""
  config = tiny_config()
  config.half_precision = True
  config.remat_policy = 'dots_saveable'
  config.model.num_frames = 8
  overrides = trainer.model_overrides(config, NUM_CLASSES)
  assert overrides == {'num_classes': NUM_CLASSES, 'num_frames': 8, 'input_size': 32, 'drop_path_rate': 0.0,
                       'pool_impl': 'conv', 'dtype': 'bfloat16', 'param_dtype': 'float32',
                       'remat_policy': 'dots_saveable'}
  model = models.create_model('mvit_tiny', **overrides)
  assert model.config.dtype == jnp.bfloat16 and model.config.param_dtype == jnp.float32
