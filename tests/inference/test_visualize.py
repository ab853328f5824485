"""predict --visualize and Grad-CAM (mvit_jax.inference.explain) on tiny models and synthetic videos."""
import json
import os
import subprocess
import sys

import av
import flax.linen as nn
import jax
import numpy as np
import optax
from PIL import Image
import pytest

from mvit_jax import inference
from mvit_jax.data import device_preprocess
from mvit_jax.data import render
from mvit_jax.data import sources
from mvit_jax.inference import explain
from mvit_jax.inference import predict
from mvit_jax.inference import visualize
from mvit_jax.models import layout
from mvit_jax.models import model_card
from mvit_jax.models import pretrained
from mvit_jax.models.variants import create_model
from mvit_jax.system.errors import InputError
from mvit_jax.train import trainer
from tests import testlib


def write_model(folder: str, data_root: str, seed: int = 3, **overrides) -> str:
  """A model folder of seeded mvit_tiny params on (4, 32, 32, 3) clips (testlib.tiny_train_config), or with
  `overrides` of that config."""
  config = testlib.tiny_train_config(data_root, **overrides)
  model, model_overrides = trainer.make_model(config, num_classes=4)
  d = config.data
  params = nn.unbox(jax.jit(model.init)(jax.random.key(seed), np.zeros((1, d.num_frames, d.crop_size, d.crop_size, 3),
                                                                        np.float32))['params'])
  pretrained.save_params(folder, jax.device_get(params))
  model_card.write(folder, model_card.ModelCard(
      config.model.name, model_overrides, tuple(sources.read_class_names(d.classes_file)),
      model_card.InputRecipe.from_data_config(d)))
  return folder


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
  return testlib.write_tiny_dataset(str(tmp_path_factory.mktemp('tiny_data')))


@pytest.fixture(scope='module')
def model_dir(data_root, tmp_path_factory):
  return write_model(str(tmp_path_factory.mktemp('model')), data_root)


def decoded_frames(path: str) -> np.ndarray:
  with av.open(path) as container:
    return np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])


def test_visualize_writes_mp4_and_sheet(model_dir, data_root, tmp_path):
  """Per video: an mp4 with the clip's frames (enlarged, heatmap over them, top-5 beside) and a contact sheet; the
  heatmap is in [0, 1], peaks at 1 and varies over the frame."""
  predictor = inference.load(model_dir)
  grad_cam = explain.GradCam(predictor)
  records = [sources.VideoRecord(os.path.join(data_root, 'videos', f'class0{k}_0000.mp4'), k) for k in (0, 1)]
  out = str(tmp_path / 'vis')
  os.makedirs(out)
  for number, result in enumerate(predict.predict(predictor, records, keep_first_view=True)):
    assert result.first_view.shape == (4, 32, 32, 3)
    top = predict.top_k(result, predictor, 5)
    heat = grad_cam(result.first_view[None], [top[0]['index']])[0]
    assert heat.shape == (4, 32, 32) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    assert heat.std() > 0.05 and np.ptp(heat[0]) > 0.2
    names = predict.write_visualization(out, number, result, predictor, grad_cam, top, None)
    assert names == {'mp4': f'00000{number}_class0{number}_0000.mp4', 'sheet': f'00000{number}_class0{number}_0000.png'}
    frames = decoded_frames(os.path.join(out, names['mp4']))
    big = 32 * 7  # 32 px frames enlarged 7x to reach visualize.FRAME_SIZE.
    assert len(frames) == 4 and frames.shape[1] == big
    # The left part is the frame under the heatmap (H.264 at crf 18: within a few levels).
    expected = render.enlarge(render.overlay_heatmap(result.first_view, heat), visualize.FRAME_SIZE)
    assert np.abs(frames[:, :, :big].astype(int) - expected).mean() < 4
    with Image.open(os.path.join(out, names['sheet'])) as image:
      sheet = np.asarray(image.convert('RGB'))
    assert sheet.shape[1] >= 4 * (112 + render.GAP)  # 4 frames of 112 px in a row.
    assert sheet.shape[0] >= 2 * (render.TITLE_HEIGHT + 112 + render.GAP) + 7 * render.TITLE_HEIGHT


def test_explain_class_names_and_indices():
  names = ('moving_up', 'moving_down', 'moving_sideways', 'standing_still')
  assert visualize.explain_class('moving_down', names, 4) == 1
  assert visualize.explain_class('3', names, 4) == 3
  assert visualize.explain_class('2', None, 4) == 2
  with pytest.raises(InputError, match=r"^--explain_class 'moving_dwn': not a class name or an index below 4 "
                                       r"\(did you mean 'moving_down'\?\)$"):
    visualize.explain_class('moving_dwn', names, 4)
  with pytest.raises(InputError, match='index below 4'):
    visualize.explain_class('4', names, 4)


def test_a_model_without_a_spatial_grid_is_one_line(data_root, tmp_path):
  """8x8 frames: the tokens entering mvit_tiny's last block are a 2x1x1 grid."""
  folder = write_model(str(tmp_path / 'model'), data_root, **{'data.crop_size': 8, 'data.test_short_side': 8,
                                                                'data.train_jitter_scales': (8, 9)})
  with pytest.raises(InputError, match=r'^Grad-CAM needs a spatial token grid: mvit_tiny on 8x8 frames has a '
                                       r'2x1x1 grid entering its last block$'):
    explain.GradCam(inference.load(folder))


@pytest.mark.slow
@pytest.mark.parametrize('name,frames,size', [('mvit_s_16x4', 4, 64), ('mvitv2_s_16x4', 4, 64),
                                              ('mvitv2_tiny', 1, 64), ('mvitv2_small_cls', 1, 64)])
def test_every_variant_scanned_or_not(name, frames, size):
  """v1 and v2, video and image, class token or token mean: the heatmap is the same from scanned parameters."""
  maps, params = [], None
  for scan in (False, True):
    module = create_model(name, num_frames=frames, input_size=size, scan_blocks=scan, num_classes=5)
    if params is None:
      params = nn.unbox(jax.jit(module.init)(jax.random.key(0), np.zeros((1, frames, size, size, 3)))['params'])
    params = layout.to_block_layout(params, module.config)
    card = model_card.ModelCard(name, {}, None, model_card.InputRecipe(
        num_frames=frames, sampling_rate=1, target_fps=30.0, short_side=size, crop_size=size, mean=(0.45,) * 3,
        std=(0.225,) * 3))
    grad_cam = explain.GradCam(inference.Predictor(module, {'params': params}, card))
    views = np.random.default_rng(0).integers(0, 256, (2, frames, size, size, 3), np.uint8)
    maps.append(grad_cam(views, [0, 3]))
  assert maps[0].shape == (2, frames, size, size) and np.ptp(maps[0], axis=(1, 2, 3)) == pytest.approx(1.0)
  np.testing.assert_allclose(maps[0], maps[1], atol=1e-4)


@pytest.mark.slow
def test_predict_cli_visualize(model_dir, data_root, tmp_path):
  """The command: --visualize writes the files the JSON line names; a bad --explain_class is one line, exit 2."""
  out, vis = tmp_path / 'out.jsonl', tmp_path / 'vis'
  video = os.path.join(data_root, 'videos', 'class02_0000.mp4')
  cmd = [sys.executable, '-m', 'mvit_jax.predict', f'--model={model_dir}', video, f'--output={out}',
         f'--visualize={vis}', '--explain_class=moving_sideways']
  result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'XLA_FLAGS': ''})
  assert result.returncode == 0, result.stderr
  line = json.loads(out.read_text())
  assert line['visualization'] == {'mp4': '000000_class02_0000.mp4', 'sheet': '000000_class02_0000.png'}
  assert len(decoded_frames(str(vis / line['visualization']['mp4']))) == 4
  assert (vis / line['visualization']['sheet']).stat().st_size > 0
  result = subprocess.run(cmd[:-1] + ['--explain_class=jumping'], capture_output=True, text=True,
                          env={**os.environ, 'XLA_FLAGS': ''})
  assert result.returncode != 0 and result.stderr.strip().splitlines()[-1].endswith(
      "--explain_class 'jumping': not a class name or an index below 4")


def moving_square_clips(rng: np.random.Generator, n: int, frames: int = 4, size: int = 32):
  """uint8 (n, frames, size, size, 3) clips of static noise (levels 0-159) where, in the top-left quadrant only, a
  6 px white square moves 3 px per frame left (label 0) or right (label 1), wrapping around the quadrant."""
  labels = rng.integers(0, 2, n)
  quadrant = size // 2
  clips = np.repeat(rng.integers(0, 160, (n, 1, size, size, 3)), frames, axis=1).astype(np.uint8)
  for i in range(n):
    y, x = rng.integers(0, quadrant - 6), rng.integers(0, quadrant)
    for t in range(frames):
      columns = (x + (3 if labels[i] else -3) * t + np.arange(6)) % quadrant
      clips[i, t, y:y + 6, columns] = 255
  return clips, labels


@pytest.mark.slow
def test_grad_cam_finds_the_moving_region():
  """mvit_tiny trained on moving_square_clips (100 steps of 32 clips, 100% held-out accuracy): the heatmap's mass
  inside the moving quadrant (a quarter of the frame) is on average above 1.5x its area share, and for most clips
  that quadrant holds more mass than any other (chance: a quarter of the clips). Measured: mean 0.48 of the mass,
  most mass in 69% of the clips."""
  frames, size, mean, std = 4, 32, (0.45,) * 3, (0.225,) * 3
  module = create_model('mvit_tiny', num_frames=frames, input_size=size, num_classes=2, drop_path_rate=0.0)
  params = nn.unbox(jax.jit(module.init)(jax.random.key(0), np.zeros((1, frames, size, size, 3)))['params'])
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(1e-4, 2e-3, 20, 100, 1e-5), weight_decay=0.05)

  @jax.jit
  def step(params, state, clips, labels):
    def loss(p):
      logits = module.apply({'params': p}, device_preprocess.normalize(clips, mean, std))
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  rng, state = np.random.default_rng(0), tx.init(params)
  for _ in range(100):
    params, state = step(params, state, *moving_square_clips(rng, 32, frames, size))
  card = model_card.ModelCard('mvit_tiny', {}, None, model_card.InputRecipe(
      num_frames=frames, sampling_rate=1, target_fps=30.0, short_side=size, crop_size=size, mean=mean, std=std))
  predictor = inference.Predictor(module, {'params': params}, card)
  clips, labels = moving_square_clips(np.random.default_rng(1), 64, frames, size)
  assert (predictor.logits(clips).argmax(axis=1) == labels).mean() >= 0.95
  heat = explain.GradCam(predictor)(clips, labels)
  per_quadrant = heat.reshape(64, frames, 2, size // 2, 2, size // 2).sum(axis=(1, 3, 5)).reshape(64, 4)
  share = per_quadrant[:, 0] / np.maximum(per_quadrant.sum(axis=1), 1e-9)
  assert share.mean() > 1.5 * 0.25
  assert (per_quadrant.argmax(axis=1) == 0).mean() > 0.5
