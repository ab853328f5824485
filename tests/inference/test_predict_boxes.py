"""predict --boxes (mvit_jax.inference.detect) on a tiny random detector and a synthetic video: per-box scores equal
the model's on a clip and boxes made here independently, the AVA CSV, the box visualisation, one-line errors."""
import csv
import functools
import json
import os
import shutil
import subprocess
import sys

import av
import cv2
import flax.linen as nn
import jax
import numpy as np
import pytest

from mvit_jax import inference
from mvit_jax.data import ava
from mvit_jax.data import ava_transforms
from mvit_jax.data import config as data_config_lib
from mvit_jax.data import decode
from mvit_jax.data import render
from mvit_jax.data import synthetic
from mvit_jax.data import synthetic_ava
from mvit_jax.inference import detect
from mvit_jax.inference import visualize
from mvit_jax.models import model_card
from mvit_jax.models import pretrained
from mvit_jax.models.variants import create_model
from mvit_jax.system.errors import InputError
from mvit_jax.train import ava_eval
from mvit_jax.train import config as config_lib
from mvit_jax.train import detection
from mvit_jax.train import sharding as sharding_lib

ACTIONS = ('walk', 'id 2', 'jump', 'wave', 'run')  # The trainer names label ids the label map lacks 'id N'.
FRAMES, TAU, FPS, CROP = 4, 2, 10.0, 64
HEIGHT, WIDTH, VIDEO_FRAMES = 64, 96, 40  # Short side = the crop: the view is a crop of the decoded pixels.
MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
# Keyframe second -> boxes (x1, y1, x2, y2) normalised to the 64 x 96 frame. The centre crop is columns 16-79:
# box 1 is half outside it, box 2 wholly outside.
BOXES = {900: [[0.25, 0.1, 0.5, 0.9], [0.0, 0.2, 1 / 3, 0.6], [0.0, 0.0, 0.125, 0.5]],
         902: [[0.3, 0.3, 0.7, 1.0]]}
START_SEC = 900  # The CSV's seconds at the video's time 0, as AVA's 15-minute cuts.


def write_detector(folder: str, test_view: str = 'center', seed: int = 0) -> str:
  """A model folder of a seeded mvit_tiny detector on (4, 64, 64, 3) clips (weights N(0, 0.1), norms' scales 1,
  biases 0), its card made from an AVA data config as the trainer makes it."""
  data = data_config_lib.default_data_config()
  data.dataset_kind, data.num_frames, data.sampling_rate, data.ava_fps = 'ava', FRAMES, TAU, FPS
  data.crop_size, data.ava_test_view, data.mean, data.std = CROP, test_view, MEAN, STD
  overrides = {'detection': True, 'num_classes': len(ACTIONS), 'num_frames': FRAMES, 'input_size': CROP,
               'pool_impl': 'conv'}
  module = create_model('mvit_tiny', **overrides)
  shapes = jax.eval_shape(lambda: nn.unbox(module.init(jax.random.key(0), np.zeros((1, FRAMES, CROP, CROP, 3))))
                          ['params'])
  rng = np.random.default_rng(seed)  # Drawn here rather than by a compiled init: the fast tests stay fast.

  def draw(path, leaf):
    if path[-1].key == 'scale':
      return np.ones(leaf.shape, np.float32)
    return (rng.normal(0.0, 0.1, leaf.shape) if path[-1].key != 'bias' else np.zeros(leaf.shape)).astype(np.float32)

  pretrained.save_params(folder, jax.tree_util.tree_map_with_path(draw, shapes))
  model_card.write(folder, model_card.ModelCard('mvit_tiny', overrides, ACTIONS,
                                                model_card.InputRecipe.from_data_config(data)))
  return folder


def write_video(path: str) -> str:
  """40 frames at 10 fps of 8 px blocks of noise, new blocks every frame (a wrong frame changes the scores)."""
  rng = np.random.default_rng(0)
  blocks = rng.integers(0, 256, (VIDEO_FRAMES, HEIGHT // 8, WIDTH // 8, 3), np.uint8)
  synthetic.write_video(path, blocks.repeat(8, axis=1).repeat(8, axis=2), fps=FPS)
  return path


def write_boxes(path: str, boxes=None, video_id: str = 'clip') -> str:
  """An AVA-format CSV: each box twice (two actions, as AVA's files list a box per action), with the score column."""
  lines = []
  for sec, secs_boxes in (boxes or BOXES).items():
    for box in secs_boxes:
      lines += [f'{video_id},{sec},{",".join(f"{x:.6f}" for x in box)},{action},0.9' for action in (1, 3)]
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  return path


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp('boxes')
  return {'center': write_detector(str(root / 'center')), 'video': write_video(str(root / 'clip.mp4')),
          'boxes': write_boxes(str(root / 'boxes.csv')), 'root': root}


@functools.cache
def load_predictor(model_dir: str, test_view: str | None = None) -> inference.Predictor:
  """One predictor per model folder and view, so the tests share its compiled forward pass."""
  return inference.load(model_dir, test_view=test_view)


def expected_scores(model_dir: str, view: str, video: str, sec: int, boxes) -> np.ndarray:
  """The detector applied directly to the keyframe's clip (frames 10 s - 4, - 2, + 0, + 2 of the decoded video,
  clamped; the card's view cut by hand) and its boxes (moved into the view by hand): sigmoid scores (n, K)."""
  with av.open(video) as container:  # Every frame, in RGB by the BT.601 formula as the package's decoder does it.
    decoded = np.stack([cv2.cvtColor(f.to_ndarray(format='yuv420p'), cv2.COLOR_YUV2RGB_I420)
                        for f in container.decode(video=0)])
  center = round((sec - START_SEC) * FPS)
  clip = decoded[np.clip(center + TAU * (np.arange(FRAMES) - FRAMES // 2), 0, len(decoded) - 1)]
  boxes = np.asarray(boxes, np.float64)
  if view == 'center':
    clip = clip[:, :, 16:80]  # ceil((96 - 64) / 2) = 16.
    pixels = boxes * [WIDTH, HEIGHT, WIDTH, HEIGHT] - [16, 0, 16, 0]
    boxes = np.clip(pixels, 0, CROP) / CROP
  x = (clip[None] / 255.0 - np.array(MEAN)) / np.array(STD)
  logits = direct_forward(model_dir)(x.astype(np.float32), boxes[None].astype(np.float32))
  return np.asarray(jax.nn.sigmoid(logits[0]))


@functools.cache
def direct_forward(model_dir: str):
  """(x, boxes) -> logits of the model folder's module and parameters, jitted."""
  module, variables = pretrained.load_pretrained(model_dir)
  return jax.jit(lambda x, boxes: module.apply(variables, x, boxes, train=False))


@pytest.mark.parametrize('view', ['center', pytest.param('full', marks=pytest.mark.slow)])
def test_scores_are_the_models_on_the_same_clip_and_boxes(files, view):
  """The card's centre view, and the full frame asked for with test_view."""
  predictor = load_predictor(files['center'], None if view == 'center' else view)
  assert predictor.detector and predictor.recipe.test_view == view
  keyframes = detect.read_boxes_csv(files['boxes'])['clip']
  results = list(detect.predict_video(predictor, files['video'], keyframes, start_sec=START_SEC))
  assert [r.sec for r in results] == [900, 902] and not any(r.error for r in results)
  for result in results:
    np.testing.assert_allclose(result.boxes, np.float32(BOXES[result.sec]), atol=1e-6)
    assert result.scores.shape == (len(BOXES[result.sec]), len(ACTIONS))
    np.testing.assert_allclose(result.scores, expected_scores(files['center'], view, files['video'], result.sec,
                                                              BOXES[result.sec]), atol=1e-5)
  visible = results[0].visible
  np.testing.assert_allclose(visible, [1.0, 0.5, 0.0] if view == 'center' else [1.0, 1.0, 1.0], atol=1e-6)
  assert np.ptp(results[0].scores[:2], axis=0).max() > 1e-4  # Boxes get their own scores.


def test_visualization_draws_the_boxes(files, tmp_path):
  """The mp4 holds every keyframe's clip (4 frames each), enlarged, boxes outlined; the contact sheet is written."""
  predictor = load_predictor(files['center'])
  keyframes = detect.read_boxes_csv(files['boxes'])['clip']
  drawing = visualize.DetectionVideo(str(tmp_path), 0, files['video'], ACTIONS, 5.0)
  results = list(detect.predict_video(predictor, files['video'], keyframes, start_sec=START_SEC, keep_clips=True))
  for result in results:
    drawing.add(result)
  assert drawing.close() == {'mp4': '000000_clip.mp4', 'sheet': '000000_clip.png'}
  with av.open(str(tmp_path / '000000_clip.mp4')) as container:
    frames = np.stack([f.to_ndarray(format='rgb24') for f in container.decode(video=0)])
  big = render.enlarge(results[0].clip, visualize.FRAME_SIZE)  # 64 px enlarged 4x to 256.
  assert frames.shape == (2 * FRAMES, 256, 256 + render.GAP + visualize.TEXT_WIDTH, 3)
  # Box 0 is columns 0.25 * 96 - 16 = 8 to 0.5 * 96 - 16 = 32 of the crop, rows 6.4 to 57.6: in the 4x frame its
  # left edge (2 px wide) is columns 32-33 of rows 25-230 (rows 60-150 have no other box's edge or label);
  # away from the edges the frame shows through.
  edge = frames[:FRAMES, 60:150, 32:34].astype(int)
  assert np.abs(edge - big[:, 60:150, 32:34]).mean() > 40
  assert np.abs(edge - np.array(render.box_colour(0))).mean() < 12
  assert np.abs(frames[:FRAMES, 60:150, 70:120].astype(int) - big[:, 60:150, 70:120]).mean() < 6
  assert (tmp_path / '000000_clip.png').stat().st_size > 0


def test_test_view_is_for_detectors():
  card = model_card.ModelCard('mvit_tiny', {}, None, model_card.InputRecipe(
      num_frames=FRAMES, sampling_rate=TAU, target_fps=FPS, short_side=CROP, crop_size=CROP, mean=MEAN, std=STD))
  with pytest.raises(InputError, match=r"^a test view \('full'\) is for action detectors; mvit_tiny here is a "
                                       r"classifier$"):
    inference.Predictor(create_model('mvit_tiny'), {'params': {}}, card, test_view='full')
  detector = create_model('mvit_tiny', detection=True)
  with pytest.raises(InputError, match=r"^test view 'side': expected one of center, full$"):
    inference.Predictor(detector, {'params': {}}, card, test_view='side')


def test_read_boxes_csv_merges_repeated_boxes_and_names_bad_rows(tmp_path):
  keyframes = detect.read_boxes_csv(write_boxes(str(tmp_path / 'ok.csv')))
  assert sorted(keyframes) == ['clip'] and sorted(keyframes['clip']) == [900, 902]
  assert keyframes['clip'][900].shape == (3, 4) and keyframes['clip'][900].dtype == np.float32
  path = tmp_path / 'bad.csv'
  for text, message in [('clip,900,0.1,0.1,0.5\n', r'bad.csv:1: expected `video_id,sec,x1,y1,x2,y2\[,...\]`'),
                        ('clip,900,0.1,0.1,0.5,0.5\nclip,x,0.1,0.1,0.5,0.5\n',
                         'bad.csv:2: the second or a coordinate is not a number'),
                        ('clip,900,0.6,0.1,0.5,0.5\n', r'bad.csv:1: box \(0.6, 0.1, 0.5, 0.5\) is not 0 <= x1 <= x2'),
                        ('clip,900,0.1,0.1,0.5,1.5\n', 'bad.csv:1: box'),
                        ('\n', 'has no rows')]:
    path.write_text(text)
    with pytest.raises(InputError, match=message):
      detect.read_boxes_csv(str(path))


def test_clip_indices_are_the_ava_loaders():
  """Frames 10 s +- the clip's span at 10 fps, clamped; a keyframe outside the video is one error."""
  cfg = detect.keyframe_config(inference.data_config(model_card.InputRecipe(
      num_frames=FRAMES, sampling_rate=TAU, target_fps=FPS, short_side=CROP, crop_size=CROP, mean=MEAN, std=STD,
      test_view='center')), START_SEC)
  np.testing.assert_array_equal(detect.clip_indices(902, 40, 10.0, cfg), [16, 18, 20, 22])
  np.testing.assert_array_equal(detect.clip_indices(900, 40, 10.0, cfg), [0, 0, 0, 2])
  np.testing.assert_array_equal(detect.clip_indices(902, 80, 20.0, cfg), [32, 36, 40, 44])  # Same times, 20 fps.
  np.testing.assert_array_equal(detect.clip_indices(903, 40, 10.0, cfg), [26, 28, 30, 32])
  with pytest.raises(decode.DecodeError, match=r'second 904 is outside the video \(4.00 s from second 900\)'):
    detect.clip_indices(904, 40, 10.0, cfg)


def test_keyframe_views_are_the_ava_eval_loaders(tmp_path):
  """On a synthetic AVA data set's videos, the view and boxes made from the card's recipe (as the trainer writes it)
  equal the AVA source's clip through the eval transform, keyframe by keyframe, for both test views."""
  root = str(tmp_path / 'ava')
  synthetic_ava.write_dataset(root, num_videos=2, num_val_videos=1, seconds=6, height=64, width=96)
  data = data_config_lib.default_data_config()
  synthetic_ava.configure(data, root, videos=True)
  data.num_frames, data.sampling_rate, data.crop_size = FRAMES, TAU, 48
  for view in ('center', 'full'):
    data.ava_test_view = view
    source = ava.AvaSource(data, 'eval', len(synthetic_ava.ACTIONS))
    cfg = detect.keyframe_config(inference.data_config(model_card.InputRecipe.from_data_config(data)),
                                 synthetic_ava.START_SEC)
    assert len(source) >= 2
    for i, keyframe in enumerate(source.keyframes):
      path = os.path.join(root, 'videos', f'{keyframe.video}.mp4')
      result = detect.load_keyframe(path, keyframe.sec, keyframe.boxes, cfg)
      clip, boxes = ava_transforms.eval_clip(source.load(i), keyframe.boxes, data)
      np.testing.assert_array_equal(result.clip, clip)
      np.testing.assert_array_equal(result.view_boxes, boxes)


@pytest.mark.slow
def test_scores_are_the_trainers_eval(files, tmp_path):
  """On a synthetic AVA set read from its videos: the trainer's eval forward pass over the AVA eval iterator and
  predict_video on the same videos and the same keyframe boxes give every box the same scores."""
  root = str(tmp_path / 'ava')
  synthetic_ava.write_dataset(root, num_videos=3, num_val_videos=1, seconds=6, height=HEIGHT, width=WIDTH)
  config = config_lib.base_config()
  d = config.data
  synthetic_ava.configure(d, root, videos=True)
  d.num_frames, d.sampling_rate, d.crop_size, d.mean, d.std = FRAMES, TAU, CROP, MEAN, STD
  d.ava_test_view, d.ava_max_boxes, d.num_workers = 'center', 8, 0
  module, variables = pretrained.load_pretrained(files['center'])
  mesh = sharding_lib.make_mesh(config.mesh)
  predict_fn = detection.make_predict_fn(module, mesh, sharding_lib.rules_from_config(config.sharding_rules), d)
  collector = detection.BoxCollector()
  for batch in ava.make_ava_eval_iterator(d, num_classes=len(ACTIONS), global_batch_size=8):
    collector.add(predict_fn(variables['params'], sharding_lib.global_batch(batch, mesh)))
  indices, boxes, scores = collector.result(len(ACTIONS))
  keyframes = ava.keyframe_list(d, 'eval')
  expected = {(*keyframes[i], tuple(box)): row for i, box, row in zip(indices, boxes.tolist(), scores)}

  source = ava.AvaSource(d, 'eval', len(ACTIONS))
  predictor, found = load_predictor(files['center']), 0
  for video in sorted({k.video for k in source.keyframes}):
    secs = {k.sec: k.boxes for k in source.keyframes if k.video == video}
    for result in detect.predict_video(predictor, os.path.join(root, 'videos', f'{video}.mp4'), secs,
                                       start_sec=synthetic_ava.START_SEC):
      for box, row in zip(result.boxes.tolist(), result.scores):
        np.testing.assert_allclose(row, expected[(video, result.sec, tuple(box))], atol=1e-5)
        found += 1
  assert found == len(expected) >= 10


def run_predict(*args):
  cmd = [sys.executable, '-m', 'mvit_jax.predict', *map(str, args)]
  return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'XLA_FLAGS': ''})


@pytest.mark.slow
def test_predict_cli_boxes(files, tmp_path):
  """JSON lines per box, the AVA CSV with boxes x classes rows, a video the CSV does not name and a keyframe past the
  end skipped with a line each, the visualisation files."""
  other = shutil.copy(files['video'], tmp_path / 'other.mp4')
  boxes = write_boxes(str(tmp_path / 'boxes.csv'), {**BOXES, 910: [[0.1, 0.1, 0.2, 0.2]]})
  out, ava_csv, vis = tmp_path / 'out.jsonl', tmp_path / 'detections.csv', tmp_path / 'vis'
  result = run_predict(f'--model={files["center"]}', f'--boxes={boxes}', files['video'], other, f'--output={out}',
                       f'--ava_csv={ava_csv}', f'--visualize={vis}', f'--start_sec={START_SEC}', '--topk=2')
  assert result.returncode == 0, result.stderr
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [(line['video_id'], line['sec']) for line in lines] == [('clip', 900)] * 3 + [('clip', 902)]
  scores = expected_scores(files['center'], 'center', files['video'], 900, BOXES[900])
  for line, box, box_scores in zip(lines, BOXES[900], scores):
    np.testing.assert_allclose(line['box'], np.float32(box), atol=1e-6)
    top = line['top_k']
    assert [t['action'] for t in top] == [ACTIONS[t['id'] - 1] for t in top] and len(top) == 2
    np.testing.assert_allclose([t['score'] for t in top], np.sort(box_scores)[::-1][:2], atol=1e-5)
  assert [line['visible'] for line in lines[:3]] == [1.0, 0.5, 0.0]
  with open(ava_csv) as f:
    rows = list(csv.reader(f))
  assert len(rows) == 4 * len(ACTIONS)  # Every box x class.
  assert [r[6] for r in rows[:len(ACTIONS)]] == ['1', '2', '3', '4', '5'] and rows[0][:2] == ['clip', '0900']
  np.testing.assert_allclose([float(r[7]) for r in rows[:len(ACTIONS)]], scores[0], atol=1e-5)
  # The scorer reads the file (its label map names ids 1, 3, 4, 5; id 2's rows are not scored).
  labelmap, groundtruth = tmp_path / 'labelmap.pbtxt', tmp_path / 'gt.csv'
  labelmap.write_text(''.join(f'item {{ name: "{ACTIONS[i - 1]}" id: {i} }}\n' for i in (1, 3, 4, 5)))
  groundtruth.write_text(f'clip,900,{",".join(map(str, BOXES[900][0]))},1,0\n'
                         f'clip,902,{",".join(map(str, BOXES[902][0]))},3,0\n')
  report = ava_eval.evaluate_files(str(labelmap), str(groundtruth), str(ava_csv))
  assert report['detection_rows'] == 4 * len(ACTIONS) and 0 <= report['mAP'] <= 100
  assert sorted(report['per_class_AP']) == ['1', '3']
  assert f"other.mp4: skipped: {boxes} has no boxes for video id 'other'" in result.stderr
  assert 'clip.mp4: second 910: skipped: second 910 is outside the video' in result.stderr
  assert 'predicted 4 boxes on 2 keyframes (1 keyframes unreadable)' in result.stderr
  with av.open(str(vis / '000000_clip.mp4')) as container:
    assert sum(1 for _ in container.decode(video=0)) == 2 * FRAMES
  assert (vis / '000000_clip.png').stat().st_size > 0


@pytest.mark.slow
def test_predict_cli_box_errors(files, tmp_path):
  """One line each, exit 2: a classifier given --boxes, a detector without them, a CSV naming none of the videos,
  a malformed row, a classifier's flag."""
  classifier = str(tmp_path / 'classifier')
  shutil.copytree(files['center'], classifier)
  card = model_card.read(classifier)
  model_card.write(classifier, model_card.ModelCard(card.name, {**card.overrides, 'detection': False}, card.classes,
                                                    card.input))
  bad = tmp_path / 'bad.csv'
  bad.write_text('clip,900,0.1,0.1,0.5,0.5\nclip,900,0.1,0.1,0.5\n')
  cases = [((f'--model={classifier}', f'--boxes={files["boxes"]}'), '--boxes needs an action detector'),
           ((f'--model={files["center"]}',), 'is an action detector: give the person boxes with --boxes'),
           ((f'--model={files["center"]}', f'--boxes={write_boxes(str(tmp_path / "x.csv"), video_id="x")}'),
            'names none of the given videos (their ids: clip; the file names x)'),
           ((f'--model={files["center"]}', f'--boxes={bad}'), 'bad.csv:2: expected `video_id,sec,x1,y1,x2,y2'),
           ((f'--model={files["center"]}', f'--boxes={files["boxes"]}', '--workers=2'),
            '--workers is for classifiers')]
  for args, message in cases:
    result = run_predict(*args, files['video'])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and message in lines[-1], result.stderr
