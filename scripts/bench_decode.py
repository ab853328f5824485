"""Video decoding options for 16x4 training clips: CPU time per clip and frames decoded, against decode_video.

One process, no pipeline: each option decodes the same random 16x4 clips (PySlowFast's indices for 16 frames at
stride 4 from 30 fps videos) from H.264 files encoded with x264's defaults (preset medium: keyframe interval up
to 250 frames plus scene cuts, 3 B-frames with b-pyramid), like Kinetics. Options run interleaved, clip by clip,
and each figure is the best of --repeats passes, so that load from other processes hits them alike; CPU time is
the process's (all its threads), i.e. clips/s per core. `frames` says whether the frames equal the reference's
(`decode_video(skip_unused=False)`: every frame from the keyframe on); otherwise the largest difference.

  python scripts/bench_decode.py [--num_videos 48] [--clips 48] [--repeats 5] [--sampling clip|segment]

Options: reference; skip (decode_video: non-reference frames that no index resolves to are not decoded);
skip + FFmpeg threads (frame / slice, 2 threads); OpenCV's VideoCapture (FFmpeg backend, 1 thread: seek,
grab, retrieve the sampled frames); torchcodec's VideoDecoder and decord2's VideoReader (when importable;
1 thread; they need system FFmpeg libraries or bundle their own).

H.264 has no reduced-resolution decoding (FFmpeg's `lowres` exists only for MJPEG and some old DCT codecs).
OpenCV, torchcodec and decord2 convert YUV to RGB with swscale, hence `differ` by up to ~11 levels from
decode_video's exact BT.601 conversion; a wrong frame would differ by > 50 (the squares move 3 px a frame).

Output (the shared 2-core VM, load average 7-10 from other jobs, 2026-12-06; 48 videos 340x256 / 384x288 /
426x320, crf 18, 2.17 Mbit/s; `--clips 48 --repeats 3`; torchcodec 0.17.0 on Debian 12's FFmpeg 5.1 libraries,
decord2 3.4.0, OpenCV 5.1, PyAV 18.1 with its FFmpeg 8):
  | option | CPU ms / clip | wall ms / clip | frames decoded / clip | x reference (CPU) | frames |
  | reference | 199.6 | 590.0 | 167.4 | 1.00 | identical |
  | skip | 186.4 | 545.5 | 151.8 | 1.07 | identical |
  | frame2 | 202.2 | 407.2 | 167.4 | 0.99 | identical |
  | skip_frame2 | 190.9 | 378.1 | 151.8 | 1.05 | identical |
  | skip_slice2 | 182.9 | 511.6 | 151.8 | 1.09 | identical |
  | opencv | 197.8 | 562.3 | n/a | 1.01 | differ (max 11) |
  | torchcodec | 284.6 | 829.0 | n/a | 0.70 | differ (max 11) |
  | decord | 197.0 | 536.6 | n/a | 1.01 | differ (max 11) |
The CPU figures are inflated by the load (about 1 ms per decoded frame on an idle core); the ratios come from
interleaved runs. slice threads do nothing on x264's one-slice streams (skip_slice2 = skip within noise); frame
threads cost CPU for wall time. These noisy videos get few B-frames from x264's adaptive decision, so most of the
~150 frames from the keyframe (up to 250 apart) to the clip's end are P-frames, which every option must decode.
With `--blur 1` (0.40 Mbit/s, more B-frames; load 3-7): skip 1.15x (131.5 frames decoded, was 160.2), skip +
frame threads 0.99x, skip + slice threads 1.07x, frame threads 0.86x, OpenCV 1.00x, decord2 0.94x, torchcodec
0.51x (64.9 ms CPU per clip for the reference).
"""
import os
import time

from absl import app
from absl import flags
import av
import cv2
import numpy as np

from mvit_jax.data import decode
from mvit_jax.data import sampling
from mvit_jax.data import synthetic

_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 48, 'Videos to generate (10 s at 30 fps each).')
_CLIPS = flags.DEFINE_integer('clips', 48, 'Clips per pass (video i % num_videos, random start).')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Passes; each figure is the best pass.')
_SAMPLING = flags.DEFINE_enum('sampling', 'clip', ['clip', 'segment'],
                              'clip: 16 frames at stride 4; segment: one frame from each of 16 equal segments.')
_CRF = flags.DEFINE_integer('crf', 18, 'x264 quality of the generated videos.')
_BLUR = flags.DEFINE_float('blur', 0.0, 'Gaussian blur (sigma, px) of the frames before encoding: less noise, so '
                           'that x264 picks more B-frames, as it does on camera footage (0: none).')
_VIDEO_DIR = flags.DEFINE_string('video_dir', '/tmp/mvit_bench_decode_videos', 'Where the videos live.')
_OPTIONS = flags.DEFINE_list('options', ['reference', 'skip', 'frame2', 'skip_frame2', 'skip_slice2', 'opencv',
                                         'torchcodec', 'decord'],
                             'Options to time.')

FPS, SECONDS, NUM_FRAMES, STRIDE = 30, 10, 16, 4
SIZES = ((256, 340), (288, 384), (320, 426))  # (H, W): short side 256-320, Kinetics' 4:3.


def write_videos(folder: str, num_videos: int, crf: int, blur: float) -> list[str]:
  """`folder/v{i}_*.mp4`: moving squares + noise (synthetic.motion_frames), blurred by `blur` px, x264 defaults;
  written once."""
  os.makedirs(folder, exist_ok=True)
  paths = []
  for i in range(num_videos):
    path = os.path.join(folder, f'v{i}_crf{crf}' + (f'_blur{blur}' if blur else '') + '.mp4')
    if not os.path.exists(path):
      height, width = SIZES[i % len(SIZES)]
      frames = synthetic.motion_frames(i % 6, np.random.default_rng(i), num_frames=FPS * SECONDS, height=height,
                                       width=width, speed=3.0)
      if blur:
        frames = np.stack([cv2.GaussianBlur(frame, (0, 0), blur) for frame in frames])
      synthetic.write_video(path + '.tmp.mp4', frames, fps=FPS, gop=None, preset='medium', crf=crf)
      os.rename(path + '.tmp.mp4', path)
    paths.append(path)
  return paths


def clip_indices(num_frames: int, rng: np.random.Generator, mode: str) -> np.ndarray:
  if mode == 'segment':
    return sampling.segment_indices(num_frames, NUM_FRAMES, rng)
  span = sampling.clip_size(NUM_FRAMES, STRIDE, FPS, FPS)
  start, end = sampling.start_end(num_frames, span, -1, 1, rng=rng)
  return sampling.clip_indices(start, end, NUM_FRAMES, num_frames)


def pyav(skip_unused: bool, threads: int = 1, thread_type: str = 'AUTO'):
  """decode_video with the given frame skipping and FFmpeg threading: (path, indices) -> (frames, decoded)."""
  def run(path, indices):
    container = av.open(path)
    try:
      stream = container.streams.video[0]
      stream.codec_context.thread_count = threads
      stream.thread_type = thread_type
      clip = decode._decode(container, stream, lambda n, fps: indices, 0, skip_unused)  # pylint: disable=protected-access
    finally:
      container.close()
    return clip.frames, clip.num_decoded
  return run


def opencv(path, indices):
  """OpenCV's FFmpeg backend, one thread: seek to the first index, grab forward, retrieve the sampled frames."""
  capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
  try:
    wanted = sorted(set(indices.tolist()))
    capture.set(cv2.CAP_PROP_POS_FRAMES, wanted[0])
    position, found = wanted[0], {}
    for i in wanted:
      while position <= i:
        if not capture.grab():
          raise RuntimeError(f'{path}: no frame {position}')
        position += 1
      found[i] = cv2.cvtColor(capture.retrieve()[1], cv2.COLOR_BGR2RGB)
  finally:
    capture.release()
  return np.stack([found[i] for i in indices.tolist()]), -1  # Its seek decodes from the keyframe unseen.


def torchcodec():
  """torchcodec's VideoDecoder (seeks from the container's index, one FFmpeg thread), or None if unusable."""
  try:
    from torchcodec.decoders import VideoDecoder  # pylint: disable=g-import-not-at-top
  except Exception as e:  # pylint: disable=broad-except  (missing package or FFmpeg libraries)
    print(f'torchcodec: not importable ({type(e).__name__}: {str(e).splitlines()[0][:120]})')
    return None

  def run(path, indices):
    frames = VideoDecoder(path, seek_mode='approximate', num_ffmpeg_threads=1, dimension_order='NHWC')
    return frames.get_frames_at(indices.tolist()).data.numpy(), -1
  return run


def decord():
  """decord2's VideoReader (the maintained fork of decord; one thread), or None if not importable."""
  try:
    import decord as decord_lib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f'decord: not importable ({e})')
    return None

  def run(path, indices):
    return decord_lib.VideoReader(path, num_threads=1).get_batch(indices.tolist()).asnumpy(), -1
  return run


def main(argv):
  del argv
  print(f'load average {os.getloadavg()}; cpu cores {os.cpu_count()}')
  paths = write_videos(_VIDEO_DIR.value, _NUM_VIDEOS.value, _CRF.value, _BLUR.value)
  sizes = [os.path.getsize(p) * 8 / SECONDS / 1e6 for p in paths]
  print(f'{len(paths)} videos in {_VIDEO_DIR.value}, {np.mean(sizes):.2f} Mbit/s on average')
  candidates = {'reference': pyav(False), 'skip': pyav(True), 'frame2': pyav(False, 2, 'FRAME'),
                'skip_frame2': pyav(True, 2, 'FRAME'), 'skip_slice2': pyav(True, 2, 'SLICE'), 'opencv': opencv}
  if 'torchcodec' in _OPTIONS.value:
    candidates['torchcodec'] = torchcodec()
  if 'decord' in _OPTIONS.value:
    candidates['decord'] = decord()
  options = {name: candidates[name] for name in ['reference'] + _OPTIONS.value if candidates.get(name)}
  rng = np.random.default_rng(0)
  clips = [(paths[i % len(paths)], clip_indices(FPS * SECONDS, rng, _SAMPLING.value)) for i in range(_CLIPS.value)]
  reference = [options['reference'](path, indices)[0] for path, indices in clips]
  cpu = {name: [] for name in options}
  wall = {name: [] for name in options}
  decoded = {name: 0 for name in options}
  diff = {name: 0 for name in options}
  for _ in range(_REPEATS.value):
    totals = {name: [0.0, 0.0] for name in options}
    for k, (path, indices) in enumerate(clips):
      for name, run in options.items():
        c0, w0 = time.process_time(), time.perf_counter()
        frames, num_decoded = run(path, indices)
        totals[name][0] += time.process_time() - c0
        totals[name][1] += time.perf_counter() - w0
        decoded[name] += num_decoded
        if frames.shape != reference[k].shape:
          diff[name] = 255
        else:
          diff[name] = max(diff[name], int(np.abs(frames.astype(np.int16) - reference[k]).max()))
    for name in options:
      cpu[name].append(totals[name][0] / len(clips))
      wall[name].append(totals[name][1] / len(clips))
  print(f'load average {os.getloadavg()}')
  print(f'{len(clips)} {_SAMPLING.value} clips x {_REPEATS.value} passes, best pass:')
  print('| option | CPU ms / clip | wall ms / clip | frames decoded / clip | x reference (CPU) | frames |')
  print('| --- | ---: | ---: | ---: | ---: | --- |')
  base = min(cpu['reference'])
  for name in options:
    per_clip = decoded[name] / len(clips) / _REPEATS.value
    frames_decoded = f'{per_clip:.1f}' if per_clip >= 0 else 'n/a'
    same = 'identical' if diff[name] == 0 else f'differ (max {diff[name]})'
    print(f'| {name} | {1e3 * min(cpu[name]):.1f} | {1e3 * min(wall[name]):.1f} | {frames_decoded} | '
          f'{base / min(cpu[name]):.2f} | {same} |')


if __name__ == '__main__':
  app.run(main)
