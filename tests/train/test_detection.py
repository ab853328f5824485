"""The trainer's detection pieces (mvit_jax.train.detection): the masked loss against a hand computation, the
collection of real boxes from eval batches, the AVA config checks and recipe, and every AVA experiment's detector
built abstractly with its train step's batch."""
import glob
import importlib.util
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from mvit_jax import models
from mvit_jax.data import ava
from mvit_jax.data import sources
from mvit_jax.data import synthetic_ava
from mvit_jax.system.errors import InputError
from mvit_jax.train import config as config_lib
from mvit_jax.train import detection
from mvit_jax.train import sharding as sharding_lib
from mvit_jax.train import trainer
from tests import testlib

AVA_EXPERIMENTS = sorted(glob.glob(os.path.join(testlib.REPO, 'experiments', 'ava_mvit*.py')))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_loss_is_bce_averaged_over_real_boxes_and_classes():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
  labels = (rng.uniform(size=(2, 3, 5)) < 0.3).astype(np.float32)
  box_mask = np.array([[True, True, False], [True, False, False]])
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  bce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
  expected = bce[box_mask].mean()  # (3 real boxes x 5 classes) entries.
  np.testing.assert_allclose(float(detection.loss(logits, labels, box_mask)), expected, rtol=1e-6)
  logits[~box_mask] = 1e4  # Padding boxes count for nothing, whatever the model says there.
  np.testing.assert_allclose(float(detection.loss(logits, labels, box_mask)), expected, rtol=1e-6)
  assert float(detection.loss(logits, labels, np.zeros_like(box_mask))) == 0.0


def test_box_collector_keeps_real_boxes_of_real_rows_once():
  scores = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
  boxes = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 24
  out = {'scores': scores, 'original_boxes': boxes, 'keyframe_index': np.array([7, 9]),
         'box_mask': np.array([[True, False, True], [True, True, False]]), 'mask': np.array([True, False])}
  collector = detection.BoxCollector()
  collector.add(out)
  collector.add(out)  # The same keyframe again: kept once.
  collector.add({**out, 'keyframe_index': np.array([3, 4]), 'mask': np.array([True, True])})
  indices, got_boxes, got_scores = collector.result(2)
  np.testing.assert_array_equal(indices, [7, 7, 3, 3, 4, 4])
  np.testing.assert_array_equal(got_boxes[:2], boxes[0, [0, 2]])
  np.testing.assert_array_equal(got_scores[4:], scores[1, [0, 1]])
  assert collector.num_keyframes == 3
  empty = detection.BoxCollector().result(5)
  assert [a.shape for a in empty] == [(0,), (0, 4), (0, 5)]


@pytest.mark.parametrize('key, value', [('mixup_prob', 0.5), ('random_erasing_prob', 0.25), ('randaugment', True),
                                        ('label_smoothing', 0.1)])
def test_ava_refuses_pixel_mixing_augmentations(key, value):
  config = _load(AVA_EXPERIMENTS[0]).get_config()
  config.data[key] = value
  with pytest.raises(config_lib.ConfigError, match=rf"config\.data\.{key} must be off .* dataset_kind 'ava'"):
    config_lib.validate(config)


def test_ava_recipe_is_the_papers():
  c = _load(os.path.join(testlib.REPO, 'experiments', 'ava_mvit_b_16x4.py')).get_config()
  per_epoch = config_lib.AVA_TRAIN_KEYFRAMES // 512
  assert (c.num_train_steps, c.optimizer.warmup_steps) == (30 * per_epoch, 5 * per_epoch)
  assert (c.optimizer.name, c.optimizer.base_lr, c.optimizer.base_batch_size, c.optimizer.momentum) == (
      'sgd', 0.6, 512, 0.9)
  assert (c.optimizer.weight_decay, c.optimizer.schedule) == (1e-8, 'cosine')
  assert (c.model.drop_path_rate, c.model.head_dropout_rate) == (0.4, 0.5)
  assert (c.data.num_frames, c.data.sampling_rate, c.data.ava_test_view) == (16, 4, 'center')
  full = _load(os.path.join(testlib.REPO, 'experiments', 'ava_mvit_b_16x4.py')).get_config('full')
  assert full.data.ava_test_view == 'full'
  with pytest.raises(config_lib.ConfigError, match='AVA test view'):
    config_lib.ava_recipe('mvit_b_16x4', num_frames=16, sampling_rate=4, test_view='fulll')


@pytest.mark.parametrize('path', AVA_EXPERIMENTS)
def test_ava_experiments_build_their_detector_and_batch(path):
  for view in ('center', 'full'):
    config_lib.validate(_load(path).get_config(view))
  config = _load(path).get_config()
  mesh = sharding_lib.make_mesh(config.mesh)
  model, overrides = trainer.make_model(config, 80)
  assert overrides['detection'] is True
  ts = trainer.TrainSetup.build(model, config, mesh, sharding_lib.rules_from_config(config.sharding_rules))
  assert ts.abstract_params['head']['kernel'].shape[-1] == 80
  batch = trainer.abstract_train_batch(config, 8, 80, mesh)
  assert {k: v.shape for k, v in batch.items()} == {
      'video': (8, config.data.num_frames, 224, 224, 3), 'boxes': (8, config.data.ava_max_boxes, 4),
      'box_mask': (8, config.data.ava_max_boxes), 'labels': (8, config.data.ava_max_boxes, 80)}
  step = trainer.make_train_step(model, ts.tx, ts.schedule, config, 80)
  state = {'params': ts.abstract_params, 'opt_state': ts.abstract_opt_state}
  with ts.context():
    _, metrics = jax.eval_shape(step, state, batch, jax.eval_shape(jax.random.key, 0), np.int32(1))
  assert set(metrics) == {'loss', 'grad_norm', 'lr'}


def test_base_config_has_no_detection():
  config = ml_collections.ConfigDict(config_lib.base_config())
  assert not detection.is_detection(config)
  assert 'detection' not in trainer.model_overrides(config, 10)


def _ava_data_config(root):
  """A data config reading a small synthetic AVA set written to `root` (4 videos, 2 of them val)."""
  synthetic_ava.write_dataset(str(root), num_videos=4, num_val_videos=2, seconds=7, fps=10, height=48, width=64)
  config = config_lib.base_config()
  d = config.data
  synthetic_ava.configure(d, str(root), fps=10)
  d.num_frames, d.sampling_rate, d.crop_size = 4, 2, 48
  d.random_resized_crop, d.train_jitter_scales, d.num_repeated_samples = False, (48, 56), 1
  d.randaugment, d.random_erasing_prob, d.mixup_prob, d.label_smoothing = False, 0.0, 0.0, 0.0
  d.ava_max_boxes, d.num_workers = 8, 0
  return config


def test_eval_writes_the_detections_csv_that_ava_eval_scores_the_same(tmp_path):
  """run_eval with an oracle predictor (the detections' own labels plus noise) over the real AVA eval iterator: the
  written CSV holds every real box x class and `python -m mvit_jax.ava_eval` on it prints the trainer's mAP."""
  config = _ava_data_config(tmp_path / 'data')
  d = config.data
  num_classes = sources.num_classes_from_config(d)
  mesh = sharding_lib.make_mesh(config.mesh)
  rng = np.random.default_rng(0)

  def oracle(params, batch):
    del params
    out = {k: np.asarray(batch[k]) for k in ('keyframe_index', 'original_boxes', 'box_mask', 'mask')}
    labels = np.asarray(batch['labels'])
    out['scores'] = (0.8 * labels + 0.2 * rng.uniform(size=labels.shape)).astype(np.float32)
    return out

  batches = ava.make_ava_eval_iterator(d, num_classes=num_classes, global_batch_size=8)  # 8 CPU test devices.
  metrics = detection.run_eval(oracle, None, batches, mesh, data_config=d, step=7, workdir=str(tmp_path))
  keyframes = ava.keyframe_list(d, 'eval')
  assert metrics['num_keyframes'] == len(keyframes)
  record = json.loads((tmp_path / 'metrics.json').read_text())
  assert record['mAP'] == metrics['mAP'] > 90
  assert set(record['per_class_AP']) <= set(synthetic_ava.ACTIONS)
  csv_path = tmp_path / 'eval' / 'detections_7.csv'
  rows = csv_path.read_text().splitlines()
  assert len(rows) == metrics['num_boxes'] * num_classes
  video, sec = rows[0].split(',')[:2]
  assert (video, int(sec)) == keyframes[0]

  result = subprocess.run(
      [sys.executable, '-m', 'mvit_jax.ava_eval', f'--labelmap={ava.annotation_path(d, "ava_label_map")}',
       f'--groundtruth={ava.annotation_path(d, "ava_val_gt")}', f'--detections={csv_path}',
       f'--exclusions={ava.annotation_path(d, "ava_exclusions")}'], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert abs(100 * report['mAP'] - metrics['mAP']) < 1e-9


def test_check_paths_names_the_missing_ava_file(tmp_path):
  config = _ava_data_config(tmp_path / 'data')
  config_lib.check_paths(config, str(tmp_path / 'work'))
  config.data.ava_val_gt = 'missing.csv'
  with pytest.raises(InputError, match=r"config\.data\.ava_val_gt: no such file .*missing\.csv"):
    config_lib.check_paths(config, str(tmp_path / 'work'))
  config.data.ava_frame_dir = str(tmp_path / 'nowhere')
  with pytest.raises(InputError, match=r'config\.data\.ava_frame_dir'):
    config_lib.check_paths(config, str(tmp_path / 'work'))


@pytest.mark.slow  # Initialises (jit) the detector; 109 s on the loaded 2-core VM.
def test_init_from_a_kinetics_classifier_keeps_the_trunk_and_gives_a_fresh_head(monkeypatch):
  """trainer.initial_params with init_from: the classifier's trunk (400 classes) loads into the 80-class detector
  unchanged; the head, another shape, stays freshly initialised."""
  config = config_lib.ava_recipe('mvit_tiny', num_frames=4, sampling_rate=2)
  config.data.crop_size, config.data.train_jitter_scales, config.data.ava_max_boxes = 32, (32, 40), 2
  config.half_precision = False
  classifier = models.create_model('mvit_tiny', num_classes=400, num_frames=4, input_size=32)
  kinetics = nn.unbox(classifier.init(jax.random.key(1), np.zeros((1, 4, 32, 32, 3), np.float32)))
  monkeypatch.setattr(models, 'load_pretrained', lambda path, **_: (classifier, kinetics))
  model, _ = trainer.make_model(config, 80)
  ts = trainer.TrainSetup.build(model, config, sharding_lib.make_mesh(config.mesh),
                                sharding_lib.rules_from_config(config.sharding_rules))
  params = jax.device_get(trainer.initial_params(ts, '/k400_workdir', jax.random.key(0)))
  source = jax.device_get(kinetics['params'])
  assert params['head']['kernel'].shape == (128, 80) and np.std(params['head']['kernel']) > 0
  for name in ('patch_embed', 'pos_embed', 'norm'):
    jax.tree.map(np.testing.assert_array_equal, params[name], source[name])
