"""Config validation: unknown keys and wrong types fail with the dotted key name and the closest valid one; missing
data paths and an unwritable workdir fail naming them; every experiment validates."""
import glob
import importlib.util
import os

import ml_collections
import pytest

from mvit_jax.train import config as config_lib
from mvit_jax.system.errors import InputError
from tests import testlib

REPO = testlib.REPO


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
    (lambda d: d.update(eval_confusion_classes=-1), r'config\.eval_confusion_classes must be >= 0'),
    (lambda d: d.update(compilation_cache_dir='/cache/{run}'), r"config\.compilation_cache_dir may hold '\{workdir\}'"),
    # A decode-time resize below what the augmentation samples makes it upscale (resize once, from native frames).
    (lambda d: d['data'].update(train_short_side=256), r'config\.data\.train_short_side must be 0 with random_resized'),
    (lambda d: d['data'].update(train_short_side=256, random_resized_crop=False, train_jitter_scales=(256, 320)),
     r"config\.data\.train_short_side 256 is below the short-side jitter's upper end 320"),
])
def test_bad_keys_and_types_name_the_key(mutate, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(_bad(mutate))


def test_int_where_float_expected_and_placeholders_are_accepted():
  config = _bad(lambda d: (d['optimizer'].update(base_lr=1), d['model'].update(num_classes=7)))
  config_lib.validate(config)


@pytest.mark.parametrize('mutate, message', [
    (lambda d: d.update(num_train_step=10), r"'config\.num_train_step' \(did you mean 'num_train_steps'\?\)"),
    (lambda d: d['data'].update(xyzzy=1), r"'config\.data\.xyzzy'; known keys here: .*num_frames"),
    (lambda d: d['model'].update(name='mvit_b16x4'), r"'mvit_b16x4' is not a model \(did you mean 'mvit_b_16x4'\?\)"),
    (lambda d: d['data'].update(dataset_kind='frame'), r"dataset_kind 'frame' .*\(did you mean 'frames'\?\)"),
])
def test_errors_name_the_closest_valid_value(mutate, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(_bad(mutate))


def _with_data(tmp_path, **data):
  """The base config reading real files: train.csv and val.csv exist in tmp_path/data."""
  folder = tmp_path / 'data'
  folder.mkdir(exist_ok=True)
  for name in ('train.csv', 'val.csv'):
    (folder / name).write_text('a.mp4 0\n')
  config = config_lib.base_config()
  config.data.train_manifest, config.data.eval_manifest = str(folder / 'train.csv'), str(folder / 'val.csv')
  config.update_from_flattened_dict({f'data.{k}': v for k, v in data.items()})
  return config


def test_check_paths_accepts_existing_files_and_creates_the_workdir(tmp_path):
  config_lib.check_paths(_with_data(tmp_path, root=str(tmp_path)), str(tmp_path / 'a' / 'run'))
  assert os.path.isdir(tmp_path / 'a' / 'run') and not os.listdir(tmp_path / 'a' / 'run')


@pytest.mark.parametrize('data, message', [
    (dict(root='nowhere'), r"config\.data\.root: no such folder 'nowhere'"),
    (dict(eval_manifest='/no/val.csv'), r"config\.data\.eval_manifest: no such file '/no/val\.csv'"),
    (dict(classes_file='/no/classes.txt'), r'config\.data\.classes_file'),
    (dict(train_manifest=''), r'config\.data\.train_manifest is empty'),
    (dict(eval_manifest=''), r'config\.data\.eval_manifest is empty but the run evaluates'),
])
def test_check_paths_names_the_missing_path(tmp_path, data, message):
  with pytest.raises(InputError, match=message):
    config_lib.check_paths(_with_data(tmp_path, **data), str(tmp_path / 'run'))


def test_check_paths_needs_no_eval_manifest_when_the_run_never_evaluates(tmp_path):
  config = _with_data(tmp_path, eval_manifest='')
  config.eval_every_steps = -1
  config_lib.check_paths(config, str(tmp_path / 'run'))


def test_check_paths_skips_data_written_later_or_read_from_tfds(tmp_path):
  config = config_lib.base_config()  # No manifests at all.
  config.synthetic_data.enabled = True
  config_lib.check_paths(config, str(tmp_path / 'run'))
  config.synthetic_data.enabled, config.data.dataset_kind = False, 'tfds'
  config_lib.check_paths(config, str(tmp_path / 'run'))


def test_k400_mvit_b_is_the_paper_recipe():
  c = _load(os.path.join(REPO, 'experiments', 'k400_mvit_b.py')).get_config()
  o, d = c.optimizer, c.data
  assert (c.model.name, c.model.drop_path_rate, c.model.head_dropout_rate) == ('mvit_b_16x4', 0.2, 0.5)
  assert (o.name, o.base_lr, o.base_batch_size, o.weight_decay, o.grad_clip_norm) == ('adamw', 1.6e-3, 512, 0.05, 1.0)
  assert (d.label_smoothing, d.mixup_alpha, d.cutmix_alpha, d.random_erasing_prob) == (0.1, 0.8, 1.0, 0.25)
  assert (d.num_frames, d.sampling_rate, d.num_repeated_samples, d.test_num_clips, d.test_num_crops) == (16, 4, 2, 5, 1)
  # 200 epochs of 240k videos x 2 repeated samples at 512 clips per step; 30 of them warm-up.
  assert c.num_train_steps == 200 * (240_000 * 2 // 512) and c.optimizer.warmup_steps == 30 * (240_000 * 2 // 512)
