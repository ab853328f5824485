"""Training clips of video files decoded by NVIDIA DALI (data.loader='dali'), on the GPU or, for VP8, VP9 and MJPEG,
on the CPU; the same clips as `pipeline.make_train_iterator` for the Kinetics recipe.

The host decides everything random with our own code, exactly as the grain path does: a grain dataset of the same
structure (seeded shuffle, repeat, random_map) gives every element the same RNG, from which `_TrainPlan` draws the
frame indices (`sampling.train_clip_indices`, from the frame count and rate in the video's header, read with PyAV
once per video) and, per repeated sample, the crop window and flip (`transforms`). DALI gets the encoded bytes, the
frame indices and the windows through one external source, decodes exactly those frames
(`fn.decoders.video(frames=...)`, a per-sample argument), resizes each window of the native frames once to
crop_size (bilinear, no antialiasing: cv2.resize's sampling positions, within 1 level) and flips it.

Resume: the state is the grain plan iterator's position after the last batch delivered; batches DALI prefetched
beyond it are dropped on set_state and planned again.

Bad videos are found on the host before DALI sees them (skipped, replaced and counted as in the grain path): files
that cannot be read or opened, no video stream, a codec the chosen DALI backend cannot decode, and streams with fewer
packets than the sampled frames need (truncated). Corrupt data inside a stream is only found by DALI's decoder,
which fails the whole batch: that raises, naming the batch's videos.

Frame i is the i-th frame in presentation order (DALI's index), which is the grain path's frame at time i / fps for
constant-frame-rate video; variable-frame-rate files get different frames.
"""
# This module is the train pipeline's second back end: it shares pipeline.py's (and decode.py's) private helpers.
# pylint: disable=protected-access
import collections
import dataclasses
import io

import av
import grain
import numpy as np

from mvit_jax.data import decode
from mvit_jax.data import pipeline
from mvit_jax.data import sampling
from mvit_jax.data import sources
from mvit_jax.data import transforms
from mvit_jax.system import storage

# Codecs (FFmpeg canonical names) each fn.decoders.video backend decodes (DALI 2.4 documentation).
DECODABLE = {'cpu': frozenset({'vp8', 'vp9', 'mjpeg'}),
             'mixed': frozenset({'vp8', 'vp9', 'mjpeg', 'av1', 'mpeg4', 'h264', 'hevc'})}


@dataclasses.dataclass(frozen=True)
class Header:
  """What the plan needs of a video: the frame count and rate the grain path samples from (the header's frame
  count, else its duration x fps), the native frame size, and the frames the stream really holds (its packets)."""
  num_frames: int
  fps: float
  height: int
  width: int
  num_packets: int


def read_header(data: bytes, codecs: frozenset[str]) -> Header:
  """Header of an encoded video (its packets demuxed, not decoded); DecodeError when DALI cannot decode it."""
  try:
    with av.open(io.BytesIO(data)) as container:
      if not container.streams.video:
        raise decode.DecodeError('no video stream')
      stream = container.streams.video[0]
      codec = stream.codec_context.codec.canonical_name
      if codec not in codecs:
        raise decode.DecodeError(f'codec {codec!r} is not one DALI decodes here ({", ".join(sorted(codecs))})')
      fps, num_frames = decode.stream_timing(container, stream)
      height, width = stream.codec_context.height, stream.codec_context.width
      num_packets = sum(1 for packet in container.demux(stream) if packet.size)
  except decode.DecodeError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (PyAV's errors: a property of this file)
    raise decode.DecodeError(f'cannot read the header: {e}') from None
  if fps <= 0 or num_packets == 0:
    raise decode.DecodeError('no frame rate or no frames in the header')
  return Header(num_frames or num_packets, fps, height, width, num_packets)


def in_stream(indices: np.ndarray, header: Header) -> np.ndarray:
  """Indices clamped to the frames the stream holds (the last one stands for up to a few missing frames, as in
  decode.decode_video); DecodeError when more are missing (truncated file)."""
  last = header.num_packets - 1
  if indices.max() - last > max(decode._MAX_MISSING_FRAMES, decode._MAX_MISSING_FRACTION * header.num_frames):
    raise decode.DecodeError(f'stream ends at frame {last} but the header promises {header.num_frames} frames '
                             '(truncated?)')
  return np.minimum(indices, last)


def train_window(rng: np.random.Generator, height: int, width: int, cfg) -> tuple[np.ndarray, bool]:
  """`transforms.train_transform`'s random crop and flip for (height, width) frames, without RandAugment: the
  window float32 (4,) (top, left, bottom, right) in those frames' pixel-edge coordinates, and the flip."""
  if cfg.random_resized_crop:
    shape = (height, width)
    box = transforms.sample_random_resized_crop_box(rng, height, width, cfg.rrc_area, cfg.rrc_aspect)
  else:
    shape, box = transforms.sample_short_side_jitter_box(rng, height, width, cfg.crop_size, cfg.train_jitter_scales,
                                                         cfg.inverse_uniform_sampling)
  top, left, box_height, box_width = box
  scale = np.array([height / shape[0], width / shape[1]] * 2)
  window = (np.array([top, left, top + box_height, left + box_width]) * scale).astype(np.float32)
  return window, bool(cfg.random_flip and rng.random() < 0.5)


class _TrainPlan(grain.transforms.RandomMap):
  """Source index -> one video's work for DALI: {'encoded': uint8 (N,) the file, 'frames': int32 (T,), 'windows':
  float32 (R, 4) crop windows (top, left, bottom, right) in native pixels, 'flips': int32 (R,), 'label',
  'index': the source index used, 'failed': int32 (max_replacement_attempts,)}, R = num_repeated_samples.

  Draws from `rng` in the order of pipeline._TrainExample, so the clips are the grain path's.
  """

  def __init__(self, source: sources.FileSource, cfg, num_classes: int, codecs: frozenset[str]):
    self.source, self.cfg, self.num_classes, self.codecs = source, cfg, num_classes, codecs
    self._headers = {}  # Source index -> Header: the demux pass runs once per video.

  def _read(self, index: int) -> tuple[bytes, Header]:
    path = self.source.describe(index)
    try:
      data = storage.read_bytes(path)
    except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
      raise decode.DecodeError(f'cannot read: {e}') from None
    if index not in self._headers:
      self._headers[index] = read_header(data, self.codecs)
    return data, self._headers[index]

  def random_map(self, index, rng: np.random.Generator):
    cfg = self.cfg

    def plan(i):
      data, header = self._read(i)
      return data, header, in_stream(sampling.train_clip_indices(header.num_frames, header.fps, cfg, rng), header)

    (data, header, frames), index, failed = pipeline.load_or_replace(
        self.source, int(index), rng, cfg.max_replacement_attempts, plan)
    # The grain path samples its crops on the frames it decoded: at train_short_side when that is set.
    height, width = decode.resized_shape(header.height, header.width, cfg.train_short_side)
    views = [train_window(rng, height, width, cfg) for _ in range(cfg.num_repeated_samples)]
    native = np.array([header.height / height, header.width / width] * 2, np.float32)
    return {'encoded': np.frombuffer(data, np.uint8), 'frames': frames.astype(np.int32),
            'windows': np.stack([window * native for window, _ in views]),
            'flips': np.array([flip for _, flip in views], np.int32),
            'label': pipeline._label_array(self.source.label(index), self.num_classes, cfg.multi_label),
            'index': index, 'failed': failed}


def _build_pipeline(feed, *, videos_per_batch: int, repeats: int, crop_size: int, crop_first: bool, device: str,
                    num_threads: int, device_id: int | None):
  """The DALI pipeline: feed() -> (encoded, frames, then window and flip of each repeat) batches; output
  uint8 (R, T, crop, crop, 3) per video.

  crop_first: the windows are integer boxes cut out, then resized (transforms.random_resized_crop); otherwise each
  window is resized from the whole frame, which supplies the pixels around it (transforms.resized_window).
  """
  from nvidia.dali import fn, pipeline_def, types  # pylint: disable=g-import-not-at-top  (optional dependency)

  @pipeline_def(batch_size=videos_per_batch, num_threads=num_threads, device_id=device_id)
  def clips():
    encoded, frames, *views = fn.external_source(source=feed, num_outputs=2 + 2 * repeats, batch=True)
    decoded = fn.decoders.video(encoded, frames=frames, device=device)  # (T, H, W, 3) native frames.
    copies = []
    for window, flip in zip(views[0::2], views[1::2]):
      resize = dict(size=[crop_size, crop_size], interp_type=types.INTERP_LINEAR, antialias=False)
      if crop_first:  # Pixels next to the box's edges are interpolated from inside the box only, as after a crop.
        box = fn.cast(window, dtype=types.INT32)  # Whole pixels (random_resized_crop samples integer boxes).
        crop = fn.resize(fn.slice(decoded, start=box[0:2], end=box[2:4], axis_names='HW'), **resize)
      else:
        crop = fn.resize(decoded, roi_start=window[0:2], roi_end=window[2:4], roi_relative=False, **resize)
      copies.append(fn.flip(crop, horizontal=flip))
    return fn.stack(*copies)

  pipe = clips()
  pipe.build()
  return pipe


class DaliTrainIterator(grain.DatasetIterator):
  """Infinite iterator of {'video': uint8 (B, T, crop, crop, 3), 'label'} batches decoded by DALI; get_state /
  set_state are the plan iterator's (exact resume), checkpointed like a grain iterator."""

  def __init__(self, plans: grain.DatasetIterator, build_pipeline, *, videos_per_batch: int, repeats: int,
               account: pipeline._AccountFailures):
    super().__init__(plans)
    self._build_pipeline, self._videos_per_batch, self._repeats = build_pipeline, videos_per_batch, repeats
    self._account = account
    self._pipe = None
    self._pending = collections.deque()  # Batches DALI has taken and not returned: (labels, failed, indices, state).
    self._state = plans.get_state()

  def _feed(self):
    """DALI's external source: the next batch of plans, as the graph's inputs."""
    plans = [next(self._parent) for _ in range(self._videos_per_batch)]
    self._pending.append((np.stack([p['label'] for p in plans]), np.stack([p['failed'] for p in plans]),
                          [p['index'] for p in plans], self._parent.get_state()))
    views = []
    for k in range(self._repeats):
      views += [[p['windows'][k] for p in plans], [p['flips'][k] for p in plans]]
    return [[p['encoded'] for p in plans], [p['frames'] for p in plans], *views]

  def start_prefetch(self) -> None:
    super().start_prefetch()
    if self._pipe is None:
      self._pipe = self._build_pipeline(self._feed)

  def __next__(self):
    self._assert_not_closed()
    self.start_prefetch()
    try:
      (clips,) = self._pipe.run()
    except RuntimeError as e:  # A decode error inside a stream fails the batch; DALI does not say which video.
      if isinstance(e, pipeline.TooManyBadVideosError) or not self._pending:  # Raised by _feed, not by DALI.
        raise
      paths = [self._account.source.describe(i) for i in self._pending[0][2]]
      raise RuntimeError(f'DALI failed on a batch of {", ".join(paths)}: {e}') from None
    labels, failed, _, self._state = self._pending.popleft()
    clips = clips.as_cpu().as_array()  # (videos, R, T, crop, crop, 3); the trainer places host batches itself.
    return self._account.map({'video': clips.reshape((-1,) + clips.shape[2:]),
                              'label': np.repeat(labels, self._repeats, axis=0), pipeline._FAILED: failed})

  def get_state(self) -> dict:
    return self._state

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state)
    self._state = state
    self._pipe = None  # Its prefetched batches were planned from the old position.
    self._pending.clear()

  def close(self) -> None:
    self._pipe = None
    super().close()


def make_train_iterator(data_config, *, num_classes: int, global_batch_size: int, seed: int,
                        process_index: int | None = None, process_count: int | None = None,
                        device_id: int | None = None) -> DaliTrainIterator:
  """`pipeline.make_train_iterator`'s batches and contract, decoded by DALI on `data_config.dali_device`.

  device_id: the GPU for 'mixed' (default: this process's first JAX device). Videos are read ahead by read_threads
  (more for a bucket) and decoded by DALI with num_workers CPU threads.
  """
  cfg = data_config
  process_index, process_count = pipeline._process_info(process_index, process_count)
  local_batch = pipeline._local_batch_size(global_batch_size, process_count, cfg.num_repeated_samples)
  source = sources.make_source(cfg, 'train', num_classes)
  if not isinstance(source, sources.FileSource) or isinstance(source, sources.FrameFolderSource):
    raise ValueError(f"data.loader='dali' decodes video files (dataset_kind 'manifest'), not {cfg.dataset_kind!r}")
  if cfg.dali_device == 'mixed' and device_id is None:
    import jax  # pylint: disable=g-import-not-at-top
    device_id = jax.local_devices()[0].local_hardware_id
  ds = pipeline.train_index_dataset(len(source), seed=seed, process_index=process_index, process_count=process_count)
  num_local = len(ds)
  plans = (ds.repeat(None)
           .random_map(_TrainPlan(source, cfg, num_classes, DECODABLE[cfg.dali_device]))
           .to_iter_dataset(grain.ReadOptions(num_threads=pipeline.read_thread_count(cfg, source),
                                              prefetch_buffer_size=cfg.read_prefetch)))
  videos_per_batch = local_batch // cfg.num_repeated_samples
  build = lambda feed: _build_pipeline(  # pylint: disable=unnecessary-lambda-assignment
      feed, videos_per_batch=videos_per_batch, repeats=cfg.num_repeated_samples, crop_size=cfg.crop_size,
      crop_first=cfg.random_resized_crop, device=cfg.dali_device, num_threads=max(1, cfg.num_workers),
      device_id=None if cfg.dali_device == 'cpu' else device_id)
  return DaliTrainIterator(iter(plans), build, videos_per_batch=videos_per_batch, repeats=cfg.num_repeated_samples,
                           account=pipeline._AccountFailures(source, num_local, cfg.max_failure_fraction))
