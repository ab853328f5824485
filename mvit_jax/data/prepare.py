"""Decode a manifest's videos once into prepared shards of JPEG frames (prepared.py), which load without a video
decoder.

  python -m mvit_jax.data.prepare --manifest CSV --root DIR --out OUT [--short_side 320] [--fps F] [--quality 90]
      [--videos_per_shard 256] [--workers N] [--multi_label]

Shard k holds manifest videos [k * videos_per_shard, (k + 1) * videos_per_shard), bad ones left out. Each shard is
written under a temporary name (on gs://: in a local temporary folder) and moved into place, then its completion
record is written; a rerun skips complete shards, and index.json is written last. The same inputs give the same
bytes, killed and restarted or not. Bad videos (missing, corrupt, unreadable) are listed on stderr and in the
index; exit status 0 when any video was prepared, 1 when none, 2 (one line) for bad flags or a bad manifest.
The manifest, the root and OUT may be bucket URLs (gs://...).
"""
import contextlib
import dataclasses
import functools
import io
import json
import math
import multiprocessing
import os
import sys
import tempfile

from absl import flags
from array_record.python import array_record_module
import numpy as np
from PIL import Image

from mvit_jax.data import decode
from mvit_jax.data import prepared
from mvit_jax.data import sources
from mvit_jax.system import cli
from mvit_jax.system import errors
from mvit_jax.system import process_lifetime
from mvit_jax.system import storage

# Frames decoded (and held as RGB) at a time: a long video never needs all its frames in memory, only its JPEGs.
WINDOW_FRAMES = 64


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a prepared folder was made from and how; a rerun must use the same (checked against each shard)."""
  manifest: str
  root: str
  multi_label: bool
  short_side: int        # Stored frames' short side at most this (never upscaled); 0: native size.
  fps: float             # Stored frame rate (frames resampled by time); 0: the video's own frame grid.
  quality: int           # JPEG quality.
  videos_per_shard: int
  num_videos: int        # Manifest entries.
  format: int = prepared.FORMAT_VERSION


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
  out = io.BytesIO()
  Image.fromarray(frame).save(out, format='JPEG', quality=quality)
  return out.getvalue()


def encode_video(path: str, settings: Settings) -> dict:
  """{'fps', 'height', 'width', 'frames': JPEG bytes per stored frame} of one video (prepared.encode_record's
  arguments); raises decode.DecodeError when it cannot be fetched or decoded."""
  with contextlib.ExitStack() as stack:
    try:
      local = stack.enter_context(storage.local_file(path))  # PyAV seeks once per window: one download of a URL.
    except FileNotFoundError:
      raise decode.DecodeError('missing file') from None
    except Exception as e:  # pylint: disable=broad-except  (a store's error after its retries)
      raise decode.DecodeError(f'cannot fetch: {storage.describe_error(e)}') from None
    first = decode.decode_video(local, lambda n, fps: np.array([0]))
    num_frames, fps = first.num_video_frames, first.fps
    side = settings.short_side if 0 < settings.short_side < min(first.frames.shape[1:3]) else 0
    # Stored frame j shows the video at time j / settings.fps: video frame floor(j * step).
    step = fps / settings.fps if settings.fps else 1.0
    count = max(1, math.ceil(num_frames / step - 1e-9)) if settings.fps else num_frames
    jpegs = []
    for start in range(0, count, WINDOW_FRAMES):
      wanted = np.floor(np.arange(start, min(start + WINDOW_FRAMES, count)) * step + 1e-9).astype(np.int64)
      frames = decode.decode_video(local, lambda n, fps, wanted=wanted: wanted, short_side=side).frames
      jpegs += [_jpeg(frame, settings.quality) for frame in frames]
  return {'fps': settings.fps or fps, 'height': int(frames.shape[1]), 'width': int(frames.shape[2]),
          'frames': jpegs}


def prepare_shard(shard: int, records: list[sources.VideoRecord], settings: Settings, out: str) -> dict:
  """Writes shard `shard` of the prepared folder `out` from `records` (its videos), then its completion record;
  returns the completion record."""
  num_shards = math.ceil(settings.num_videos / settings.videos_per_shard)
  name = prepared.shard_name(shard, num_shards)
  done = {'settings': dataclasses.asdict(settings), 'shard': shard, 'bad_videos': [],
          'videos': {key: [] for key in ('position', 'label', 'num_frames', 'fps', 'height', 'width', 'path')}}
  with tempfile.TemporaryDirectory() as tmp:
    # Local: the temporary file sits next to its final name, so the move is a rename; a bucket gets one upload.
    tmp_path = os.path.join(out if not storage.is_url(out) else tmp, f'.{name}.tmp')
    writer = array_record_module.ArrayRecordWriter(tmp_path, prepared.WRITER_OPTIONS)
    for record in records:
      try:
        video = encode_video(record.path, settings)
      except decode.DecodeError as e:
        done['bad_videos'].append({'path': record.path, 'reason': str(e)})
        continue
      writer.write(prepared.encode_record(path=record.path, label=record.label, **video))
      meta = {'position': len(done['videos']['path']), 'label': record.label, 'num_frames': len(video['frames']),
              'fps': video['fps'], 'height': video['height'], 'width': video['width'], 'path': record.path}
      for key, value in meta.items():
        done['videos'][key].append(value)
    writer.close()
    storage.move(tmp_path, storage.join(out, name))
  storage.write_text(storage.join(out, prepared.done_name(shard, num_shards)), prepared.to_json(done))
  return done


def _read_done(out: str, shard: int, num_shards: int, settings: Settings) -> dict | None:
  """Shard `shard`'s completion record, or None when the shard is not complete; InputError when it was made with
  other settings."""
  path = storage.join(out, prepared.done_name(shard, num_shards))
  if not storage.exists(path) or not storage.exists(storage.join(out, prepared.shard_name(shard, num_shards))):
    return None
  done = json.loads(storage.read_text(path))
  if done['settings'] != dataclasses.asdict(settings):
    raise errors.InputError(f'--out {out} holds shards prepared with other settings ({done["settings"]}); '
                            'use another --out')
  return done


def prepare(manifest: str, root: str, out: str, *, short_side: int = 320, fps: float = 0.0, quality: int = 90,
            videos_per_shard: int = 256, workers: int = 0, multi_label: bool = False) -> dict:
  """Prepares the manifest's videos into `out` (skipping complete shards); returns the index it writes last."""
  records = sources.read_manifest(manifest, root, multi_label=multi_label)
  settings = Settings(manifest=manifest, root=root, multi_label=multi_label, short_side=short_side, fps=fps,
                      quality=quality, videos_per_shard=videos_per_shard, num_videos=len(records))
  num_shards = math.ceil(len(records) / videos_per_shard)
  storage.makedirs(out)
  done = {k: _read_done(out, k, num_shards, settings) for k in range(num_shards)}
  todo = [k for k, record in done.items() if record is None]
  write = functools.partial(prepare_shard, settings=settings, out=out)
  jobs = [(k, records[k * videos_per_shard:(k + 1) * videos_per_shard]) for k in todo]
  workers = min(workers or os.cpu_count() or 1, max(1, len(todo)))
  if workers == 1:
    done.update((k, write(*job)) for k, job in zip(todo, jobs))
  else:
    # A worker stuck on a stalled file would outlive a killed prepare; exit_with_parent ends it.
    with multiprocessing.get_context('spawn').Pool(workers, initializer=process_lifetime.exit_with_parent) as pool:
      done.update(zip(todo, pool.starmap(write, jobs, chunksize=1)))
  index = {'settings': dataclasses.asdict(settings), 'shards': [], 'bad_videos': [],
           'videos': {key: [] for key in ('shard', 'position', 'label', 'num_frames', 'fps', 'height', 'width',
                                          'path')}}
  for k in range(num_shards):
    index['bad_videos'] += done[k]['bad_videos']
    videos = done[k]['videos']
    if not videos['path']:
      continue
    index['videos']['shard'] += [len(index['shards'])] * len(videos['path'])
    index['shards'].append(prepared.shard_name(k, num_shards))
    for key, values in videos.items():
      index['videos'][key] += values
  storage.write_text(storage.join(out, prepared.INDEX_NAME), prepared.to_json(index))
  return index


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if FLAGS.root:
    errors.check_folder(FLAGS.root, '--root')
  index = prepare(FLAGS.manifest, FLAGS.root, FLAGS.out, short_side=FLAGS.short_side, fps=FLAGS.fps,
                  quality=FLAGS.quality, videos_per_shard=FLAGS.videos_per_shard, workers=FLAGS.workers,
                  multi_label=FLAGS.multi_label)
  bad, good = index['bad_videos'], len(index['videos']['path'])
  for video in bad:
    print(f'BAD {video["path"]}: {video["reason"]}', file=sys.stderr)
  print(f'prepared {good} of {good + len(bad)} videos into {len(index["shards"])} shards in {FLAGS.out}; '
        f'{len(bad)} bad', file=sys.stderr)
  sys.exit(0 if good else 1)


def _define_flags():
  """Command-line flags, defined only when run as a program (importing the module defines none)."""
  flags.DEFINE_string('manifest', None, 'PySlowFast manifest (`path label` lines).', required=True)
  flags.DEFINE_string('root', '', 'Folder the manifest paths are relative to.')
  flags.DEFINE_string('out', None, 'Folder for the shards and index (created).', required=True)
  flags.DEFINE_integer('short_side', 320, 'Stored frames\' short side at most this many pixels (never upscaled); '
                       '0 keeps the native size.', lower_bound=0)
  flags.DEFINE_float('fps', 0.0, 'Resample the frames to this rate by time; 0 keeps each video\'s frames.',
                     lower_bound=0.0)
  flags.DEFINE_integer('quality', 90, 'JPEG quality.', lower_bound=1, upper_bound=100)
  flags.DEFINE_integer('videos_per_shard', 256, 'Videos per shard (manifest order).', lower_bound=1)
  flags.DEFINE_integer('workers', 0, 'Processes, one shard each at a time (0: all cores).', lower_bound=0)
  flags.DEFINE_bool('multi_label', False, 'Labels are comma-separated lists.')


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
