"""Re-encode a video dataset for fast clip decoding: short side 256 or 320, a keyframe every 16 frames, no audio.

The standard Kinetics speed-up (SlowFast DATASET.md, MMAction2 `resize_videos.py --dense`): with short GOPs a clip
seek decodes at most 15 extra frames, and small frames decode fast. Runs in parallel (PyAV, libx264).

  python scripts/prepare_videos.py --in_dir RAW --out_dir OUT [--short_side 320] [--gop 16] [--workers N]
      [--manifest RAW/train.csv]

Without --manifest, videos are found as RAW/<class>/<video> and classes are numbered in sorted order
(OUT/classes.txt). With --manifest, its `path label` lines (paths relative to --in_dir) are kept. Writes
OUT/<path>.mp4 and OUT/manifest.csv (paths relative to OUT); videos that fail are listed and left out, and the
exit status is then 1.
"""
import multiprocessing
import os
import sys

from absl import app
from absl import flags
import av

from mvit_jax.data import decode
from mvit_jax.data import sources

_IN_DIR = flags.DEFINE_string('in_dir', None, 'Folder of source videos.', required=True)
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Output folder.', required=True)
_MANIFEST = flags.DEFINE_string('manifest', None, 'Optional input manifest (paths relative to --in_dir).')
_SHORT_SIDE = flags.DEFINE_integer(
    'short_side', 320, 'Short side of the output, at least what the training augmentation samples (320 for the '
    'Kinetics jitter 256-320); smaller videos keep their size.')
_GOP = flags.DEFINE_integer('gop', 16, 'Keyframe interval in frames.')
_CRF = flags.DEFINE_integer('crf', 23, 'libx264 quality (lower is better).')
_WORKERS = flags.DEFINE_integer('workers', 0, 'Processes (0: all cores).')

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v')


def reencode(src: str, dst: str, *, short_side: int, gop: int, crf: int = 23) -> None:
  """Writes `src`'s first video stream to `dst` (H.264, yuv420p, even size, timestamps kept, no other streams)."""
  tmp = dst + '.part'
  os.makedirs(os.path.dirname(dst) or '.', exist_ok=True)
  with av.open(src) as inp:
    if not inp.streams.video:
      raise decode.DecodeError('no video stream')
    vin = inp.streams.video[0]
    vin.thread_type = 'AUTO'
    height, width = decode.resized_shape(vin.height, vin.width, min(short_side, vin.height, vin.width))
    height, width = height - height % 2, width - width % 2  # yuv420p needs even sizes.
    with av.open(tmp, 'w', format='mp4') as out:
      vout = out.add_stream('libx264', rate=vin.average_rate or vin.guessed_rate or 30)
      vout.width, vout.height, vout.pix_fmt = width, height, 'yuv420p'
      vout.time_base = vin.time_base
      vout.options = {'g': str(gop), 'keyint_min': str(gop), 'crf': str(crf), 'preset': 'fast'}
      last_pts = None
      for frame in inp.decode(vin):
        pts = frame.pts if frame.pts is not None and (last_pts is None or frame.pts > last_pts) else (
            0 if last_pts is None else last_pts + 1)  # Encoders need increasing timestamps.
        last_pts = pts
        small = frame.reformat(width=width, height=height, format='yuv420p')
        small.pts, small.time_base = pts, vin.time_base
        out.mux(vout.encode(small))
      out.mux(vout.encode())
  os.replace(tmp, dst)


def _job(args):
  src, dst, short_side, gop, crf = args
  try:
    reencode(src, dst, short_side=short_side, gop=gop, crf=crf)
    return None
  except (decode.DecodeError, av.error.FFmpegError, OSError, ValueError) as e:
    if os.path.exists(dst + '.part'):
      os.remove(dst + '.part')
    return f'{type(e).__name__}: {e}'


def find_videos(in_dir: str) -> tuple[list[tuple[str, int]], list[str]]:
  """([(path relative to in_dir, label)], class names) from the in_dir/<class>/<video> layout."""
  classes = sorted(d for d in os.listdir(in_dir) if os.path.isdir(os.path.join(in_dir, d)))
  entries = []
  for label, name in enumerate(classes):
    for file in sorted(os.listdir(os.path.join(in_dir, name))):
      if file.lower().endswith(VIDEO_EXTENSIONS):
        entries.append((os.path.join(name, file), label))
  return entries, classes


def main(argv):
  del argv
  in_dir, out_dir = _IN_DIR.value, _OUT_DIR.value
  if _MANIFEST.value:
    entries = [(os.path.relpath(r.path, in_dir), r.label)
               for r in sources.read_manifest(_MANIFEST.value, in_dir)]
    classes = None
  else:
    entries, classes = find_videos(in_dir)
  os.makedirs(out_dir, exist_ok=True)
  outputs = [os.path.splitext(rel)[0] + '.mp4' for rel, _ in entries]
  jobs = [(os.path.join(in_dir, rel), os.path.join(out_dir, out), _SHORT_SIDE.value, _GOP.value, _CRF.value)
          for (rel, _), out in zip(entries, outputs)]
  workers = min(_WORKERS.value or os.cpu_count() or 1, max(1, len(jobs)))
  if workers == 1:
    errors = [_job(j) for j in jobs]
  else:
    with multiprocessing.get_context('spawn').Pool(workers) as pool:
      errors = pool.map(_job, jobs, chunksize=1)
  with open(os.path.join(out_dir, 'manifest.csv'), 'w') as f:
    for (_, label), out, error in zip(entries, outputs, errors):
      if error is None:
        f.write(f'{out} {label}\n')
  if classes is not None:
    with open(os.path.join(out_dir, 'classes.txt'), 'w') as f:
      f.writelines(f'{name}\n' for name in classes)
  failed = [(job[0], error) for job, error in zip(jobs, errors) if error is not None]
  for src, error in failed:
    print(f'FAILED {src}: {error}')
  print(f're-encoded {len(jobs) - len(failed)} of {len(jobs)} videos to {out_dir} '
        f'(short side {_SHORT_SIDE.value}, keyframe every {_GOP.value} frames, no audio)')
  sys.exit(1 if failed else 0)


if __name__ == '__main__':
  app.run(main)
