"""Requests per clip from a bucket (a real GCS server, fake-gcs-server): each waits tens of ms on a real store, so
decoding a clip from a video up to storage.READ_BLOCK_BYTES costs exactly one, and no metadata lookups; evaluating
a video's views (in the loader, or the predictor's), one for them all."""
import aiohttp
import numpy as np

from mvit_jax import inference
from mvit_jax.data import config as config_lib
from mvit_jax.data import decode
from mvit_jax.data import pipeline
from mvit_jax.data import sources
from mvit_jax.system import storage
from tests import testlib


def count_requests(monkeypatch) -> list[tuple[str, str]]:
  """The (method, URL) of every HTTP request gcsfs sends from now on, in order."""
  request, requests = aiohttp.ClientSession._request, []  # pylint: disable=protected-access

  async def counting(self, method, str_or_url, *args, **kwargs):
    requests.append((method, str(str_or_url)))
    return await request(self, method, str_or_url, *args, **kwargs)

  monkeypatch.setattr(aiohttp.ClientSession, '_request', counting)
  return requests


def test_decoding_a_clip_from_a_bucket_costs_one_request(tmp_path, bucket, monkeypatch):
  local = tmp_path / 'v.mp4'
  testlib.write_index_video(str(local), 40, video_id=0, gop=8)
  url = f'{bucket}/v.mp4'
  storage.copy_file(str(local), url)
  decode.decode_video(url, lambda n, fps: np.array([0]))  # The client's session and connection.
  requests = count_requests(monkeypatch)
  clip = decode.decode_video(url, lambda n, fps: np.array([3, 17, 39]))
  assert testlib.read_codes(clip.frames).tolist() == [3, 17, 39]
  assert len(requests) == 1, requests
  assert requests[0][0] == 'GET' and 'v.mp4' in requests[0][1]


def test_evaluating_from_a_bucket_costs_one_request_per_video(tmp_path, bucket, monkeypatch):
  """Two clips x three crops of each video: every view of a video comes from one fetch of it."""
  names = ['v0.mp4', 'v1.mp4', 'v2.mp4']
  for video_id, name in enumerate(names):
    testlib.write_index_video(str(tmp_path / name), 40, video_id=video_id, gop=8)
    storage.copy_file(str(tmp_path / name), f'{bucket}/{name}')
  storage.write_text(f'{bucket}/val.csv', ''.join(f'{name} 0\n' for name in names))
  cfg = config_lib.default_data_config()
  cfg.root, cfg.eval_manifest, cfg.num_classes, cfg.num_workers = bucket, f'{bucket}/val.csv', 2, 0
  cfg.num_frames, cfg.sampling_rate, cfg.test_num_clips, cfg.test_num_crops = 4, 2, 2, 3
  cfg.test_short_side = cfg.crop_size = testlib.HEIGHT
  requests = count_requests(monkeypatch)
  it = pipeline.make_eval_iterator(cfg, num_classes=2, global_batch_size=6, process_index=0, process_count=1)
  masks = [np.array(batch['mask']) for batch in it]
  it.close()
  assert len(masks) == 3 and all(mask.all() for mask in masks)
  video_requests = sorted((method, url.rsplit('/', 1)[-1].split('?')[0]) for method, url in requests if '.mp4' in url)
  assert video_requests == [('GET', name) for name in names], requests


def test_a_predictor_s_views_of_a_video_in_a_bucket_cost_one_request(tmp_path, bucket, monkeypatch):
  testlib.write_index_video(str(tmp_path / 'v.mp4'), 40, video_id=0, gop=8)
  storage.copy_file(str(tmp_path / 'v.mp4'), f'{bucket}/v.mp4')
  cfg = config_lib.default_data_config()
  cfg.num_frames, cfg.sampling_rate, cfg.test_num_clips, cfg.test_num_crops = 4, 2, 3, 1
  cfg.test_short_side = cfg.crop_size = testlib.HEIGHT
  local = inference.eval_views(sources.FileSource([sources.VideoRecord(str(tmp_path / 'v.mp4'), None)]), 0, cfg)
  requests = count_requests(monkeypatch)
  views = inference.eval_views(sources.FileSource([sources.VideoRecord(f'{bucket}/v.mp4', None)]), 0, cfg)
  np.testing.assert_array_equal(views, local)
  assert views.shape[0] == 3 and [method for method, _ in requests] == ['GET'], requests
