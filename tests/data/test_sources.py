"""Manifest parsing (errors name file and line), frame-folder and TFDS-style sources."""
import os

import numpy as np
import pytest
from PIL import Image

from mvit_jax.data import config as config_lib
from mvit_jax.data import sources
from tests import testlib


def write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_manifest_splits_on_last_whitespace_and_joins_root(tmp_path):
  manifest = write(tmp_path, 'train.csv', 'a/b c.mp4 3\n\n  /abs/x.mp4\t0  \nplain.mp4 12\n')
  records = sources.read_manifest(manifest, '/data')
  assert records == [sources.VideoRecord('/data/a/b c.mp4', 3), sources.VideoRecord('/abs/x.mp4', 0),
                     sources.VideoRecord('/data/plain.mp4', 12)]


def test_multi_label_manifest(tmp_path):
  manifest = write(tmp_path, 'charades.csv', 'v1.mp4 3,17\nv2.mp4 0\n')
  records = sources.read_manifest(manifest, '', num_classes=20, multi_label=True)
  assert [r.label for r in records] == [(3, 17), (0,)]


@pytest.mark.parametrize('text,line,message', [
    ('ok.mp4 1\nnolabel\n', 2, 'expected "path label"'),
    ('ok.mp4 1\nbad.mp4 x\n', 2, 'not an integer'),
    ('bad.mp4 -1\n', 1, 'outside'),
    ('ok.mp4 0\nok2.mp4 1\nbig.mp4 5\n', 3, r'label 5 outside \[0, 5\)'),
])
def test_bad_manifest_line_names_file_and_line(tmp_path, text, line, message):
  manifest = write(tmp_path, 'm.csv', text)
  with pytest.raises(sources.ManifestError, match=f'{manifest}:{line}: .*{message}'):
    sources.read_manifest(manifest, num_classes=5)


def test_missing_or_empty_manifest(tmp_path):
  with pytest.raises(sources.ManifestError, match='cannot read manifest'):
    sources.read_manifest(str(tmp_path / 'nope.csv'))
  with pytest.raises(sources.ManifestError, match='no entries'):
    sources.read_manifest(write(tmp_path, 'e.csv', '\n\n'))


def test_num_classes_from_classes_file_or_manifest(tmp_path):
  cfg = config_lib.default_data_config()
  cfg.train_manifest = write(tmp_path, 'train.csv', 'a.mp4 0\nb.mp4 6\n')
  assert sources.num_classes_from_config(cfg) == 7
  cfg.classes_file = write(tmp_path, 'classes.txt', 'a\nb\n\nc\nd\ne\nf\ng\nh\n')
  assert sources.read_class_names(cfg.classes_file)[:3] == ['a', 'b', 'c']
  assert sources.num_classes_from_config(cfg) == 8
  cfg.num_classes = 10
  assert sources.num_classes_from_config(cfg) == 10
  cfg.num_classes, cfg.classes_file, cfg.train_manifest = 0, '', ''
  with pytest.raises(sources.ManifestError, match='num_classes, classes_file or a manifest'):
    sources.num_classes_from_config(cfg)
  cfg.eval_manifest = write(tmp_path, 'val.csv', 'a.mp4 4\n')
  assert sources.num_classes_from_config(cfg) == 5


def test_make_source_checks_labels_against_classes_file(tmp_path):
  cfg = config_lib.default_data_config()
  cfg.train_manifest = write(tmp_path, 'train.csv', 'a.mp4 0\nb.mp4 2\n')
  cfg.classes_file = write(tmp_path, 'classes.txt', 'x\ny\n')
  with pytest.raises(sources.ManifestError, match=r'train.csv:2: label 2 outside \[0, 2\)'):
    sources.make_source(cfg, 'train', sources.num_classes_from_config(cfg))
  cfg.dataset_kind = 'nonsense'
  with pytest.raises(ValueError, match='dataset_kind'):
    sources.make_source(cfg, 'train', 3)


def test_file_source_loads_clip_and_label(tmp_path):
  path = testlib.write_index_video(str(tmp_path / 'v.mp4'), 20, video_id=5)
  cfg = config_lib.default_data_config()
  cfg.train_manifest = testlib.write_manifest(str(tmp_path / 'train.csv'), [('v.mp4', 4)])
  cfg.root = str(tmp_path)
  source = sources.make_source(cfg, 'train', 5)
  assert len(source) == 1 and source.label(0) == 4 and source.describe(0) == path
  clip = source.load(0, lambda n, fps: np.array([2, 19]))
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [5 << 8 | 2, 5 << 8 | 19])


def test_frame_folder_source_with_segment_sampling(tmp_path):
  for v in range(2):
    os.makedirs(tmp_path / f'vid {v}')
    for i in range(31):
      Image.fromarray(testlib.code_frame(v << 8 | i)).save(tmp_path / f'vid {v}' / f'img_{i:05d}.jpg', quality=95)
  cfg = config_lib.default_data_config()
  cfg.dataset_kind, cfg.root, cfg.segment_sampling, cfg.num_frames = 'frames', str(tmp_path), True, 4
  cfg.eval_manifest = testlib.write_manifest(str(tmp_path / 'val.csv'), [('vid 0', 0), ('vid 1', 1)])
  cfg.train_manifest = cfg.eval_manifest
  source = sources.make_source(cfg, 'eval', 2)
  from mvit_jax.data import sampling  # pylint: disable=g-import-not-at-top
  clip = source.load(1, lambda n, fps: sampling.test_clip_indices(n, fps, 0, cfg))
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [1 << 8 | i for i in (4, 11, 18, 26)])


class FakeTfdsSource:
  def __init__(self, videos):
    self.videos = videos

  def __len__(self):
    return len(self.videos)

  def __getitem__(self, i):
    return {'video': self.videos[i], 'label': i % 2}


def test_tfds_source_reads_frames_by_index(monkeypatch):
  videos = [np.stack([testlib.code_frame(v << 8 | i) for i in range(10)]) for v in range(3)]
  monkeypatch.setattr(sources.TfdsSource, '_data_source', lambda self: FakeTfdsSource(videos))
  source = sources.TfdsSource('fake', 'train', fps=25.0)
  assert len(source) == 3 and source.label(1) == 1 and source.describe(2) == 'tfds:fake/train[2]'
  seen = []
  clip = source.load(2, lambda n, fps: seen.append((n, fps)) or np.array([9, 0, 3]), short_side=30)
  assert seen == [(10, 25.0)] and clip.frames.shape == (3, 30, 40, 3)
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [2 << 8 | 9, 2 << 8, 2 << 8 | 3])


def test_tfds_image_feature_is_a_one_frame_clip(monkeypatch):
  """ImageNet through TFDS: an (H, W, 3) image is a clip of one frame, repeated as the sampler asks."""
  images = [testlib.code_frame(v) for v in range(2)]
  monkeypatch.setattr(sources.TfdsSource, '_data_source', lambda self: FakeTfdsSource(images))
  source = sources.TfdsSource('fake', 'train', video_key='video')
  clip = source.load(1, lambda n, fps: np.zeros(1, np.int64) if n == 1 else None)
  assert clip.frames.shape == (1,) + images[1].shape
  np.testing.assert_array_equal(testlib.read_codes(clip.frames), [1])


_TFDS_SCRIPT = r'''
import sys
import numpy as np
import tensorflow_datasets as tfds
from mvit_jax.data import config as config_lib, pipeline, sources
from tests import testlib as vf

data_dir = sys.argv[1]
features = tfds.features.FeaturesDict({'video': tfds.features.Video(shape=(None, vf.HEIGHT, vf.WIDTH, 3)),
                                       'label': tfds.features.ClassLabel(num_classes=3)})
examples = [(v, {'video': np.stack([vf.code_frame(v << 8 | i) for i in range(12)]), 'label': v % 3})
            for v in range(4)]
tfds.dataset_builders.store_as_tfds_dataset(name='tiny_videos', version='1.0.0', features=features,
                                            split_datasets={'train': examples}, data_dir=data_dir,
                                            file_format='array_record')
cfg = config_lib.default_data_config()
cfg.dataset_kind, cfg.tfds_name, cfg.tfds_data_dir, cfg.tfds_eval_split = 'tfds', 'tiny_videos', data_dir, 'train'
cfg.frames_fps, cfg.num_frames, cfg.sampling_rate, cfg.target_fps = 30.0, 4, 2, 30.0
cfg.test_num_clips, cfg.test_num_crops, cfg.crop_size, cfg.test_short_side = 1, 1, vf.HEIGHT, vf.HEIGHT
cfg.num_workers = 0
assert sources.num_classes_from_config(cfg) == 3
batch = next(pipeline.make_eval_iterator(cfg, num_classes=3, global_batch_size=4, process_index=0, process_count=1))
codes = vf.read_codes(batch['video'].reshape(-1, vf.HEIGHT, vf.HEIGHT, 3)).reshape(4, 4)
# 12 frames, span 8: centre clip starts at floor(4 / 2) = 2 -> linspace(2, 9, 4) = 2, 4, 6, 9.
ids = codes[:, 0] >> 8  # TFDS stores examples in its own order.
assert sorted(ids.tolist()) == [0, 1, 2, 3]
np.testing.assert_array_equal(codes, [[v << 8 | i for i in (2, 4, 6, 9)] for v in ids])
np.testing.assert_array_equal(batch['label'], ids % 3)
print('TFDS OK')
'''


@pytest.mark.slow
def test_tfds_prepared_dataset_through_eval_loader(tmp_path):
  """A real array_record TFDS dataset (in a subprocess: tensorflow must not load into the test process)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  env = {**os.environ, 'PYTHONPATH': testlib.REPO}
  proc = subprocess.run([sys.executable, '-c', _TFDS_SCRIPT, str(tmp_path)], env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0 and 'TFDS OK' in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
