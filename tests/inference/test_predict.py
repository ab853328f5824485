"""mvit_jax.predict and mvit_jax.inference on a tiny model: the evaluator's predictions, bad files, features."""
import csv
import json
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from mvit_jax.train import evaluate
from mvit_jax import inference
from mvit_jax.models import model_card
from mvit_jax.inference import predict
from mvit_jax.train import sharding as sharding_lib
from mvit_jax.train import trainer
from mvit_jax.data import device_preprocess
from mvit_jax.data import pipeline
from mvit_jax.data import sources
from mvit_jax.models import pretrained
from tests import testlib


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
  return testlib.write_tiny_dataset(str(tmp_path_factory.mktemp('tiny_data')))


@pytest.fixture(scope='module')
def workdir(data_root, tmp_path_factory):
  """A model folder as the trainer leaves it (seeded mvit_tiny params, the trainer's model card) with the
  evaluator's per-video predictions on the validation videos (eval/predictions_0.csv), as the trainer runs it."""
  config = testlib.tiny_train_config(data_root)
  model, overrides = trainer.make_model(config, num_classes=4)
  run = str(tmp_path_factory.mktemp('run'))
  params = nn.unbox(jax.jit(model.init)(jax.random.key(3), np.zeros((1, 4, 32, 32, 3), np.float32))['params'])
  pretrained.save_params(run, jax.device_get(params))
  model_card.write(run, model_card.ModelCard(
      config.model.name, overrides, tuple(sources.read_class_names(config.data.classes_file)),
      model_card.InputRecipe.from_data_config(config.data)))
  mesh = sharding_lib.make_mesh(config.mesh)
  predict_fn = evaluate.make_predict_fn(model, mesh, sharding_lib.rules_from_config(config.sharding_rules), config.data)
  batches = pipeline.make_eval_iterator(config.data, num_classes=4, global_batch_size=config.eval_batch_size)
  evaluate.run_eval(predict_fn, params, batches, mesh, multi_label=False, step=0, workdir=run)
  return run


@pytest.fixture(scope='module')
def predictor(workdir):
  return inference.load(workdir)


def test_top1_is_the_evaluators(workdir, data_root, predictor):
  """predict on the validation manifest gives the evaluator's per-video scores for the same 2 views."""
  with open(os.path.join(workdir, 'eval', 'predictions_0.csv')) as f:
    rows = list(csv.DictReader(f))
  records = sources.read_manifest(os.path.join(data_root, 'val.csv'), data_root)
  results = list(predict.predict(predictor, records))
  assert [r.path for r in results] == [r.path for r in records] and len(rows) == 4
  for result, row in zip(results, rows):
    top5 = [int(c) for c in row['top5_classes'].split(';')]
    assert int(np.argmax(result.scores)) == top5[0]
    np.testing.assert_allclose(result.scores[top5], [float(s) for s in row['top5_scores'].split(';')], atol=1e-5)


@pytest.mark.slow
def test_folder_with_bad_files_and_features(workdir, data_root, predictor, tmp_path):
  """The CLI: 2 good videos, a zero-byte file and a text file named .mp4 in a folder, and a missing path."""
  folder = tmp_path / 'videos'
  folder.mkdir()
  for name in ('class00_0000.mp4', 'class01_0000.mp4'):
    shutil.copy(os.path.join(data_root, 'videos', name), folder / name)
  (folder / 'empty.mp4').write_bytes(b'')
  (folder / 'notes.mp4').write_text('not a video\n')
  out, feats = tmp_path / 'out.jsonl', tmp_path / 'feats'
  cmd = [sys.executable, '-m', 'mvit_jax.predict', f'--model={workdir}', str(folder), str(tmp_path / 'missing.mp4'),
         '--topk=3', f'--output={out}', f'--features={feats}', '--per_view', '--stages']
  result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'XLA_FLAGS': ''})
  assert result.returncode == 0, result.stderr
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  by_name = {os.path.basename(line['video']): line for line in lines}
  assert len(lines) == 5
  names = model_card.read(workdir).classes
  for name in ('class00_0000.mp4', 'class01_0000.mp4'):
    top = by_name[name]['top_k']
    assert len(top) == 3 and [t['class'] for t in top] == [names[t['index']] for t in top]
    assert sum(t['probability'] for t in top) <= 1 + 1e-6 and by_name[name]['views'] == 2
    assert os.path.basename(by_name[name]['video']) in result.stdout
  assert by_name['empty.mp4']['error'] == 'empty file (0 bytes)'
  assert by_name['notes.mp4']['error'].startswith('cannot open')
  assert by_name['missing.mp4']['error'] == 'missing file'
  for name in ('empty.mp4', 'notes.mp4', 'missing.mp4'):
    assert f'{name}: skipped: {by_name[name]["error"]}' in result.stderr

  # The embedding is the model's pre-logit output for the same views, averaged (per view with --per_view).
  index = [json.loads(line) for line in (feats / 'index.jsonl').read_text().splitlines()]
  assert [os.path.basename(e['video']) for e in index] == ['class00_0000.mp4', 'class01_0000.mp4']
  views = predictor.preprocess_video(index[0]['video'])
  x = device_preprocess.normalize(views, predictor.recipe.mean, predictor.recipe.std)
  module, variables = pretrained.load_pretrained(workdir)
  expected = jax.jit(lambda v, x: module.apply(v, x, method='features'))(variables, x)
  np.testing.assert_allclose(np.load(feats / index[0]['per_view']), expected['pre_logits'], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.load(feats / index[0]['embedding']), np.mean(expected['pre_logits'], axis=0),
                             atol=1e-5, rtol=1e-5)
  with np.load(feats / index[0]['stages']) as stages:
    assert sorted(stages) == ['stage1', 'stage2', 'stage3']
    np.testing.assert_allclose(stages['stage3'], expected['stage3'], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_nothing_predicted_is_exit_status_1(workdir, tmp_path):
  (tmp_path / 'empty.mp4').write_bytes(b'')
  cmd = [sys.executable, '-m', 'mvit_jax.predict', f'--model={workdir}', str(tmp_path / 'empty.mp4')]
  result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'XLA_FLAGS': ''})
  assert result.returncode == 1 and 'empty.mp4: skipped: empty file (0 bytes)' in result.stderr


def test_in_memory_clip(predictor):
  """preprocess_clip samples an in-memory clip as a file is sampled."""
  frames = np.arange(30, dtype=np.uint8)[:, None, None, None] * np.ones((1, 48, 64, 3), np.uint8)
  views = predictor.preprocess_clip(frames, fps=10.0)
  assert views.shape == (2, 4, 32, 32, 3)
  # 2 clips of 8 frames (4 frames 2 apart at 10 fps) over 30: starts 0 and 22 (the evaluator's offset sampling).
  np.testing.assert_array_equal(views[:, :, 0, 0, 0], [[0, 2, 4, 7], [22, 24, 26, 29]])
  probabilities = predictor.probabilities(views)
  assert probabilities.shape == (4,) and abs(probabilities.sum() - 1) < 1e-6


def test_image_files_are_one_frame_clips(tmp_path):
  """Image models read image files: Pillow decode, short side resized, centre crop."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.zeros((40, 60, 3), np.uint8)
  image[:, 25:35] = 255  # A bright centre band that the 32x32 centre crop of the 32x48 resize keeps whole.
  Image.fromarray(image).save(tmp_path / 'x.png')
  recipe = model_card.InputRecipe(num_frames=1, sampling_rate=1, target_fps=30.0, short_side=32, crop_size=32,
                                  mean=(0.5,) * 3, std=(0.25,) * 3)
  source = inference.ImageSource([sources.VideoRecord(str(tmp_path / 'x.png'), 0)])
  views = inference.eval_views(source, 0, inference.data_config(recipe))
  assert views.shape == (1, 1, 32, 32, 3)
  bright = np.flatnonzero(views[0, 0, 16, :, 0] > 128)  # Columns 25-34 of 60 -> 20-27 of 48 -> 12-19 of the crop.
  assert 11 <= bright.min() <= 13 and 18 <= bright.max() <= 20
