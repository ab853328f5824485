"""The trainer's detection pieces (mvit_jax.train.detection): the masked loss against a hand computation, the
collection of real boxes from eval batches, the AVA config checks and recipe, and every AVA experiment's detector
built abstractly with its train step's batch."""
import glob
import importlib.util
import os

import ml_collections
import numpy as np
import pytest

from mvit_jax.train import config as config_lib
from mvit_jax.train import detection
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


def test_base_config_has_no_detection():
  config = ml_collections.ConfigDict(config_lib.base_config())
  assert not detection.is_detection(config)
  assert 'detection' not in trainer.model_overrides(config, 10)
