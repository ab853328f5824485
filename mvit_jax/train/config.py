"""Trainer config schema, validation and helpers shared by `experiments/*.py`.

Every experiment starts from `base_config()` and changes values; `validate()` compares a config against that
schema before anything is compiled: an unknown key or a value of the wrong type raises `ConfigError` naming the
dotted key (e.g. `config.optimizer.base_lr`) and the closest valid one. `check_paths()` checks the workdir and the
data files a run reads, before anything starts.
"""
from collections.abc import Mapping
import importlib.util
import os
import tempfile
import uuid

import ml_collections
from ml_collections import config_dict

from mvit_jax.data import config as data_config_lib
from mvit_jax.system.errors import check_folder
from mvit_jax.system.errors import did_you_mean
from mvit_jax.system.errors import did_you_mean_path
from mvit_jax.system.errors import InputError
from mvit_jax.system import storage

# Model constructor overrides the trainer passes to `mvit_jax.models.create_model` (None: the model's default).
MODEL_OVERRIDES = {
    'num_classes': int,      # None: from the data (config.data.num_classes or the manifest/classes file).
    'num_frames': int,       # None: config.data.num_frames.
    'input_size': int,       # None: config.data.crop_size.
    'drop_path_rate': float,
    'head_dropout_rate': float,
    'pool_impl': str,
    'scan_blocks': bool,     # None: the model's default (on).
    'attention_impl': str,   # None: the model's default ('einsum'); 'xla' or 'cudnn': jax.nn.dot_product_attention.
}

REMAT_POLICIES = ('', 'full', 'nothing_saveable', 'everything_saveable', 'dots_saveable',
                  'dots_with_no_batch_dims_saveable')


DATASET_KINDS = ('manifest', 'frames', 'folder', 'tfds', 'prepared', 'dmvr', 'ava')


class ConfigError(InputError):
  """A config key is unknown, holds a value of the wrong type or a value outside its range."""


def base_config() -> ml_collections.ConfigDict:
  """Every trainer key with its default (MViT-B 16x4 Kinetics-400 recipe where one applies)."""
  c = ml_collections.ConfigDict()
  c.mode = 'train'                 # 'train' (with periodic eval) | 'eval' (latest checkpoint or init_from).
  c.seed = 0
  c.init_from = ''                 # Fine-tune: converted-checkpoint folder or training workdir ('' = scratch).
  c.init_from_inflate = 'centre'   # Image init_from for a video model: its 2-D kernels in the centre frame
                                   # ('centre') or repeated / kt over time ('average').
  # Parameters the optimizer updates: 'all' | 'head' | 'last_stage' (blocks from the last Q-pooling block on,
  # final norm, head) | comma-separated fnmatch patterns on '/'-joined parameter paths ('blocks_15,head',
  # 'blocks_1[45]/mlp/*'), which `python -m mvit_jax.train.optim MODEL` lists. The others get no optimizer
  # state and no update (mvit_jax.train.optim.make_optimizer); checkpoints still hold every parameter.
  c.train_only = 'all'

  # --- Steps (micro-steps: one loader batch each) -------------------------------------------------------------
  c.num_train_steps = 1000
  c.batch_size = 512               # Global clips per micro-step (all processes together).
  c.eval_batch_size = 64           # Global views per eval batch.
  c.grad_accum_steps = 1           # Optimizer update every k micro-steps (optax.MultiSteps).
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.eval_every_steps = 0           # 0: evaluate only after the last step. -1: never.
  c.eval_image_clips = 6           # Validation clips in TensorBoard's 'eval/clips' picture (0: none).
  c.eval_confusion_classes = 20    # Classes (most videos first) in the 'eval/confusion_matrix' picture (0: none).
  c.profile_steps = 0              # > 0: clu Profile of this many steps (after the first 10).
  # JAX's persistent compilation cache: a restarted run (preemption, eval after train) loads its compiled steps
  # instead of compiling them again. '{workdir}' stands for the run's workdir; a path shared by several runs (local
  # or gs://) also serves runs of the same graph; '' turns it off. The environment's JAX_COMPILATION_CACHE_DIR, when
  # set, wins.
  c.compilation_cache_dir = '{workdir}/compilation_cache'

  # --- Model --------------------------------------------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.name = 'mvit_b_16x4'
  for key, kind in MODEL_OVERRIDES.items():
    c.model[key] = config_dict.placeholder(kind)
  c.half_precision = True          # bfloat16 compute; parameters and optimizer state stay float32.
  c.remat_policy = ''              # '' (no remat), 'full' or a jax.checkpoint_policies name, per block.

  # --- Optimizer ----------------------------------------------------------------------------------------------
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adamw'       # 'adamw' | 'sgd'.
  c.optimizer.base_lr = 1.6e-3     # Peak LR per base_batch_size clips (scaled linearly with the effective batch).
  c.optimizer.base_batch_size = 512
  c.optimizer.warmup_start_lr = 1.6e-5  # Also per base_batch_size.
  c.optimizer.end_lr = 1.6e-5      # Cosine end value, per base_batch_size.
  c.optimizer.warmup_steps = 0     # Micro-steps.
  c.optimizer.schedule = 'cosine'  # 'cosine' | 'constant' (after warm-up).
  c.optimizer.weight_decay = 0.05  # Not applied to biases and other 1-D parameters.
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.momentum = 0.9       # SGD only.
  c.optimizer.nesterov = False     # SGD only.
  c.optimizer.grad_clip_norm = 1.0  # Global L2 norm; 0 disables.
  # Layer-wise LR decay (BEiT-style fine-tuning): layer l's updates scaled by layer_decay ** (depth + 1 - l),
  # l = 0 for the patch embedding and position tables, i + 1 for block i, depth + 1 for the head. 1.0 = off.
  c.optimizer.layer_decay = 1.0

  # --- Parallelism --------------------------------------------------------------------------------------------
  c.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1, 'model': 1})  # -1: all remaining devices.
  # Logical axis -> mesh axes, in priority order: batch over data x fsdp, parameters fully sharded over fsdp (their
  # width dimension), tensor-parallel dimensions over 'model'; names absent from the rules are replicated.
  c.sharding_rules = (('batch', ('data', 'fsdp')), ('embed', 'fsdp'), ('mlp', 'model'), ('qkv', 'model'),
                      ('heads', 'model'))

  # --- Synthetic demo data: generated into WORKDIR/synthetic_data when missing; fills the data paths ----------
  c.synthetic_data = ml_collections.ConfigDict()
  c.synthetic_data.enabled = False
  c.synthetic_data.num_classes = 4
  c.synthetic_data.videos_per_class = 40
  c.synthetic_data.num_frames = 32
  c.synthetic_data.height = 48
  c.synthetic_data.width = 64
  c.synthetic_data.seed = 0
  # With data.dataset_kind 'ava': mvit_jax.data.synthetic_ava's people (height x width frames, seed above).
  c.synthetic_data.ava_num_videos = 12
  c.synthetic_data.ava_num_val_videos = 4
  c.synthetic_data.ava_seconds = 8
  c.synthetic_data.ava_fps = 10.0

  # --- Data (mvit_jax.data) -----------------------------------------------------------------------------------
  c.data = data_config_lib.default_data_config()
  return c


def steps_per_epoch(num_videos: int, batch_size: int, repeated_samples: int = 1) -> int:
  """Micro-steps per epoch (drop remainder): each step reads batch_size / repeated_samples videos."""
  return max(num_videos * repeated_samples // batch_size, 1)


def set_epochs(config: ml_collections.ConfigDict, *, num_train_videos: int, epochs: float, warmup_epochs: float,
               eval_every_epochs: float = 0, checkpoint_every_steps: int = 1000) -> ml_collections.ConfigDict:
  """Converts an epoch-based recipe into the step keys (num_train_steps, warmup_steps, eval_every_steps)."""
  per_epoch = steps_per_epoch(num_train_videos, config.batch_size * config.grad_accum_steps,
                              config.data.num_repeated_samples) * config.grad_accum_steps
  config.num_train_steps = int(epochs * per_epoch)
  config.optimizer.warmup_steps = int(warmup_epochs * per_epoch)
  config.eval_every_steps = int(eval_every_epochs * per_epoch)
  config.checkpoint_every_steps = checkpoint_every_steps
  return config


def kinetics_recipe(model_name: str, *, num_classes: int, num_frames: int, sampling_rate: int,
                    drop_path_rate: float, num_train_videos: int, remat_policy: str = '') -> ml_collections.ConfigDict:
  """The MViT Kinetics-from-scratch recipe (paper Sec. 4 / App. D.1; PySlowFast MVIT_*_CONV.yaml).

  AdamW, peak LR 1.6e-3 per 512 clips (linearly scaled), 30 warm-up epochs from 1.6e-5, half-cosine to 1.6e-5
  at epoch 200, weight decay 0.05 (not on biases / norms), clipping at 1.0, head dropout 0.5, bfloat16 compute,
  2 repeated augmentations, test 5 clips x 1 crop; the data defaults carry the augmentation recipe.
  """
  c = base_config()
  c.model.name = model_name
  c.model.drop_path_rate = drop_path_rate
  c.model.head_dropout_rate = 0.5
  c.half_precision = True
  c.remat_policy = remat_policy

  c.batch_size = 512
  c.eval_batch_size = 256
  c.optimizer.name = 'adamw'
  c.optimizer.base_lr = 1.6e-3
  c.optimizer.base_batch_size = 512
  c.optimizer.warmup_start_lr = 1.6e-5
  c.optimizer.end_lr = 1.6e-5
  c.optimizer.weight_decay = 0.05
  c.optimizer.grad_clip_norm = 1.0

  d = c.data
  d.num_classes = num_classes
  d.num_frames, d.sampling_rate = num_frames, sampling_rate
  d.test_num_clips, d.test_num_crops = 5, 1
  d.num_repeated_samples = 2
  return set_epochs(c, num_train_videos=num_train_videos, epochs=200, warmup_epochs=30, eval_every_epochs=20)


def _type_ok(value, expected_type) -> bool:
  if expected_type is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if expected_type is tuple:
    return isinstance(value, (tuple, list))
  return isinstance(value, expected_type)


def _check(config: Mapping, schema: ml_collections.ConfigDict, prefix: str) -> None:
  for key in config.keys():
    name = f'{prefix}.{key}'
    if key not in schema:
      hint = did_you_mean(key, schema.keys()) or f"; known keys here: {', '.join(sorted(schema.keys()))}"
      raise ConfigError(f'Unknown config key {name!r}{hint}')
    value = config[key]
    if isinstance(schema[key], ml_collections.ConfigDict):
      if not isinstance(value, (ml_collections.ConfigDict, Mapping)):
        raise ConfigError(f'Config key {name!r} must be a group of keys, got {value!r}')
      _check(value, schema[key], name)
      continue
    ref = schema.get_ref(key)  # Placeholders keep their declared type while holding None.
    expected, optional = ref.get_type(), ref.get() is None
    if value is None:
      if not optional:
        raise ConfigError(f'Config key {name!r} must not be None (expected {expected.__name__})')
    elif not _type_ok(value, expected):
      raise ConfigError(
          f'Config key {name!r} has type {type(value).__name__} ({value!r}); expected {expected.__name__}')


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for unknown keys, wrong types and out-of-range values. Cheap: call before compiling."""
  _check(config, base_config(), 'config')
  if config.mode not in ('train', 'eval'):
    raise ConfigError(f"config.mode must be 'train' or 'eval', got {config.mode!r}")
  if config.remat_policy not in REMAT_POLICIES:
    raise ConfigError(f'config.remat_policy {config.remat_policy!r} is not one of {REMAT_POLICIES}')
  for key in ('num_train_steps', 'batch_size', 'eval_batch_size', 'grad_accum_steps', 'log_every_steps',
              'checkpoint_every_steps', 'keep_checkpoints'):
    if config[key] < 1:
      raise ConfigError(f'config.{key} must be >= 1, got {config[key]}')
  for key in ('eval_image_clips', 'eval_confusion_classes'):
    if config[key] < 0:
      raise ConfigError(f'config.{key} must be >= 0 (0: no picture), got {config[key]}')
  if '{' in config.compilation_cache_dir.replace('{workdir}', ''):
    raise ConfigError(f"config.compilation_cache_dir may hold '{{workdir}}' and no other placeholder, got "
                      f'{config.compilation_cache_dir!r}')
  if config.optimizer.name not in ('adamw', 'sgd'):
    raise ConfigError(f"config.optimizer.name must be 'adamw' or 'sgd', got {config.optimizer.name!r}")
  if config.optimizer.schedule not in ('cosine', 'constant'):
    raise ConfigError(f"config.optimizer.schedule must be 'cosine' or 'constant', got {config.optimizer.schedule!r}")
  if not 0 < config.optimizer.layer_decay <= 1:
    raise ConfigError(f'config.optimizer.layer_decay must be in (0, 1] (1 = off), got {config.optimizer.layer_decay}')
  if not all(p.strip() for p in config.train_only.split(',')):
    raise ConfigError(f"config.train_only {config.train_only!r} holds an empty pattern; use 'all', 'head', "
                      "'last_stage' or comma-separated parameter-path patterns")
  if config.data.dataset_kind not in DATASET_KINDS:
    raise ConfigError(f'config.data.dataset_kind {config.data.dataset_kind!r} is not one of {DATASET_KINDS}'
                      f'{did_you_mean(config.data.dataset_kind, DATASET_KINDS)}')
  _check_decode_size(config.data)
  _check_loader(config.data)
  _check_folder_kind(config.data)
  _check_detection(config.data)
  _check_ava_data(config.data)
  # Deferred: experiment files import this module, and the model zoo pulls in flax and orbax.
  from mvit_jax.models import adapt, variants  # pylint: disable=g-import-not-at-top
  if config.init_from_inflate not in adapt.INFLATE_MODES:
    raise ConfigError(f"config.init_from_inflate must be 'centre' or 'average', got {config.init_from_inflate!r}"
                      f'{did_you_mean(config.init_from_inflate, adapt.INFLATE_MODES)}')
  if config.model.name not in variants.VARIANTS:
    raise ConfigError(f'config.model.name {config.model.name!r} is not a model'
                      f'{did_you_mean(config.model.name, variants.VARIANTS)}; known: {", ".join(variants.VARIANTS)}')


def _check_decode_size(data: ml_collections.ConfigDict) -> None:
  """A decode-time resize below what the training augmentation samples would make it upscale blurred frames."""
  if not data.train_short_side:
    return
  if data.random_resized_crop:
    raise ConfigError(f'config.data.train_short_side must be 0 with random_resized_crop (its boxes are fractions of '
                      f'the native frame; decoding at {data.train_short_side} makes it upscale them)')
  if data.train_short_side < max(data.train_jitter_scales):
    top = max(data.train_jitter_scales)
    raise ConfigError(f'config.data.train_short_side {data.train_short_side} is below the short-side jitter\'s '
                      f'upper end {top}: use 0 (native) or >= {top}')


def _check_folder_kind(data: ml_collections.ConfigDict) -> None:
  """dataset_kind 'folder' names classes by their folders and splits by a fraction of each class."""
  if data.dataset_kind != 'folder':
    return
  if data.classes_file:
    raise ConfigError("config.data.classes_file must be empty with dataset_kind 'folder' (the class folders' names "
                      'are the classes)')
  if not 0 < data.folder_val_fraction < 1:
    raise ConfigError(f'config.data.folder_val_fraction must be in (0, 1), got {data.folder_val_fraction}')


def _check_detection(data: ml_collections.ConfigDict) -> None:
  """AVA detection trains on boxes with multi-hot labels: clip-level augmentations that mix or erase pixels would
  move content away from its boxes or blend two clips' people under one label set (PySlowFast's AVA configs use
  none of them), so they are refused rather than ignored."""
  if data.dataset_kind != 'ava':
    return
  refused = {'mixup_prob': data.mixup_prob > 0, 'random_erasing_prob': data.random_erasing_prob > 0,
             'randaugment': data.randaugment, 'label_smoothing': data.label_smoothing > 0}
  for key, on in refused.items():
    if on:
      raise ConfigError(f"config.data.{key} must be off (0 / False) with dataset_kind 'ava': detection trains "
                        'without mixup/cutmix, random erasing, RandAugment and label smoothing (PySlowFast AVA)')


def _check_ava_data(data: ml_collections.ConfigDict) -> None:
  """The ava_* keys (mvit_jax.data.ava) and the augmentations its loader does (jitter + crop + flip, one sample per
  keyframe, as PySlowFast's AVA loader)."""
  if data.dataset_kind != 'ava':
    return
  if data.ava_frame_dir and data.ava_video_dir:
    raise ConfigError('config.data.ava_video_dir must be empty when config.data.ava_frame_dir is set (clips come '
                      'from frame folders or from video files, not both)')
  if data.ava_test_view not in data_config_lib.AVA_TEST_VIEWS:
    raise ConfigError(f"config.data.ava_test_view must be 'center' or 'full', got {data.ava_test_view!r}")
  if data.ava_max_boxes < 1:
    raise ConfigError(f'config.data.ava_max_boxes must be >= 1, got {data.ava_max_boxes}')
  if not 0 <= data.ava_detection_score_thresh <= 1:
    raise ConfigError(f'config.data.ava_detection_score_thresh must be in [0, 1], got '
                      f'{data.ava_detection_score_thresh}')
  if data.ava_fps <= 0:
    raise ConfigError(f'config.data.ava_fps must be > 0, got {data.ava_fps}')
  secs = tuple(data.ava_valid_secs)
  if len(secs) != 2 or not all(isinstance(s, int) for s in secs) or secs[0] > secs[1]:
    raise ConfigError(f'config.data.ava_valid_secs must be (first, last) whole seconds, first <= last, got {secs}')
  if data.random_resized_crop:
    raise ConfigError("config.data.random_resized_crop must be False with dataset_kind 'ava' (short-side jitter + "
                      'crop, as PySlowFast; train_jitter_scales)')
  if data.num_repeated_samples != 1:
    raise ConfigError(f"config.data.num_repeated_samples must be 1 with dataset_kind 'ava', got "
                      f'{data.num_repeated_samples}')
  if min(data.train_jitter_scales) < data.crop_size:
    raise ConfigError(f'config.data.train_jitter_scales {tuple(data.train_jitter_scales)} must not be smaller than '
                      f'crop_size {data.crop_size}')


LOADERS = ('grain', 'dali')


def _check_loader(data: ml_collections.ConfigDict) -> None:
  """data.loader='dali' (mvit_jax.data.dali_loader, training clips only) needs DALI and a recipe it can do."""
  if data.loader not in LOADERS:
    raise ConfigError(f'config.data.loader {data.loader!r} is not one of {LOADERS}'
                      f'{did_you_mean(data.loader, LOADERS)}')
  if data.loader != 'dali':
    return
  if data.dali_device not in ('mixed', 'cpu'):
    raise ConfigError(f"config.data.dali_device must be 'mixed' or 'cpu', got {data.dali_device!r}")
  if importlib.util.find_spec('nvidia.dali') is None:
    raise ConfigError("config.data.loader='dali': DALI is not installed: pip install 'mvit_jax[dali]'")
  if data.dataset_kind != 'manifest':
    raise ConfigError(f"config.data.loader='dali' decodes video files (dataset_kind 'manifest'), not "
                      f'{data.dataset_kind!r}: use loader \'grain\'')
  if data.randaugment:
    raise ConfigError("config.data.loader='dali' cannot do RandAugment (DALI's is another implementation, not "
                      "PySlowFast's): set config.data.randaugment=False or loader='grain'")


def _check_readable_file(key: str, path: str) -> None:
  if storage.is_url(path):
    if not _url_exists(key, path):
      raise InputError(f'{key}: no such object {path!r}')
    return
  if not os.path.isfile(path):
    raise InputError(f'{key}: no such file {path!r}{did_you_mean_path(path)}')
  if not os.access(path, os.R_OK):
    raise InputError(f'{key}: cannot read {path!r} (permission denied)')


def _url_exists(key: str, path: str, folder: bool = False) -> bool:
  """Whether the object (or with `folder`, any object under the prefix) at `path` exists; InputError naming `key`
  and the path when the store cannot be asked."""
  try:
    return storage.isdir(path) if folder else storage.isfile(path)
  except Exception as e:  # pylint: disable=broad-except  (any client error: credentials, network, permissions)
    raise InputError(f'{key}: cannot read {path!r} ({storage.describe_error(e)})') from None


def _check_writable_folder(workdir: str) -> None:
  """Creates `workdir` if needed and writes a temporary file in it: the test that also catches read-only mounts
  and ACLs, which permission bits (os.access) do not show to root. In a bucket: writes and deletes an object."""
  if storage.is_url(workdir):
    probe = storage.join(workdir, f'.write_test-{uuid.uuid4().hex}')
    try:
      storage.write_text(probe, '')
      storage.remove_tree(probe)
    except Exception as e:  # pylint: disable=broad-except  (any client error: credentials, network, permissions)
      raise InputError(f'--workdir {workdir!r}: cannot write there ({storage.describe_error(e)})') from None
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.TemporaryFile(dir=workdir):
      pass
  except OSError as e:
    raise InputError(f'--workdir {workdir!r}: cannot write there ({e.strerror}: {e.filename or workdir})') from None


def _check_dmvr_shards(config: ml_collections.ConfigDict) -> None:
  """dataset_kind 'dmvr': the train glob in mode 'train', the eval glob when the run evaluates, must match files."""
  from mvit_jax.data import dmvr  # pylint: disable=g-import-not-at-top  (its protobuf classes: this kind only)
  data = config.data
  evaluates = config.mode == 'eval' or config.eval_every_steps >= 0
  for key, needed in (('train_shards', config.mode == 'train'), ('eval_shards', evaluates)):
    if data[key]:
      try:
        files = dmvr.list_files(data[key])
      except Exception as e:  # pylint: disable=broad-except  (OSError, or a store's error after its retries)
        raise InputError(f'config.data.{key}: cannot list {data[key]!r}: {storage.describe_error(e)}') from None
      if not files:
        raise InputError(f'config.data.{key}: no files match {data[key]!r}')
    elif needed:
      raise InputError(f"config.data.{key} is empty: dataset_kind 'dmvr' reads a glob of TFRecord files there")
  if data.classes_file:
    _check_readable_file('config.data.classes_file', data.classes_file)


def _check_prepared_shards(config: ml_collections.ConfigDict) -> None:
  """dataset_kind 'prepared': the train folder in mode 'train', the eval folder when the run evaluates, must hold
  the index that `python -m mvit_jax.data.prepare` writes last."""
  data = config.data
  evaluates = config.mode == 'eval' or config.eval_every_steps >= 0
  for key, needed in (('train_shards', config.mode == 'train'), ('eval_shards', evaluates)):
    if data[key]:
      if not _url_exists(f'config.data.{key}', storage.join(data[key], 'index.json')):
        raise InputError(f'config.data.{key}: {data[key]!r} holds no index.json (not a prepared folder, or '
                         'prepare has not finished)')
    elif needed:
      raise InputError(f"config.data.{key} is empty: dataset_kind 'prepared' reads a folder `prepare --out` "
                       'wrote there')
  if data.classes_file:
    _check_readable_file('config.data.classes_file', data.classes_file)


def _check_ava_paths(config: ml_collections.ConfigDict) -> None:
  """dataset_kind 'ava': the frame or video folder, and the annotation files the run reads (train boxes in mode
  'train'; val detections, ground truth, exclusions when it evaluates; the label map)."""
  from mvit_jax.data import ava  # pylint: disable=g-import-not-at-top  (this kind only)
  data = config.data
  folder_key = 'ava_frame_dir' if data.ava_frame_dir else 'ava_video_dir'
  if storage.is_url(data[folder_key]):
    if not _url_exists(f'config.data.{folder_key}', data[folder_key], folder=True):
      raise InputError(f'config.data.{folder_key}: nothing under {data[folder_key]!r}')
  else:
    check_folder(data[folder_key], f'config.data.{folder_key}')
  keys = ['ava_label_map']
  if config.mode == 'train':
    keys += ['ava_train_gt_boxes', 'ava_train_proposals']
  if config.mode == 'eval' or config.eval_every_steps >= 0:
    keys += ['ava_val_detections', 'ava_val_gt', 'ava_exclusions']
  for key in keys:
    if data[key]:
      _check_readable_file(f'config.data.{key}', ava.annotation_path(data, key))


def _check_data_paths(config: ml_collections.ConfigDict) -> None:
  data = config.data
  if data.dataset_kind == 'dmvr':
    _check_dmvr_shards(config)
    return
  if data.dataset_kind == 'prepared':
    _check_prepared_shards(config)
    return
  if data.dataset_kind == 'folder':
    from mvit_jax.data import folder  # pylint: disable=g-import-not-at-top  (the data sources: this kind only)
    folder.from_config(data)  # Lists the class folders: every layout error, before anything starts.
    return
  if data.dataset_kind == 'ava':
    _check_ava_paths(config)
    return
  if data.root and storage.is_url(data.root):
    if not _url_exists('config.data.root', data.root, folder=True):
      raise InputError(f'config.data.root: nothing under {data.root!r}')
  elif data.root:
    check_folder(data.root, 'config.data.root')
  for key in ('train_manifest', 'eval_manifest', 'classes_file'):
    if data[key]:
      _check_readable_file(f'config.data.{key}', data[key])
  if config.mode == 'train' and not data.train_manifest:
    raise InputError("config.data.train_manifest is empty: mode 'train' reads it")
  if (config.mode == 'eval' or config.eval_every_steps >= 0) and not data.eval_manifest:
    raise InputError('config.data.eval_manifest is empty but the run evaluates (config.eval_every_steps=-1 '
                     'skips evaluation in training)')


def check_paths(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises InputError naming the key and path when a data file or folder the run reads is missing (the data
  root, the train manifest in mode 'train', the eval manifest when the run evaluates, the classes file) or the
  run cannot write `workdir` (created here when missing). Synthetic data and TFDS datasets have no data paths."""
  if not config.synthetic_data.enabled and config.data.dataset_kind != 'tfds':
    _check_data_paths(config)
  _check_init_from(config)
  _check_writable_folder(workdir)


def _check_init_from(config: ml_collections.ConfigDict) -> None:
  """init_from must hold a model card; freezing and layer decay only make sense on a pretrained model."""
  if config.init_from:
    if not _url_exists('config.init_from', storage.join(config.init_from, 'model.json')):
      raise InputError(f'config.init_from: {config.init_from!r} holds no model.json (not a converted checkpoint '
                       'folder or an mvit_jax workdir)')
  elif config.train_only != 'all' or config.optimizer.layer_decay != 1:
    raise InputError('config.init_from is empty: train_only and layer_decay fine-tune a pretrained model; name a '
                     'converted checkpoint folder or a workdir (--config experiments/finetune.py:PATH)')


IN1K_TRAIN_IMAGES = 1_281_167


def imagenet_recipe(model_name: str, *, drop_path_rate: float, base_lr: float, end_lr: float, weight_decay: float,
                    batch_size: int, epochs: int, warmup_epochs: int) -> ml_collections.ConfigDict:
  """The DeiT-style ImageNet-1K recipe of the MViT papers (v1 App. D.5, v2 App. B.2) on the prepared TFDS
  `imagenet2012` (one-frame clips): AdamW, linear warm-up from 1e-8 then cosine (LRs per 512 images), clipping
  1.0, label smoothing 0.1, Mixup 0.8 / CutMix 1.0, RandAugment m9-n6-mstd0.5, random erasing 0.25, no head
  dropout, ImageNet mean/std, centre crop 224 of a 256-short-side image (crop ratio 0.875)."""
  c = base_config()
  c.model.name = model_name
  c.model.drop_path_rate = drop_path_rate
  c.model.head_dropout_rate = 0.0
  c.half_precision = True

  c.batch_size = batch_size
  c.eval_batch_size = 1024
  c.optimizer.name = 'adamw'
  c.optimizer.base_lr = base_lr
  c.optimizer.base_batch_size = 512
  c.optimizer.warmup_start_lr = 1e-8
  c.optimizer.end_lr = end_lr
  c.optimizer.weight_decay = weight_decay
  c.optimizer.grad_clip_norm = 1.0

  d = c.data
  d.dataset_kind = 'tfds'
  d.tfds_name = 'imagenet2012'
  d.tfds_train_split, d.tfds_eval_split = 'train', 'validation'
  d.tfds_video_key, d.tfds_label_key = 'image', 'label'
  d.num_classes = 1000
  d.num_frames, d.sampling_rate = 1, 1
  d.test_num_clips, d.test_num_crops = 1, 1
  d.num_repeated_samples = 1
  d.randaugment_num_layers, d.randaugment_magnitude = 6, 9
  d.mean, d.std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  return set_epochs(c, num_train_videos=IN1K_TRAIN_IMAGES, epochs=epochs, warmup_epochs=warmup_epochs,
                    eval_every_epochs=10)


SSV2_TRAIN_VIDEOS = 168_913


def ssv2_recipe(model_name: str, *, num_frames: int = 16) -> ml_collections.ConfigDict:
  """Something-Something v2 fine-tuning from a Kinetics model (v1 App. D.4, v2 App. B.5): SGD momentum 0.9, LR
  0.02 per 512 clips, 3 warm-up epochs, cosine over 100 epochs, weight decay 1e-4, drop path 0.4, head dropout
  0.5, no horizontal flip (labels such as "left to right"), segment-based frame sampling, no repeated
  augmentation, test 1 clip x 3 crops. config.init_from names the Kinetics model (set on the command line)."""
  c = base_config()
  c.model.name = model_name
  c.model.drop_path_rate = 0.4
  c.model.head_dropout_rate = 0.5
  c.half_precision = True

  c.batch_size = 512
  c.eval_batch_size = 192
  c.optimizer.name = 'sgd'
  c.optimizer.base_lr = 0.02
  c.optimizer.base_batch_size = 512
  c.optimizer.warmup_start_lr = 8e-4
  c.optimizer.end_lr = 2e-4
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.grad_clip_norm = 0.0

  d = c.data
  d.num_classes = 174
  d.num_frames = num_frames
  d.segment_sampling = True
  d.random_flip = False
  d.num_repeated_samples = 1
  d.test_num_clips, d.test_num_crops = 1, 3
  d.test_short_side = 224           # Three 224 crops along the long side of a 224-short-side frame.
  return set_epochs(c, num_train_videos=SSV2_TRAIN_VIDEOS, epochs=100, warmup_epochs=3, eval_every_epochs=10)


# AVA v2.2 train keyframes: 235 videos x 897 annotated seconds (902-1798), the most there can be; PySlowFast's epoch
# is one sample per second that has a box, so a few fewer. For exact epochs pass
# len(mvit_jax.data.ava.keyframe_list(config.data, 'train')) as ava_recipe's num_train_keyframes.
AVA_TRAIN_KEYFRAMES = 235 * 897


def ava_recipe(model_name: str, *, num_frames: int, sampling_rate: int, test_view: str = '',
               num_train_keyframes: int = AVA_TRAIN_KEYFRAMES) -> ml_collections.ConfigDict:
  """AVA v2.2 action detection fine-tuned from a Kinetics model (MViT App. D.2 = MViTv2 App. B.6).

  SGD momentum 0.9 (Nesterov, PySlowFast's default), peak LR 0.6 per 512 clips (linearly scaled), 5 warm-up epochs
  from 0.01 (PySlowFast's WARMUP_START_LR), cosine to 0 at 30 epochs, weight decay 1e-8, no clipping; drop path
  0.4, head dropout 0.5, bfloat16; training clips: short side jittered in [256, 320], random 224 crop, flip (boxes
  follow), no mixup / erasing / RandAugment; test: one clip per keyframe, short side 224 and the centre crop
  (`test_view` 'center', the papers' numbers) or the whole frame ('full'). 80 classes (the v2.2 label map's ids),
  scored on its 60-class ActivityNet list. config.init_from names the Kinetics model (set on the command line).
  """
  views = data_config_lib.AVA_TEST_VIEWS
  if test_view not in ('',) + views:
    raise ConfigError(f'AVA test view {test_view!r} is not one of {views} (the part after the config file name and '
                      'a colon)')
  c = base_config()
  c.model.name = model_name
  c.model.drop_path_rate = 0.4
  c.model.head_dropout_rate = 0.5
  c.half_precision = True

  c.batch_size = 512
  c.eval_batch_size = 256
  o = c.optimizer
  o.name = 'sgd'
  o.base_lr = 0.6
  o.base_batch_size = 512
  o.warmup_start_lr = 0.01
  o.end_lr = 0.0
  o.momentum = 0.9
  o.nesterov = True
  o.weight_decay = 1e-8
  o.grad_clip_norm = 0.0

  d = c.data
  d.dataset_kind = 'ava'
  d.num_classes = 80               # ava_action_list_v2.2.pbtxt's largest id; the 60-class list is what is scored.
  d.ava_label_map = 'ava_action_list_v2.2_for_activitynet_2019.pbtxt'
  d.num_frames, d.sampling_rate = num_frames, sampling_rate
  d.crop_size = 224
  d.random_resized_crop = False
  d.train_jitter_scales = (256, 320)
  d.random_flip = True
  d.randaugment = False
  d.random_erasing_prob = 0.0
  d.mixup_prob = 0.0
  d.label_smoothing = 0.0
  d.num_repeated_samples = 1
  d.test_num_clips, d.test_num_crops = 1, 1
  d.ava_test_view = test_view or 'center'
  if d.ava_test_view == 'full':
    c.eval_batch_size = 64         # Full frames are larger than the crop: fewer per batch.
  return set_epochs(c, num_train_videos=num_train_keyframes, epochs=30, warmup_epochs=5, eval_every_epochs=5)
