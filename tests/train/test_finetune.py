"""docs/finetune.md at tiny scale: a class-folder data set of synthetic videos, a converted torchvision-format
checkpoint, `experiments/finetune.py` with train_only=head (every other parameter bit-identical afterwards) and
with all, then predict with --visualize; and the one-line errors of a fine-tune without a pretrained model."""
import importlib.util
import json
import os
import subprocess
import sys

import av
import flax
import numpy as np
from PIL import Image
import pytest

from mvit_jax import models
from mvit_jax.data import render
from mvit_jax.data import synthetic
from mvit_jax.system.errors import InputError
from mvit_jax.train import config as config_lib
from tests import testlib

CLASSES = synthetic.CLASS_NAMES[:3]

# The tutorial's train command at tiny scale: steps, batch and views for 2 CPU cores (the card gives the input).
TINY = ('--config.num_train_steps=3', '--config.batch_size=4', '--config.eval_batch_size=4',
        '--config.optimizer.warmup_steps=1', '--config.data.test_num_clips=1', '--config.data.num_workers=0',
        '--config.half_precision=False', '--config.model.pool_impl=conv', '--config.compilation_cache_dir=')


def write_class_folders(root: str, videos_per_class: int = 4) -> str:
  """ROOT/<class>/<i>.mp4: synthetic motion videos, 16 frames of 32x32 at 10 fps."""
  rng = np.random.default_rng(0)
  for label, name in enumerate(CLASSES):
    os.makedirs(os.path.join(root, name))
    for i in range(videos_per_class):
      frames = synthetic.motion_frames(label, rng, num_frames=16, height=32, width=32, speed=2.0)
      synthetic.write_video_file(os.path.join(root, name, f'{i}.mp4'), frames, fps=10, gop=8)
  return root


def _run(args, cache_dir):
  return subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True, cwd=testlib.REPO,
                        env=testlib.subprocess_env(str(cache_dir)))


def _train(converted, root, workdir, cache_dir, *extra):
  return _run(['mvit_jax.main', f'--config=experiments/finetune.py:{converted}', f'--workdir={workdir}',
               f'--config.data.root={root}', *TINY, *extra], cache_dir)


def _flat(path):
  return flax.traverse_util.flatten_dict(models.load_pretrained(str(path), scan_blocks=False)[1]['params'], sep='/')


@pytest.fixture(scope='module')
def tutorial(tmp_path_factory):
  """(converted folder, data root, cache dir): the tutorial's inputs, the checkpoint converted by the CLI."""
  import torch  # pylint: disable=g-import-not-at-top  (the converter's input format)
  tmp = tmp_path_factory.mktemp('finetune')
  root = write_class_folders(str(tmp / 'my_videos'))
  source = tmp / 'tiny_torchvision.pth'
  torch.save(testlib.tiny_torchvision(num_classes=len(CLASSES)).state_dict(), source)
  result = testlib.run_convert_cli('torchvision', 'mvit_tiny', source, tmp / 'converted')
  assert result.returncode == 0, result.stderr
  return tmp / 'converted', root, tmp / 'cache'


@pytest.mark.slow
def test_head_only_changes_only_the_head_then_all_then_predict(tutorial, tmp_path):
  converted, root, cache = tutorial
  before = _flat(converted)

  result = _train(converted, root, tmp_path / 'head', cache, '--config.train_only=head')
  assert result.returncode == 0, result.stderr[-3000:]
  # Resuming restores the optimizer state that holds moments for the head alone.
  result = _train(converted, root, tmp_path / 'head', cache, '--config.train_only=head',
                  '--config.num_train_steps=4')
  assert result.returncode == 0 and 'Resumed from step 3' in result.stderr, result.stderr[-3000:]
  after = _flat(tmp_path / 'head')
  assert after.keys() == before.keys()  # The checkpoint holds every parameter.
  for path, value in before.items():
    if path.startswith('head/'):
      assert not np.array_equal(after[path], value), path
    else:
      np.testing.assert_array_equal(after[path].view(np.uint32), value.view(np.uint32), err_msg=path)

  result = _train(converted, root, tmp_path / 'all', cache)
  assert result.returncode == 0, result.stderr[-3000:]
  after = _flat(tmp_path / 'all')
  changed = {path.split('/')[0] for path, value in before.items() if not np.array_equal(after[path], value)}
  assert {'patch_embed', 'pos_embed', 'blocks_0', 'blocks_3', 'norm', 'head'} <= changed

  video = os.path.join(root, CLASSES[0], '0.mp4')
  result = _run(['mvit_jax.predict', f'--model={tmp_path / "all"}', f'--output={tmp_path / "p.jsonl"}',
                 f'--visualize={tmp_path / "vis"}', video], cache)
  assert result.returncode == 0, result.stderr[-3000:]
  (line,) = (json.loads(x) for x in (tmp_path / 'p.jsonl').read_text().splitlines())
  assert {t['class'] for t in line['top_k']} == set(CLASSES)  # The class folders' names, from the model card.
  num_frames = json.loads((tmp_path / 'all' / 'model.json').read_text())['input']['num_frames']
  with av.open(str(tmp_path / 'vis' / line['visualization']['mp4'])) as container:
    assert sum(1 for _ in container.decode(video=0)) == num_frames
  heat_colours = _sheet_heat_colours(tmp_path / 'vis' / line['visualization']['sheet'])
  assert np.ptp(heat_colours, axis=(0, 1)).max() > 60  # Not one colour: the heatmap varies over the frame.


def _sheet_heat_colours(path) -> np.ndarray:
  """The JET colours of the first frame's heatmap, recovered from the contact sheet's two rows (sampled frame above,
  render.overlay_heatmap's 50/50 blend below) of 32 px frames shown at 128 px (int (128, 128, 3), +-2 levels)."""
  with Image.open(path) as image:
    sheet = np.asarray(image.convert('RGB')).astype(int)
  cell, top = 128, render.TITLE_HEIGHT
  frame = sheet[top:top + cell, :cell]
  row = top + cell + render.GAP + render.TITLE_HEIGHT
  overlay = sheet[row:row + cell, :cell]
  return 2 * overlay - frame


def test_fine_tune_needs_a_model_card_in_init_from(tmp_path):
  spec = importlib.util.spec_from_file_location('finetune', os.path.join(testlib.REPO, 'experiments', 'finetune.py'))
  finetune = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(finetune)
  config = finetune.get_config()
  config.data.root = write_class_folders(str(tmp_path / 'videos'), videos_per_class=2)
  with pytest.raises(InputError, match=r'^config\.init_from is empty: train_only and layer_decay fine-tune'):
    config_lib.check_paths(config, str(tmp_path / 'run'))
  config.init_from = str(tmp_path / 'videos')
  with pytest.raises(InputError, match=r"^config\.init_from: '.*videos' holds no model\.json"):
    config_lib.check_paths(config, str(tmp_path / 'run'))


@pytest.mark.slow
def test_pattern_matching_nothing_is_one_line(tutorial, tmp_path):
  converted, root, cache = tutorial
  result = _train(converted, root, tmp_path, cache, '--config.train_only=head,blocks_7')
  assert result.returncode == 2, result.stderr[-3000:]
  assert "config.train_only: pattern 'blocks_7' matches no parameter" in result.stderr.strip().splitlines()[-1]
