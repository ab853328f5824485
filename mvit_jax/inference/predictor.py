"""Inference on a model folder (a converted checkpoint or a training workdir) from Python.

    predictor = inference.load('/tmp/mvit_demo')
    views = predictor.preprocess_video('clip.mp4')     # uint8 (V, T, H, W, 3): the card's evaluation views
    probs = predictor.probabilities(views)            # (C,) float64, per-view softmax averaged over the views
    emb = predictor.features(views)['pre_logits']     # (V, D) float32

An action detector (`predictor.detector`) scores person boxes instead: `predictor.detect(views, boxes)`, with the
keyframe clips and views of `mvit_jax.inference.detect`.

A video becomes views exactly as the evaluation loader makes them (the same decode, sampling and eval transform
functions, with the model card's input recipe); the forward pass is the evaluator's (`evaluate.make_predict_fn`:
normalisation on the device, the batch sharded over this host's devices). Image models read image files.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from mvit_jax.train import config as config_lib
from mvit_jax.inference import recipes
from mvit_jax.train import evaluate
from mvit_jax.models import model_card
from mvit_jax.train import sharding as sharding_lib
from mvit_jax.data import config as data_config_lib
from mvit_jax.data import decode
from mvit_jax.data import device_preprocess
from mvit_jax.data import pipeline
from mvit_jax.data import sampling
from mvit_jax.data import sources
from mvit_jax.data import transforms
from mvit_jax.system import storage
from mvit_jax.system.errors import InputError
from mvit_jax.models import pretrained

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.gif', '.tif', '.tiff')


class ImageSource(sources.FileSource):
  """Image files (local or URL) as one-frame clips: Pillow decode, short side resized bilinearly (as the TFDS image
  source)."""

  def load(self, i: int, index_fn: decode.IndexFn, short_side: int = 0, fetched=None) -> decode.Clip:
    path = self.records[i].path
    try:
      if isinstance(fetched, Exception):
        raise fetched
      with storage.open_file(path, 'rb', head=fetched) as f, Image.open(f) as image:
        height, width = decode.resized_shape(image.height, image.width, short_side)
        frame = np.asarray(image.convert('RGB').resize((width, height), Image.BILINEAR))
    except FileNotFoundError:
      raise decode.DecodeError('missing file') from None
    except (OSError, ValueError) as e:  # Pillow's UnidentifiedImageError is an OSError.
      raise decode.DecodeError(f'cannot read image: {e}') from None
    indices = np.asarray(index_fn(1, 0.0), np.int64)
    return decode.Clip(np.repeat(frame[None], len(indices), axis=0), indices, 0.0, 1, 1)


class ArraySource:
  """One in-memory clip (N, H, W, 3) uint8 at `fps`, read like a video file (short side resized with OpenCV)."""

  def __init__(self, frames: np.ndarray, fps: float):
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
      raise InputError(f'a clip is uint8 (N, H, W, 3) frames with N >= 1, got {frames.dtype} {frames.shape}')
    self.frames, self.fps = frames, fps

  def load(self, i: int, index_fn: decode.IndexFn, short_side: int = 0) -> decode.Clip:
    del i
    indices = np.asarray(index_fn(len(self.frames), self.fps), np.int64)
    frames = self.frames[indices]
    if short_side:
      frames = transforms.resize_short_side(frames, short_side)
    return decode.Clip(frames, indices, self.fps, len(self.frames), len(self.frames))


def eval_views(source, index: int, cfg) -> np.ndarray:
  """uint8 (V, T, crop, crop, 3): the V = test_num_clips x test_num_crops views (crop fastest) of video `index`,
  as the evaluation loader makes them; raises decode.DecodeError naming what is wrong with the file."""
  views, clips, load = [], {}, source.load
  if pipeline.fetches_ahead(source):
    load = functools.partial(source.load, fetched=source.fetch([index])[0])  # One request for all the clips.
  for view in range(cfg.test_num_clips * cfg.test_num_crops):
    clip_idx, crop_idx = sampling.test_view(view, cfg.test_num_crops)
    if clip_idx not in clips:  # Views of one clip differ only in the spatial crop: decode it once.
      clips[clip_idx] = load(index, lambda n, fps, c=clip_idx: sampling.test_clip_indices(n, fps, c, cfg),
                             transforms.eval_short_side(cfg)).frames
    views.append(transforms.eval_transform(clips[clip_idx], crop_idx, cfg.test_num_crops, cfg))
  return np.stack(views)


def data_config(recipe: model_card.InputRecipe):
  """A data config (mvit_jax.data.config) whose evaluation keys are the recipe's."""
  cfg = data_config_lib.default_data_config()
  recipe.apply_to(cfg)
  return cfg


def parse_views(text: str) -> tuple[int, int]:
  """'CLIPSxCROPS' (e.g. '5x1', '3x3') -> (clips, crops); crops is 1 or 3."""
  try:
    clips, crops = (int(x) for x in text.lower().split('x'))
  except ValueError:
    raise InputError(f'--views {text!r}: expected CLIPSxCROPS, e.g. 5x1 or 4x3') from None
  if clips < 1 or crops not in (1, 3):
    raise InputError(f'--views {text!r}: needs at least 1 clip and 1 or 3 crops')
  return clips, crops


class Predictor:
  """A model with its card, its evaluation views and its jitted forward pass over this host's devices.

  `batch_size` views go through one forward pass (rounded up to a multiple of the device count; shorter batches
  are padded, so each output set compiles once).
  """

  def __init__(self, module, variables, card: model_card.ModelCard, *, views: tuple[int, int] | None = None,
               batch_size: int = 16, test_view: str | None = None):
    self.module, self.card = module, card
    recipe = card.input or recipes.input_recipe('pyslowfast', card.name, module.config)
    if views is not None:
      recipe = dataclasses.replace(recipe, num_clips=views[0], num_crops=views[1])
    if test_view is not None:
      if not self.detector:
        raise InputError(f'a test view ({test_view!r}) is for action detectors; {card.name} here is a classifier')
      if test_view not in data_config_lib.AVA_TEST_VIEWS:
        raise InputError(f'test view {test_view!r}: expected one of {", ".join(data_config_lib.AVA_TEST_VIEWS)}')
      recipe = dataclasses.replace(recipe, test_view=test_view)
    self.recipe = recipe
    self.data_config = data_config(recipe)
    devices = jax.local_devices()
    self.mesh = sharding_lib.make_mesh({'data': -1, 'fsdp': 1, 'model': 1}, devices)
    self.rules = sharding_lib.rules_from_config(config_lib.base_config().sharding_rules)
    self.batch_size = -(-batch_size // len(devices)) * len(devices)
    self.params = jax.device_put(variables['params'], jax.NamedSharding(self.mesh, jax.P()))
    self._forward = {}  # Feature names -> evaluate.make_predict_fn.

  @property
  def image(self) -> bool:
    """Image model: reads image files (one-frame clips)."""
    return self.module.config.image

  @property
  def num_views(self) -> int:
    return self.recipe.num_clips * self.recipe.num_crops

  @property
  def stage_names(self) -> tuple[str, ...]:
    """'stage1', ... of `features(..., stages=True)`."""
    cfg = self.module.config
    x = jax.ShapeDtypeStruct((1, cfg.num_frames, cfg.input_size, cfg.input_size, 3), np.float32)
    shapes = jax.eval_shape(lambda p, x: self.module.apply({'params': p}, x, method='features'), self.params, x)
    return tuple(sorted(k for k in shapes if k.startswith('stage')))

  def class_name(self, index: int) -> str | None:
    return None if self.card.classes is None else self.card.classes[index]

  def make_source(self, paths) -> sources.FileSource:
    """A source of video files (image files for image models), labels 0."""
    records = [sources.VideoRecord(p, 0) for p in paths]
    return ImageSource(records) if self.image else sources.FileSource(records)

  def preprocess_video(self, path: str) -> np.ndarray:
    """uint8 (V, T, crop, crop, 3): the card's views of a video file (of an image file for image models);
    raises decode.DecodeError naming what is wrong with the file."""
    return eval_views(self.make_source([path]), 0, self.data_config)

  def preprocess_clip(self, frames: np.ndarray, fps: float = 30.0) -> np.ndarray:
    """uint8 (V, T, crop, crop, 3): the card's views of an in-memory clip, every frame (N, H, W, 3) uint8 of a
    video at `fps` (frames are sampled from it as from a file; the short side is resized with OpenCV instead of
    the decoder's scaler, so pixels may differ from a file's by rounding)."""
    return eval_views(ArraySource(frames, fps), 0, self.data_config)

  def run(self, views: np.ndarray, features: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """uint8 views (N, T, crop, crop, 3) -> {'scores' (N, C), 'logits' (N, C), and each of `features`} float32."""
    forward = self._forward.get(features)
    if forward is None:
      forward = self._forward[features] = evaluate.make_predict_fn(self.module, self.mesh, self.rules,
                                                                    self.data_config, features)
    keys = ('scores', 'logits') + features
    parts = []
    for start in range(0, len(views), self.batch_size):
      chunk = views[start:start + self.batch_size]
      batch = np.zeros((self.batch_size,) + chunk.shape[1:], np.uint8)
      batch[:len(chunk)] = chunk
      rows = np.zeros(self.batch_size, np.int32)
      out = forward(self.params, sharding_lib.global_batch(
          {'video': batch, 'label': rows, 'video_index': rows, 'mask': np.arange(self.batch_size) < len(chunk)},
          self.mesh))
      parts.append({k: out[k][:len(chunk)] for k in keys})
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}

  @property
  def detector(self) -> bool:
    """An action detector: it takes person boxes and gives each box K sigmoid scores (a card whose overrides hold
    detection: true)."""
    return bool(getattr(self.module.config, 'detection', False))

  def detect(self, views: np.ndarray, boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """uint8 views (B, T, h, w, 3) of B keyframes and each one's boxes (n_i, 4) normalised to its view -> each one's
    sigmoid scores (n_i, K) float32 (normalisation on the device, as the trainer's detection eval does it).

    Boxes are padded to the next power of two of the most boxes in a batch, so few shapes compile; the detector
    scores each box on its own, so padding changes no real box's scores."""
    forward = self._forward.get('detect')
    if forward is None:
      forward = self._forward['detect'] = self._detect_fn()
    counts = [len(b) for b in boxes]
    n = 1 << (max(counts) - 1).bit_length()
    out = []
    for start in range(0, len(views), self.batch_size):
      chunk = views[start:start + self.batch_size]
      batch = {'video': np.zeros((self.batch_size,) + chunk.shape[1:], np.uint8),
               'boxes': np.zeros((self.batch_size, n, 4), np.float32)}
      batch['video'][:len(chunk)] = chunk
      for row, clip_boxes in enumerate(boxes[start:start + self.batch_size]):
        batch['boxes'][row, :len(clip_boxes)] = clip_boxes
      scores = forward(self.params, sharding_lib.global_batch(batch, self.mesh))
      out += [scores[row, :counts[start + row]] for row in range(len(chunk))]
    return out

  def _detect_fn(self):
    """(params, global batch {'video', 'boxes'}) -> host float32 sigmoid scores (B, N, K), jitted."""
    module, data = self.module, self.data_config

    def scores(params, batch):
      videos = device_preprocess.preprocess_on_device(batch['video'], None, data, train=False)
      logits = module.apply({'params': params}, videos, batch['boxes'], train=False)
      return jax.nn.sigmoid(logits.astype(jnp.float32))

    jitted = jax.jit(scores, out_shardings=jax.NamedSharding(self.mesh, jax.P()))

    def run(params, batch):
      with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
        return np.asarray(jitted(params, batch).addressable_data(0))

    return run

  def logits(self, views: np.ndarray) -> np.ndarray:
    """(V, C) float32 logits of each view."""
    return self.run(views)['logits']

  def probabilities(self, views: np.ndarray) -> np.ndarray:
    """(C,) float64: the views' softmax probabilities averaged (multi-label models: their sigmoid scores
    max-pooled), as the evaluator scores a video."""
    return average_views(self.run(views)['scores'], self.recipe.multi_label)

  def features(self, views: np.ndarray, stages: bool = False) -> dict[str, np.ndarray]:
    """{'pre_logits': (V, D)} float32, the embedding the classifier takes, and with `stages` each stage's last
    token grid 'stage{i}' (V, T', H', W', C_i)."""
    names = ('pre_logits',) + (self.stage_names if stages else ())
    out = self.run(views, names)
    return {k: out[k] for k in names}


def average_views(scores: np.ndarray, multi_label: bool = False) -> np.ndarray:
  """(C,) float64 mean (multi_label: max) of one video's per-view scores (V, C), by the evaluator's ViewAggregator."""
  aggregator = evaluate.ViewAggregator(multi_label)
  count = len(scores)
  aggregator.add(scores, np.zeros(count, np.int32), np.zeros(count, np.int32), np.ones(count, bool))
  return aggregator.result()[1][0]


def load(model_dir: str, *, views: tuple[int, int] | None = None, batch_size: int = 16,
         test_view: str | None = None, **overrides) -> Predictor:
  """The Predictor of a converted-checkpoint folder or a training workdir, local or URL (its model.json and latest
  params).

  `views` (clips, crops) replaces the card's, and for an action detector `test_view` ('center' or 'full');
  `overrides` replace config fields that leave the parameters as they are (e.g. dtype='bfloat16', scan_blocks=True).
  """
  card = model_card.read(model_dir)
  module, variables = pretrained.load_pretrained(model_dir, **overrides)
  if card.classes is not None and len(card.classes) != module.config.num_classes:
    raise InputError(f'{model_dir}: the model card names {len(card.classes)} classes, the model has '
                     f'{module.config.num_classes}')
  return Predictor(module, variables, card, views=views, batch_size=batch_size, test_view=test_view)
