"""The trainer end to end on a tiny dataset: checkpoints, TensorBoard events, metrics.json, predictions, eval mode,
NaN stop, config errors before compilation."""
import glob
import json
import os

import jax
import numpy as np
import pytest

from mvit_jax.models import pretrained
from mvit_jax.train import checkpointing
from mvit_jax.train import config as config_lib
from mvit_jax.train import metrics as metrics_lib
from mvit_jax.models import model_card
from mvit_jax import models
from mvit_jax.train import sharding as sharding_lib
from mvit_jax.train import trainer
from mvit_jax.data import sources
from tests import testlib


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
  return testlib.write_tiny_dataset(str(tmp_path_factory.mktemp('tiny_data')))


def test_train_then_eval_mode(data_root, tmp_path):
  workdir = str(tmp_path / 'run')
  config = testlib.tiny_train_config(data_root, eval_every_steps=0, num_train_steps=2)
  result = trainer.train_and_evaluate(config, workdir)
  assert set(result) >= {'top1', 'top5'} and result['num_videos'] == 4 and result['views_per_video'] == 2
  assert glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(workdir)
  events.Reload()  # The eval's pictures and table (their contents: tests/train/test_eval_report.py).
  assert {'eval/clips', 'eval/confusion_matrix', 'eval/per_class_accuracy', 'eval/top1'} <= set(events.Tags()['tensors'])
  assert checkpointing.latest_step(workdir) == 2
  with open(os.path.join(workdir, 'metrics.json')) as f:
    saved = json.load(f)
  assert saved['step'] == 2 and saved['top1'] == result['top1'] and saved['top5'] == result['top5']
  assert np.sum(saved['confusion_matrix']) == 4 and len(saved['per_class_accuracy']) == 4
  with open(os.path.join(workdir, 'eval', 'predictions_2.csv')) as f:
    assert len(f.read().splitlines()) == 1 + 4
  card = model_card.read(workdir)  # The model card: what load_pretrained and mvit_jax.predict read.
  assert card.name == 'mvit_tiny' and card.classes == tuple(sources.read_class_names(config.data.classes_file))
  assert card.input == model_card.InputRecipe.from_data_config(config.data) and card.input.num_clips == 2

  # Eval mode on the newest checkpoint (resuming is covered with real processes in test_checkpoint_resume.py).
  config = testlib.tiny_train_config(data_root, mode='eval')
  again = trainer.train_and_evaluate(config, workdir)
  assert again['top1'] == result['top1'] and again['top5'] == result['top5']

  params = pretrained.latest_params(workdir)
  assert params['head']['kernel'].shape == (128, 4)
  module, variables = models.load_pretrained(workdir)  # model.json + the latest checkpoint's params.
  assert module.config.num_classes == 4 and module.config.input_size == 32
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables['params']), jax.device_get(params))

  # Fine-tune initialisation from this workdir: 6 classes and 48x48 crops -> fresh head, interpolated spatial
  # position table (8x8 -> 12x12 tokens), every other parameter copied.
  config = testlib.tiny_train_config(data_root, init_from=workdir)
  config.model.num_classes = 6
  config.data.crop_size = 48
  model, _ = trainer.make_model(config, num_classes=6)
  mesh = sharding_lib.make_mesh(config.mesh)
  ts = trainer.TrainSetup.build(model, config, mesh, sharding_lib.rules_from_config(config.sharding_rules))
  tuned = jax.device_get(trainer.initial_params(ts, config.init_from, jax.random.key(5)))
  assert tuned['head']['kernel'].shape == (128, 6)
  assert tuned['pos_embed']['pos_embed_spatial'].shape == (144, 32) != params['pos_embed']['pos_embed_spatial'].shape
  jax.tree.map(np.testing.assert_array_equal, tuned['blocks_2'], jax.device_get(params['blocks_2']))
  np.testing.assert_array_equal(tuned['pos_embed']['pos_embed_temporal'],
                                jax.device_get(params['pos_embed']['pos_embed_temporal']))


def test_nan_stops_before_saving_bad_state(data_root, tmp_path):
  workdir = str(tmp_path / 'nan')
  # SGD with an absurd learning rate: step 1 computes a finite loss from the initial params, then the params
  # overflow and step 2's loss is NaN/Inf. The check runs before every save, so only step 1 is checkpointed.
  config = testlib.tiny_train_config(data_root, checkpoint_every_steps=1, log_every_steps=10)
  config.optimizer.name = 'sgd'
  config.optimizer.base_lr = 1e30
  config.optimizer.warmup_steps = 0
  config.optimizer.grad_clip_norm = 0.0
  with pytest.raises(metrics_lib.NonFiniteError, match='at step 2'):
    trainer.train_and_evaluate(config, workdir)
  assert checkpointing.latest_step(workdir) == 1
  params = pretrained.latest_params(workdir)
  assert all(bool(jax.numpy.isfinite(p).all()) for p in jax.tree.leaves(params))


def test_bad_config_fails_before_compiling(data_root, tmp_path, monkeypatch):
  def no_jit(*args, **kwargs):
    raise AssertionError('jax.jit was called before the config error')

  monkeypatch.setattr(jax, 'jit', no_jit)
  config = testlib.tiny_train_config(data_root)
  config.optimizer.unlock()
  config.optimizer.base_lr_typo = 1.0
  with pytest.raises(config_lib.ConfigError, match=r"'config\.optimizer\.base_lr_typo'"):
    trainer.train_and_evaluate(config, str(tmp_path / 'bad'))
  config = testlib.tiny_train_config(data_root).to_dict()
  config['data']['num_frames'] = '16'
  with pytest.raises(config_lib.ConfigError, match=r"'config\.data\.num_frames' has type str"):
    trainer.train_and_evaluate(config_lib.ml_collections.ConfigDict(config), str(tmp_path / 'bad'))
  assert not os.path.exists(str(tmp_path / 'bad'))
