"""Config validation: unknown keys and wrong types fail with the dotted key name; every experiment validates."""
import glob
import importlib.util
import os
import subprocess
import sys

import ml_collections
import pytest

from mvit_jax import config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(REPO, 'experiments', '*.py'))))
def test_experiments_validate_and_document_their_command(path):
  module = _load(path)
  config_lib.validate(module.get_config())
  assert 'python -m mvit_jax.main --config experiments/' + os.path.basename(path) in module.__doc__


def _bad(mutate):
  d = config_lib.base_config().to_dict()
  mutate(d)
  return ml_collections.ConfigDict(d)


@pytest.mark.parametrize('mutate, message', [
    (lambda d: d.update(num_train_step=10), r"Unknown config key 'config\.num_train_step'"),
    (lambda d: d['optimizer'].update(lr=1.0), r"Unknown config key 'config\.optimizer\.lr'"),
    (lambda d: d['data'].update(numframes=8), r"Unknown config key 'config\.data\.numframes'"),
    (lambda d: d.update(batch_size=8.5), r"'config\.batch_size' has type float \(8\.5\); expected int"),
    (lambda d: d['optimizer'].update(base_lr='1e-3'), r"'config\.optimizer\.base_lr' has type str"),
    (lambda d: d['model'].update(num_classes='400'), r"'config\.model\.num_classes' has type str"),
    (lambda d: d.update(optimizer=3), r"'config\.optimizer' must be a group"),
    (lambda d: d.update(mode='training'), r"config\.mode must be 'train' or 'eval'"),
    (lambda d: d.update(remat_policy='everything'), r'config\.remat_policy'),
    (lambda d: d.update(batch_size=0), r'config\.batch_size must be >= 1'),
])
def test_bad_keys_and_types_name_the_key(mutate, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(_bad(mutate))


def test_int_where_float_expected_and_placeholders_are_accepted():
  config = _bad(lambda d: (d['optimizer'].update(base_lr=1), d['model'].update(num_classes=7)))
  config_lib.validate(config)


def test_cli_override_of_unknown_key_fails_before_jax_starts(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'mvit_jax.main', '--config=experiments/demo.py', f'--workdir={tmp_path}',
       '--config.optimizer.base_lrr=0.1'], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert 'base_lrr' in result.stderr
  assert not os.listdir(tmp_path)  # Nothing was written: the run never started.


def test_k400_mvit_b_is_the_paper_recipe():
  c = _load(os.path.join(REPO, 'experiments', 'k400_mvit_b.py')).get_config()
  o, d = c.optimizer, c.data
  assert (c.model.name, c.model.drop_path_rate, c.model.head_dropout_rate) == ('mvit_b_16x4', 0.2, 0.5)
  assert (o.name, o.base_lr, o.base_batch_size, o.weight_decay, o.grad_clip_norm) == ('adamw', 1.6e-3, 512, 0.05, 1.0)
  assert (d.label_smoothing, d.mixup_alpha, d.cutmix_alpha, d.random_erasing_prob) == (0.1, 0.8, 1.0, 0.25)
  assert (d.num_frames, d.sampling_rate, d.num_repeated_samples, d.test_num_clips, d.test_num_crops) == (16, 4, 2, 5, 1)
  # 200 epochs of 240k videos x 2 repeated samples at 512 clips per step; 30 of them warm-up.
  assert c.num_train_steps == 200 * (240_000 * 2 // 512) and c.optimizer.warmup_steps == 30 * (240_000 * 2 // 512)
