"""Folder data sets (dataset_kind='folder'): layouts, the seeded stratified split, labels through the loaders, bad
videos, bad layouts, scan's report, a bucket copy, class names in the trainer's model card."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mvit_jax.data import config as config_lib
from mvit_jax.data import folder
from mvit_jax.data import pipeline
from mvit_jax.data import scan
from mvit_jax.data import sources
from mvit_jax.system import storage
from mvit_jax.train import config as train_config_lib
from tests import testlib

CLASSES, VIDEOS_PER_CLASS, VIDEO_FRAMES = ('cat', 'dog', 'eel'), 4, 8


def video_id(label: int, i: int) -> int:
  return label * VIDEOS_PER_CLASS + i  # < 16: the frames code it (testlib.write_index_video).


@pytest.fixture(scope='module')
def pool(tmp_path_factory):
  """ROOT/<class>/<video> with 4 videos a class whose frames code (class, index), a non-video file, an upper-case
  extension and a hidden folder."""
  root = tmp_path_factory.mktemp('folder')
  for label, name in enumerate(CLASSES):
    os.makedirs(root / name)
    for i in range(VIDEOS_PER_CLASS):
      extension = '.MP4' if i == 3 else '.mp4'
      testlib.write_index_video(str(root / name / f'clip{i}{extension}'), VIDEO_FRAMES, video_id=video_id(label, i),
                                gop=4)
    (root / name / 'notes.txt').write_text('not a video')
  os.makedirs(root / '.cache')
  return root


def copy_class(pool, name: str, dst) -> None:
  shutil.copytree(pool / name, dst, ignore=shutil.ignore_patterns('*.txt'))


def make_config(root, **overrides):
  """Augmentations that keep the index stripes readable: full-height crops, no RandAugment or erasing."""
  cfg = config_lib.default_data_config()
  cfg.dataset_kind, cfg.root = 'folder', str(root)
  cfg.num_frames, cfg.sampling_rate, cfg.target_fps = 2, 2, 30.0
  cfg.train_short_side = cfg.test_short_side = cfg.crop_size = testlib.HEIGHT
  cfg.random_resized_crop, cfg.train_jitter_scales = False, (testlib.HEIGHT, testlib.HEIGHT)
  cfg.randaugment, cfg.random_erasing_prob = False, 0.0
  cfg.num_workers, cfg.test_num_clips, cfg.test_num_crops = 0, 1, 1
  cfg.update(overrides)
  return cfg


def clip_ids(video: np.ndarray) -> np.ndarray:
  """The video id coded in each clip's first frame: uint8 (B, T, H, W, 3) -> (B,)."""
  return testlib.read_codes(video[:, 0]) >> 8


def test_classes_are_sorted_folders_and_videos_are_listed_files(pool):
  dataset = folder.read(str(pool))
  assert dataset.classes == CLASSES and not dataset.given_split
  records = dataset.train + dataset.eval
  assert len(records) == len(CLASSES) * VIDEOS_PER_CLASS
  for record in records:
    name = os.path.basename(os.path.dirname(record.path))
    assert record.label == CLASSES.index(name) and folder.is_video(record.path)
  assert any(r.path.endswith('clip3.MP4') for r in records)


def test_split_is_stratified_seeded_disjoint_and_rebuilt_the_same(pool):
  dataset = folder.read(str(pool), val_fraction=0.25, split_seed=0)
  for label in range(len(CLASSES)):
    assert sum(r.label == label for r in dataset.eval) == 1  # round(0.25 * 4)
    assert sum(r.label == label for r in dataset.train) == 3
  train, val = {r.path for r in dataset.train}, {r.path for r in dataset.eval}
  assert not train & val and len(train | val) == len(CLASSES) * VIDEOS_PER_CLASS
  assert folder.read(str(pool), val_fraction=0.25, split_seed=0) == dataset
  assert folder.read(str(pool), val_fraction=0.5, split_seed=0).eval != dataset.eval
  assert {folder.read(str(pool), val_fraction=0.25, split_seed=s).eval for s in range(4)} != {dataset.eval}


@pytest.mark.parametrize('n, fraction, num_eval', [(1, 0.5, 0), (2, 0.1, 1), (2, 0.9, 1), (10, 0.1, 1), (10, 0.25, 3),
                                                   (20, 0.1, 2), (10, 0.99, 9)])
def test_split_sizes(n, fraction, num_eval):
  videos = [f'v{i}.mp4' for i in range(n)]
  train, val = folder.split_class('c', videos, fraction, seed=3)
  assert len(val) == num_eval and sorted(train + val) == sorted(videos) and train == sorted(train)


def test_loaders_yield_the_folder_labels(pool):
  cfg = make_config(pool, folder_val_fraction=0.25)
  assert sources.num_classes_from_config(cfg) == len(CLASSES)
  assert sources.class_names_from_config(cfg) == list(CLASSES)
  batches = list(pipeline.make_eval_iterator(cfg, num_classes=3, global_batch_size=4, process_index=0,
                                             process_count=1))
  ids = np.concatenate([clip_ids(b['video'])[b['mask']] for b in batches])
  labels = np.concatenate([b['label'][b['mask']] for b in batches])
  assert sorted(ids.tolist()) == sorted(video_id(r.label, int(r.path[-5])) for r in folder.from_config(cfg).eval)
  np.testing.assert_array_equal(labels, ids // VIDEOS_PER_CLASS)
  it = pipeline.make_train_iterator(cfg, num_classes=3, global_batch_size=6, seed=0, process_index=0,
                                    process_count=1)
  seen = set()
  for _ in range(3):
    batch = next(it)
    ids = clip_ids(batch['video'])
    np.testing.assert_array_equal(batch['label'], ids // VIDEOS_PER_CLASS)
    seen |= set(ids.tolist())
  it.close()
  eval_ids = {video_id(r.label, int(r.path[-5])) for r in folder.from_config(cfg).eval}
  assert seen and not seen & eval_ids


def test_train_val_layout_is_used_as_it_is_and_a_bad_video_is_skipped_and_counted(pool, tmp_path):
  for name in CLASSES[:2]:
    copy_class(pool, name, tmp_path / 'train' / name)
    os.makedirs(tmp_path / 'val' / name)
  shutil.move(tmp_path / 'train' / 'cat' / 'clip0.mp4', tmp_path / 'val' / 'cat' / 'clip0.mp4')
  shutil.move(tmp_path / 'train' / 'dog' / 'clip1.mp4', tmp_path / 'val' / 'dog' / 'clip1.mp4')
  broken = tmp_path / 'val' / 'dog' / 'broken.mp4'
  broken.write_text('this is not a video\n')
  dataset = folder.read(str(tmp_path), val_fraction=0.5)
  assert dataset.given_split and dataset.classes == CLASSES[:2]
  assert [(os.path.relpath(r.path, tmp_path), r.label) for r in dataset.eval] == [
      ('val/cat/clip0.mp4', 0), ('val/dog/broken.mp4', 1), ('val/dog/clip1.mp4', 1)]
  assert len(dataset.train) == 6 and all('/train/' in r.path for r in dataset.train)

  cfg = make_config(tmp_path, max_failure_fraction=1.0)
  before = dict(pipeline.skip_stats().bad_videos)
  batch, = pipeline.make_eval_iterator(cfg, num_classes=2, global_batch_size=4, process_index=0, process_count=1)
  np.testing.assert_array_equal(batch['mask'], [True, False, True, False])
  np.testing.assert_array_equal(clip_ids(batch['video'][[0, 2]]), [video_id(0, 0), video_id(1, 1)])
  np.testing.assert_array_equal(batch['label'][[0, 2]], [0, 1])
  assert pipeline.skip_stats().bad_videos[str(broken)] == before.get(str(broken), 0) + 1


@pytest.mark.parametrize('layout, message', [
    ({}, 'no such folder'),
    ({'readme.txt': ''}, ': no class folders (expected'),
    ({'a/x.mp4': 'v', 'b/notes.txt': ''}, '/b: no video files (names ending in .mp4, .avi'),
    ({'train/a/x.mp4': 'v', 'train/b/y.mp4': 'v', 'val/a/z.mp4': 'v'}, '/val: no class folders b (as '),
    ({'train/a/x.mp4': 'v', 'val/a/z.mp4': 'v', 'val/c/w.mp4': 'v'}, '/val: class folders c are not in '),
    ({'train/a/x.mp4': 'v', 'val/a/notes.txt': ''}, '/val/a: no video files'),
])
def test_bad_layouts_are_one_line_naming_the_folder(tmp_path, layout, message):
  root = tmp_path / 'root'
  for rel, text in layout.items():
    os.makedirs((root / rel).parent, exist_ok=True)
    (root / rel).write_text(text)
  with pytest.raises(folder.FolderError) as error:
    folder.read(str(root))
  assert message in str(error.value) and '\n' not in str(error.value) and str(root) in str(error.value)


def test_config_checks(pool, tmp_path):
  config = train_config_lib.base_config()
  config.data = make_config(pool)
  train_config_lib.validate(config)
  train_config_lib.check_paths(config, str(tmp_path / 'workdir'))
  for key, value, message in (('classes_file', 'c.txt', 'config.data.classes_file must be empty'),
                              ('folder_val_fraction', 1.0, r'config.data.folder_val_fraction must be in \(0, 1\)')):
    bad = train_config_lib.base_config()
    bad.data = make_config(pool, **{key: value})
    with pytest.raises(train_config_lib.ConfigError, match=message):
      train_config_lib.validate(bad)
  os.makedirs(tmp_path / 'data' / 'empty_class')
  config.data.root = str(tmp_path / 'data')
  with pytest.raises(folder.FolderError, match='empty_class: no video files'):
    train_config_lib.check_paths(config, str(tmp_path / 'workdir'))
  with pytest.raises(folder.FolderError, match='num_classes is 4 but .* has 3 class folders'):
    folder.make_source(make_config(pool), 'train', 4)


def test_a_bucket_copy_gives_the_same_records(pool, bucket):
  url = storage.join(bucket, 'videos')
  storage.upload_tree(str(pool), url)
  local, remote = folder.read(str(pool)), folder.read(url)
  assert remote.classes == local.classes
  for split in ('train', 'eval'):
    assert [(r.path.replace(url, str(pool)), r.label) for r in getattr(remote, split)] == [
        (r.path, r.label) for r in getattr(local, split)]
  source = folder.make_source(make_config(url), 'eval', len(CLASSES))
  assert source.remote
  clip = source.load(0, lambda n, fps: [0, n - 1], 0)
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [
      video_id(source.label(0), int(source.describe(0)[-5])) << 8 | f for f in (0, VIDEO_FRAMES - 1)])


def test_scan_table_counts_each_class_per_split_and_its_unreadable_videos(pool):
  dataset = folder.read(str(pool), val_fraction=0.25)
  bad = {dataset.train[0].path, dataset.eval[-1].path}
  assert scan.folder_table(dataset, bad).splitlines() == [
      'label  class    train      val  unreadable',
      '0      cat          3        1           1',
      '1      dog          3        1           0',
      '2      eel          3        1           1',
      '       total        9        3           2']
  bad = {r.path for r in dataset.train + dataset.eval if r.label == 1}
  assert scan.folder_table(dataset, bad).splitlines()[-1] == 'NO READABLE VIDEO in class dog: all 4 are unreadable'


@pytest.mark.slow
def test_scan_cli_reports_a_folder_data_set(pool, tmp_path):
  copy_class(pool, 'cat', tmp_path / 'cat')
  copy_class(pool, 'dog', tmp_path / 'dog')
  (tmp_path / 'dog' / 'broken.mp4').write_text('this is not a video\n')
  run = subprocess.run([sys.executable, '-m', 'mvit_jax.data.scan', str(tmp_path), '--workers', '1',
                        '--folder_val_fraction', '0.5', '--folder_split_seed', '2'], capture_output=True, text=True,
                       cwd=testlib.REPO, check=False)
  assert run.returncode == 1, run.stderr
  lines = run.stdout.splitlines()
  assert lines[0] == f'folder data set {tmp_path}: 2 classes, split: 0.5 of each class to val, seed 2'
  assert lines[2:5] == ['0      cat          2        2           0',
                        '1      dog          2        3           1',  # round(2.5) is 3: half up.
                        '       total        4        5           1']
  assert lines[5].startswith(f'BAD {tmp_path}/dog/broken.mp4: ') and lines[-1] == 'scanned 9 videos: 8 good, 1 bad'
  run = subprocess.run([sys.executable, '-m', 'mvit_jax.data.scan', str(tmp_path / 'cat')], capture_output=True,
                       text=True, cwd=testlib.REPO, check=False)
  assert run.returncode == 2 and run.stderr.strip().endswith(f'{tmp_path}/cat: no class folders (expected '
                                                             f'{tmp_path}/cat/<class>/<video>, or train/ and val/ '
                                                             'holding class folders)'), run.stderr


@pytest.mark.slow
def test_the_trainer_names_the_classes_by_their_folders(pool, tmp_path):
  from mvit_jax.models import model_card  # pylint: disable=g-import-not-at-top  (the trainer's imports: this test)
  from mvit_jax.train import trainer  # pylint: disable=g-import-not-at-top
  config = testlib.tiny_train_config(str(pool), num_train_steps=1, eval_every_steps=0,
                                     **{'data.dataset_kind': 'folder', 'data.train_manifest': '',
                                        'data.eval_manifest': '', 'data.classes_file': '', 'data.target_fps': 30.0,
                                        'data.folder_val_fraction': 0.25})
  result = trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert result['num_videos'] == len(CLASSES)
  assert model_card.read(str(tmp_path / 'run')).classes == CLASSES
