"""Shared helpers for the trainer tests: a tiny config on a tiny synthetic video dataset."""
import os

from mvit_jax import config_lib
from mvit_jax.data import synthetic


def write_tiny_dataset(root: str) -> str:
  """12 train / 4 val synthetic clips (4 classes, 16 frames of 32x32) in root; returns root."""
  if not os.path.exists(os.path.join(root, 'classes.txt')):
    synthetic.write_dataset(root, num_classes=4, videos_per_class=4, num_frames=16, height=32, width=32)
  return root


def get_config(data_root: str):
  """For `python -m mvit_jax.main --config tests/train_testlib.py:DATA_ROOT` in subprocess tests."""
  return tiny_train_config(data_root)


def subprocess_env(cache_dir: str, num_devices: int = 1) -> dict:
  """Environment for trainer subprocesses: `num_devices` CPU devices (1 compiles fastest; sharded restores are
  tested in-process) and a shared persistent compilation cache, so that repeated runs of the same programs load
  them instead of recompiling."""
  env = dict(os.environ)
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices}',
             JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  return env


def tiny_train_config(data_root: str, **overrides):
  """mvit_tiny on (8, 4, 32, 32, 3) clips from the tiny dataset; no eval unless asked; float32."""
  c = config_lib.base_config()
  c.model.name = 'mvit_tiny'
  c.model.drop_path_rate = 0.1
  c.model.pool_impl = 'conv'  # Compiles faster than the CPU default; the formulations are tested equal.
  c.half_precision = False
  c.num_train_steps = 4
  c.batch_size = 8
  c.eval_batch_size = 8
  c.log_every_steps = 2
  c.checkpoint_every_steps = 2
  c.eval_every_steps = -1
  c.optimizer.base_lr = 1e-3
  c.optimizer.base_batch_size = 8
  c.optimizer.warmup_steps = 2
  d = c.data
  d.root = data_root
  d.train_manifest = os.path.join(data_root, 'train.csv')
  d.eval_manifest = os.path.join(data_root, 'val.csv')
  d.classes_file = os.path.join(data_root, 'classes.txt')
  d.num_frames, d.sampling_rate, d.target_fps = 4, 2, 10.0
  d.train_short_side, d.test_short_side, d.crop_size = 0, 32, 32
  d.random_resized_crop = False
  d.train_jitter_scales = (32, 36)
  d.randaugment = False
  d.random_erasing_prob = 0.0
  d.num_repeated_samples = 1
  d.mixup_alpha, d.cutmix_alpha = 0.8, 1.0
  d.test_num_clips, d.test_num_crops = 2, 1
  d.num_workers = 0
  for key, value in overrides.items():
    target = c
    *groups, leaf = key.split('.')
    for g in groups:
      target = target[g]
    target[leaf] = value
  return c
