"""Command-line data tools: synthetic dataset, scan, preview, prepare_videos."""
import os
import subprocess
import sys

import av
import numpy as np
from PIL import Image
import pytest

from mvit_jax.data import config as config_lib
from mvit_jax.data import decode
from mvit_jax.data import pipeline
from mvit_jax.data import synthetic
from tests import testlib

REPO = testlib.REPO


def run(*args):
  """Runs `python *args` from the repository root; returns (exit status, stdout + stderr)."""
  env = {**os.environ, 'PYTHONPATH': REPO + os.pathsep + os.environ.get('PYTHONPATH', '')}
  proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  return proc.returncode, proc.stdout + proc.stderr


def shape_boxes(frames):
  """Per frame: (top row, height, area) of the pixels brighter than the background (no wrap-around expected)."""
  out = []
  for frame in frames:
    mask = frame.mean(-1) > 130
    rows = np.flatnonzero(mask.any(1))
    out.append((rows[0], len(rows), mask.sum()))
  return np.array(out)


@pytest.mark.parametrize('label,check', [
    (0, lambda b: np.all(np.diff(b[:, 0]) == -2)),              # moving_up: 2 px/frame up.
    (1, lambda b: np.all(np.diff(b[:, 0]) == 2)),               # moving_down.
    (3, lambda b: np.all(b == b[0])),                           # standing_still.
    (4, lambda b: np.all(np.diff(b[:, 2]) >= 0) and b[-1, 2] > 4 * b[0, 2]),  # growing.
    (5, lambda b: np.all(np.diff(b[:, 2]) <= 0) and b[0, 2] > 4 * b[-1, 2]),  # shrinking.
])
def test_synthetic_classes_are_the_motions_they_name(label, check):
  for seed in range(20):  # Find a start where the square does not wrap during 6 frames.
    frames = synthetic.motion_frames(label, np.random.default_rng(seed), num_frames=6, height=96, width=96,
                                     speed=2.0)
    boxes = shape_boxes(frames)
    if boxes[:, 0].min() > 0 and (boxes[:, 0] + boxes[:, 1]).max() < 96:
      assert check(boxes), boxes
      return
  pytest.fail('no unwrapped example')


def test_synthetic_single_frames_do_not_reveal_the_class():
  # Position is uniform in every class: the mean first-frame centre row is ~H/2 for up and for down.
  rows = {}
  for label in (0, 1):
    centres = []
    for seed in range(60):
      mask = synthetic.motion_frames(label, np.random.default_rng(seed), num_frames=1, height=48, width=64,
                                     speed=2.0)[0].mean(-1) > 130
      centres.append(np.flatnonzero(mask.any(1)).mean())
    rows[label] = np.mean(centres)
  assert abs(rows[0] - rows[1]) < 6 and abs(rows[0] - 24) < 6


@pytest.mark.slow
def test_synthetic_cli_writes_decodable_dataset(tmp_path):
  code, out = run('-m', 'mvit_jax.data.synthetic', '--out', str(tmp_path), '--num-classes', '3',
                  '--videos-per-class', '4', '--seed', '1', '--num_frames', '12')
  assert code == 0, out
  train = (tmp_path / 'train.csv').read_text().splitlines()
  val = (tmp_path / 'val.csv').read_text().splitlines()
  assert (len(train), len(val)) == (9, 3)
  assert (tmp_path / 'classes.txt').read_text().split() == ['moving_up', 'moving_down', 'moving_sideways']
  path, label = train[0].rsplit(None, 1)
  clip = decode.decode_video(str(tmp_path / path), lambda n, fps: np.arange(n))
  assert clip.frames.shape == (12, 48, 64, 3) and clip.fps == 10.0 and label == '0'


@pytest.fixture(scope='module')
def torture(tmp_path_factory):
  d = tmp_path_factory.mktemp('scan')
  good, bad = testlib.write_torture_set(str(d))
  bad['missing'] = str(d / 'missing.mp4')
  testlib.write_manifest(str(d / 'all.csv'), [(os.path.basename(p), 0) for p in [*good.values(), *bad.values()]])
  testlib.write_manifest(str(d / 'good.csv'), [(os.path.basename(p), 0) for p in good.values()])
  return d, good, bad


@pytest.mark.slow
def test_scan_reports_exactly_the_bad_files(torture):
  d, good, bad = torture
  code, out = run('-m', 'mvit_jax.data.scan', '--manifest', str(d / 'all.csv'), '--root', str(d),
                  '--report', str(d / 'report.tsv'))
  assert code == 1, out
  reported = {line[4:].split(': ')[0] for line in out.splitlines() if line.startswith('BAD ')}
  assert reported == set(bad.values())
  assert f'scanned {len(good) + len(bad)} videos: {len(good)} good, {len(bad)} bad' in out
  report = [line.split('\t') for line in (d / 'report.tsv').read_text().splitlines()]
  assert {p for p, status, _ in report if status == 'bad'} == set(bad.values())
  assert {p for p, status, _ in report if status == 'ok'} == set(good.values())


@pytest.mark.slow
def test_scan_exit_zero_when_all_good_and_two_on_bad_manifest(torture, tmp_path):
  d, _, _ = torture
  code, out = run('-m', 'mvit_jax.data.scan', '--manifest', str(d / 'good.csv'), '--root', str(d))
  assert code == 0, out
  broken = tmp_path / 'broken.csv'
  broken.write_text('ok.mp4 1\nno_label_here\n')
  code, out = run('-m', 'mvit_jax.data.scan', '--manifest', str(broken))
  assert code == 2 and f'{broken}:2' in out


@pytest.mark.slow
def test_preview_writes_contact_sheet(tmp_path):
  synthetic.write_dataset(str(tmp_path), num_classes=2, videos_per_class=3, num_frames=16)
  config = tmp_path / 'cfg.py'
  config.write_text('from mvit_jax.data import config\n'
                    'def get_config():\n'
                    '  c = config.default_data_config()\n'
                    '  c.num_frames, c.sampling_rate, c.target_fps = 4, 2, 10.0\n'
                    '  c.crop_size, c.train_short_side = 32, 48\n'
                    '  return c\n')
  out_png = tmp_path / 'grid.png'
  code, out = run('-m', 'mvit_jax.data.preview', '--manifest', str(tmp_path / 'train.csv'), '--root',
                  str(tmp_path), '--config', str(config), '--out', str(out_png), '--batch_size', '4',
                  '--min_cell', '64', f'--config.classes_file={tmp_path / "classes.txt"}',
                  '--config.random_erasing_prob=0.0')
  assert code == 0, out
  assert 'video (4, 4, 32, 32, 3) float32' in out and 'skipped 0' in out and 'range [' in out
  with Image.open(out_png) as image:
    sheet = np.asarray(image.convert('RGB'), np.int16)
  assert sheet.shape == (4 * (64 + 14 + 2), 4 * (64 + 2), 3)  # 4 frames per row, 4 clips, 2x enlarged cells.
  # The loader's uint8 clips, normalised on the device and mapped back to pixels for the sheet.
  cfg = config_lib.default_data_config()
  cfg.num_frames, cfg.sampling_rate, cfg.target_fps = 4, 2, 10.0
  cfg.crop_size, cfg.train_short_side, cfg.random_erasing_prob, cfg.num_workers = 32, 48, 0.0, 0
  cfg.root, cfg.train_manifest, cfg.classes_file = str(tmp_path), str(tmp_path / 'train.csv'), ''
  it = pipeline.make_train_iterator(cfg, num_classes=2, global_batch_size=4, seed=0, process_index=0, process_count=1)
  clips = next(it)['video']
  it.close()
  cell = sheet[2 * (64 + 14 + 2) + 14:2 * (64 + 14 + 2) + 14 + 64, 3 * (64 + 2):3 * (64 + 2) + 64]  # Clip 2, frame 3.
  np.testing.assert_allclose(cell[::2, ::2], clips[2, 3], rtol=0, atol=1)


@pytest.mark.slow
def test_prepare_videos_reencodes_with_short_gop_and_no_audio(tmp_path):
  raw = tmp_path / 'raw'
  for name, vid in (('a', 1), ('b', 2)):
    os.makedirs(raw / name)
    testlib.write_index_video(str(raw / name / f'clip {vid}.mp4'), 40, video_id=vid, gop=100, audio_seconds=1.0)
  (raw / 'b' / 'broken.mp4').write_text('junk')
  out_dir = tmp_path / 'out'
  code, out = run('scripts/prepare_videos.py', '--in_dir', str(raw), '--out_dir', str(out_dir), '--short_side',
                  '30', '--gop', '16', '--workers', '2')
  assert code == 1 and 'FAILED' in out and 'broken.mp4' in out
  assert (out_dir / 'manifest.csv').read_text().splitlines() == ['a/clip 1.mp4 0', 'b/clip 2.mp4 1']
  assert (out_dir / 'classes.txt').read_text().split() == ['a', 'b']
  path = str(out_dir / 'b' / 'clip 2.mp4')
  with av.open(path) as container:
    assert [s.type for s in container.streams] == ['video']
    keyframes = [i for i, p in enumerate(p for p in container.demux(container.streams.video[0]) if p.size)
                 if p.is_keyframe]
  assert keyframes == [0, 16, 32]
  clip = decode.decode_video(path, lambda n, fps: np.arange(n))
  assert clip.frames.shape == (40, 30, 40, 3)
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [2 << 8 | i for i in range(40)])


@pytest.mark.slow
def test_scan_checks_frame_folders(tmp_path):
  from mvit_jax.data import scan  # pylint: disable=g-import-not-at-top
  good, empty = tmp_path / 'good', tmp_path / 'empty'
  good.mkdir()
  empty.mkdir()
  for i in range(5):
    Image.fromarray(testlib.code_frame(i)).save(good / f'{i:05d}.jpg')
  results = scan.scan([str(good), str(empty)], workers=1)
  assert results[0] == (str(good), True, '5 frames, 60x80')
  assert results[1][:2] == (str(empty), False) and 'no frames' in results[1][2]
