"""Requests per clip from a bucket (a real GCS server, fake-gcs-server): each waits tens of ms on a real store, so
decoding a clip from a video up to storage.READ_BLOCK_BYTES costs exactly one, and no metadata lookups."""
import aiohttp
import numpy as np

from mvit_jax.data import decode
from mvit_jax.system import storage
from tests import testlib


def test_decoding_a_clip_from_a_bucket_costs_one_request(tmp_path, bucket, monkeypatch):
  local = tmp_path / 'v.mp4'
  testlib.write_index_video(str(local), 40, video_id=0, gop=8)
  url = f'{bucket}/v.mp4'
  storage.copy_file(str(local), url)
  decode.decode_video(url, lambda n, fps: np.array([0]))  # The client's session and connection.
  request, requests = aiohttp.ClientSession._request, []  # pylint: disable=protected-access

  async def counting(self, method, str_or_url, *args, **kwargs):
    requests.append((method, str(str_or_url)))
    return await request(self, method, str_or_url, *args, **kwargs)

  monkeypatch.setattr(aiohttp.ClientSession, '_request', counting)
  clip = decode.decode_video(url, lambda n, fps: np.array([3, 17, 39]))
  assert testlib.read_codes(clip.frames).tolist() == [3, 17, 39]
  assert len(requests) == 1, requests
  assert requests[0][0] == 'GET' and 'v.mp4' in requests[0][1]
