"""The MViT trainer, read top to bottom in `train_and_evaluate`:

config -> mesh -> data -> model and optimizer (shapes and shardings from eval_shape) -> restore (own checkpoint >
config.init_from > scratch) -> jitted step with donated state -> loop (batches prefetched to the devices, metrics,
checkpoints, preemption, periodic eval) -> final save and eval.

Shapes: videos (B, T, H, W, 3) uint8 from the loader, normalised on the device; labels (B,) int32 or (B, C)
float32 multi-hot; B is the global batch. A detection run (AVA, `mvit_jax.train.detection`) adds boxes (B, N, 4),
box_mask (B, N) and labels (B, N, K) per box.
"""
from collections.abc import Callable, Iterator
import collections
import contextlib
import dataclasses
import json
import os
import signal
import tempfile
import threading
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.experimental.compilation_cache import compilation_cache
import ml_collections
import numpy as np
import optax

from mvit_jax.train import checkpointing
from mvit_jax.train import config as config_lib
from mvit_jax.system import errors
from mvit_jax.train import detection
from mvit_jax.train import evaluate
from mvit_jax.train import metrics as metrics_lib
from mvit_jax.models import model_card
from mvit_jax import models
from mvit_jax.train import optim
from mvit_jax.train import sharding as sharding_lib
from mvit_jax.data import ava
from mvit_jax.data import dali_loader
from mvit_jax.data import device_preprocess
from mvit_jax.data import mixup
from mvit_jax.data import pipeline
from mvit_jax.data import sources
from mvit_jax.data import synthetic
from mvit_jax.data import synthetic_ava
from mvit_jax.system import storage


# ---------------------------------------------------------------------------------------------------------------
# Model, targets and the update step (also compiled by mvit_jax.aot and the benchmarks).
# ---------------------------------------------------------------------------------------------------------------
def model_overrides(config: ml_collections.ConfigDict, num_classes: int) -> dict:
  """Constructor overrides for mvit_jax.models.create_model (JSON-serialisable: written to WORKDIR/model.json)."""
  overrides = {k: config.model[k] for k in config_lib.MODEL_OVERRIDES if config.model[k] is not None}
  overrides.setdefault('num_classes', num_classes)
  overrides.setdefault('num_frames', config.data.num_frames)
  overrides.setdefault('input_size', config.data.crop_size)
  overrides['dtype'] = 'bfloat16' if config.half_precision else 'float32'
  overrides['param_dtype'] = 'float32'
  overrides['remat_policy'] = config.remat_policy or None
  if detection.is_detection(config):
    overrides['detection'] = True
  return overrides


def make_model(config: ml_collections.ConfigDict, num_classes: int) -> tuple[nn.Module, dict]:
  """(model, its create_model overrides) for config.model."""
  overrides = model_overrides(config, num_classes)
  return models.create_model(config.model.name, **overrides), overrides


def make_targets(rng: jax.Array, videos: jax.Array, labels: jax.Array, data_config, num_classes: int):
  """(videos, targets (B, C) float32): mixup/cutmix with label smoothing, or smoothed one-hot, or multi-hot as is."""
  d = data_config
  if d.multi_label:
    return videos, labels.astype(jnp.float32)
  if d.mixup_prob > 0 and (d.mixup_alpha > 0 or d.cutmix_alpha > 0):
    return mixup.mixup_cutmix(rng, videos, labels, num_classes=num_classes, mixup_alpha=d.mixup_alpha,
                              cutmix_alpha=d.cutmix_alpha, switch_prob=d.mixup_switch_prob, prob=d.mixup_prob,
                              label_smoothing=d.label_smoothing)
  return videos, mixup.label_smoothing_targets(labels, num_classes, d.label_smoothing)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, schedule: Callable,
                    config: ml_collections.ConfigDict, num_classes: int):
  """Returns train_step(state, batch, base_rng, step) -> (state, metrics); state = {'params', 'opt_state'}.

  The per-step key is fold_in(base_rng, step), so a resumed run draws exactly the keys of an uninterrupted one.
  """
  multi_label = config.data.multi_label
  if detection.is_detection(config):
    return _make_detection_train_step(model, tx, schedule, config)

  def loss_fn(params, videos, targets, rng):
    logits = model.apply({'params': params}, videos, train=True, rngs={'dropout': rng}).astype(jnp.float32)
    if multi_label:
      loss = optax.sigmoid_binary_cross_entropy(logits, targets).mean()
    else:
      loss = optax.softmax_cross_entropy(logits, targets).mean()
    return loss, logits

  def train_step(state, batch, base_rng, step):
    erase_rng, mix_rng, dropout_rng = jax.random.split(jax.random.fold_in(base_rng, step), 3)
    videos = device_preprocess.preprocess_on_device(batch['video'], erase_rng, config.data, train=True)
    videos, targets = make_targets(mix_rng, videos, batch['label'], config.data, num_classes)
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'], videos, targets,
                                                                      dropout_rng)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    step_metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads),
                    'lr': schedule((step - 1) // config.grad_accum_steps)}  # optax's count before this update.
    if not multi_label:
      step_metrics['accuracy'] = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return {'params': params, 'opt_state': opt_state}, step_metrics

  return train_step


def _make_detection_train_step(model: nn.Module, tx: optax.GradientTransformation, schedule: Callable,
                               config: ml_collections.ConfigDict):
  """make_train_step for a detector: normalised clips (no mixup, no erasing: config.validate refuses them) and
  detection.loss over the real boxes."""

  def loss_fn(params, videos, boxes, labels, box_mask, rng):
    logits = model.apply({'params': params}, videos, boxes, train=True, rngs={'dropout': rng})
    return detection.loss(logits, labels, box_mask)

  def train_step(state, batch, base_rng, step):
    dropout_rng = jax.random.fold_in(base_rng, step)
    videos = device_preprocess.preprocess_on_device(batch['video'], None, config.data, train=True)
    loss, grads = jax.value_and_grad(loss_fn)(state['params'], videos, batch['boxes'], batch['labels'],
                                              batch['box_mask'], dropout_rng)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    step_metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads),
                    'lr': schedule((step - 1) // config.grad_accum_steps)}
    return {'params': params, 'opt_state': opt_state}, step_metrics

  return train_step


def abstract_train_batch(config: ml_collections.ConfigDict, batch_size: int, num_classes: int,
                         mesh: jax.sharding.Mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes, dtypes and shardings of the global batch the loader yields (after sharding_lib.global_batch)."""
  if detection.is_detection(config):
    return detection.abstract_train_batch(config, batch_size, num_classes, mesh)
  d, sharding = config.data, sharding_lib.batch_sharding(mesh)
  label = ((batch_size, num_classes), jnp.float32) if d.multi_label else ((batch_size,), jnp.int32)
  return {'video': jax.ShapeDtypeStruct((batch_size, d.num_frames, d.crop_size, d.crop_size, 3), jnp.uint8,
                                        sharding=sharding),
          'label': jax.ShapeDtypeStruct(*label, sharding=sharding)}


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """The model and optimizer of a run with the shapes and NamedShardings of its state (abstract_* leaves are
  jax.ShapeDtypeStructs carrying their shardings); nothing is allocated until `init_params` / `init_state`."""
  model: nn.Module
  tx: optax.GradientTransformation
  schedule: Callable
  mesh: jax.sharding.Mesh
  rules: Any
  inputs: tuple  # One clip's model inputs for initialisation: the clip (1, T, H, W, 3) (+ boxes (1, N, 4)).
  abstract_params: Any
  abstract_opt_state: Any

  @classmethod
  def build(cls, model: nn.Module, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, rules):
    d = config.data
    inputs = (jax.ShapeDtypeStruct((1, d.num_frames, d.crop_size, d.crop_size, 3), jnp.float32),)
    if detection.is_detection(config):
      inputs += (detection.example_boxes(d),)
    with nn.logical_axis_rules(rules):
      boxed = jax.eval_shape(lambda *x: model.init(jax.random.key(0), *x, train=False)['params'], *inputs)
    param_shardings = sharding_lib.param_shardings(boxed, mesh, rules)
    abstract_params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                   nn.unbox(boxed), param_shardings)
    tx, schedule = optim.make_optimizer(config, abstract_params, model.config)
    opt_abstract = jax.eval_shape(tx.init, abstract_params)
    opt_shardings = sharding_lib.opt_state_shardings(opt_abstract, abstract_params, param_shardings, mesh)
    abstract_opt_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                      opt_abstract, opt_shardings)
    return cls(model, tx, schedule, mesh, rules, inputs, abstract_params, abstract_opt_state)

  def state_shardings(self) -> dict:
    return jax.tree.map(lambda x: x.sharding, {'params': self.abstract_params, 'opt_state': self.abstract_opt_state})

  def init_params(self, rng: jax.Array):
    """Fresh parameters, born sharded (lazy_init traces only the initialisers, not the forward pass)."""
    init = lambda r: nn.unbox(self.model.lazy_init(r, *self.inputs, train=False)['params'])
    with self.context():
      return jax.jit(init, out_shardings=self.state_shardings()['params'])(rng)

  def init_state(self, params) -> dict:
    """{'params', 'opt_state'}: `params` (device or host arrays) on the run's shardings, a fresh optimizer state."""
    shardings = self.state_shardings()
    params = jax.device_put(params, shardings['params'])
    with self.context():
      return {'params': params, 'opt_state': jax.jit(self.tx.init, out_shardings=shardings['opt_state'])(params)}

  @contextlib.contextmanager
  def context(self):
    """The mesh and logical-axis rules the model's sharding constraints resolve against (run and lower in it)."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  def jit_step(self, train_step):
    """jax.jit of train_step(state, batch, base_rng, step) with the run's shardings; the state is donated. Call
    (or lower) it inside `context()`."""
    replicated = jax.NamedSharding(self.mesh, jax.P())
    return jax.jit(train_step, donate_argnums=(0,),
                   in_shardings=(self.state_shardings(), sharding_lib.batch_sharding(self.mesh), replicated,
                                 replicated),
                   out_shardings=(self.state_shardings(), replicated))


# ---------------------------------------------------------------------------------------------------------------
# Run pieces: synthetic data, initial params, device prefetch, preemption.
# ---------------------------------------------------------------------------------------------------------------
def prepare_synthetic_data(config: ml_collections.ConfigDict, workdir: str) -> None:
  """With config.synthetic_data.enabled: writes the synthetic dataset to WORKDIR/synthetic_data once (process 0,
  into a local temporary folder, then moved or uploaded with classes.txt last: a dataset with classes.txt is
  whole) and points config.data at it. For AVA data (data.dataset_kind 'ava'): mvit_jax.data.synthetic_ava's
  people and actions, its label map written last."""
  syn = config.synthetic_data
  if not syn.enabled:
    return
  if detection.is_detection(config):
    _prepare_synthetic_ava(config, workdir)
    return
  root = storage.join(workdir, 'synthetic_data')
  if jax.process_index() == 0 and not storage.exists(storage.join(root, 'classes.txt')):
    logging.info('Writing %d synthetic videos to %s', syn.num_classes * syn.videos_per_class, root)
    with tempfile.TemporaryDirectory() as tmp:
      synthetic.write_dataset(tmp, num_classes=syn.num_classes, videos_per_class=syn.videos_per_class, seed=syn.seed,
                              num_frames=syn.num_frames, height=syn.height, width=syn.width)
      storage.remove_tree(root)  # What an interrupted upload left.
      storage.upload_tree(tmp, root, last='classes.txt')
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('synthetic_data')
  config.data.root = root
  config.data.train_manifest = storage.join(root, 'train.csv')
  config.data.eval_manifest = storage.join(root, 'val.csv')
  config.data.classes_file = storage.join(root, 'classes.txt')


def _prepare_synthetic_ava(config: ml_collections.ConfigDict, workdir: str) -> None:
  syn, root = config.synthetic_data, storage.join(workdir, 'synthetic_data')
  last = f'annotations/{synthetic_ava.LABEL_MAP}'
  if jax.process_index() == 0 and not storage.exists(storage.join(root, last)):
    logging.info('Writing %d synthetic AVA videos to %s', syn.ava_num_videos, root)
    with tempfile.TemporaryDirectory() as tmp:
      synthetic_ava.write_dataset(tmp, num_videos=syn.ava_num_videos, num_val_videos=syn.ava_num_val_videos,
                                  seconds=syn.ava_seconds, fps=syn.ava_fps, height=syn.height, width=syn.width,
                                  seed=syn.seed)
      storage.remove_tree(root)  # What an interrupted upload left.
      storage.upload_tree(tmp, root, last=last)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('synthetic_data')
  synthetic_ava.configure(config.data, root, fps=syn.ava_fps)


def initial_params(ts: TrainSetup, init_from: str, rng: jax.Array, inflate: str = 'centre'):
  """Fresh params; with `init_from` (converted checkpoint or training workdir) its params fitted to this model
  (`models.fit_pretrained`: position tables interpolated, a classifier of another shape kept fresh, an image
  model's 2-D kernels inflated by `inflate`, what a video model has and an image model lacks fresh)."""
  params = ts.init_params(rng)
  if init_from:
    _, variables = models.load_pretrained(init_from)
    params, report = models.fit_pretrained(variables['params'], jax.device_get(params), inflate)
    logging.info('Initialised from %s: %s', init_from, report)
  return params


class _LoaderState:
  """The loader state that goes with a batch, for grain.checkpoint.CheckpointSave (which takes any object with
  get_state() -> bytes): with batches prefetched, the live iterator is ahead of the step being saved."""

  def __init__(self, state):
    # Encoded now, not at save time: the live iterator moves on and may reuse the objects of this state.
    self._json = json.dumps(state, indent=1).encode()

  def get_state(self) -> bytes:
    return self._json


def prefetch_to_device(data_iter, mesh: jax.sharding.Mesh, size: int = 2) -> Iterator[tuple[dict, _LoaderState]]:
  """Yields (global batch on the devices, the loader state after it), `size` batches ahead, so the host-to-device
  copies of the next batches overlap the step running now (device_put is asynchronous)."""
  queue = collections.deque()
  while True:
    while len(queue) < size + 1:
      queue.append((sharding_lib.global_batch(next(data_iter), mesh), _LoaderState(data_iter.get_state())))
    yield queue.popleft()


class PreemptionWatch:
  """True once the run should checkpoint and stop.

  Single process: a SIGTERM handler sets a flag. Multi-process: JAX's preemption sync service (started by
  jax.distributed.initialize, it listens for SIGTERM) agrees on a step every process reaches, through orbax's
  `reached_preemption`, so all processes save the same step.
  """

  def __init__(self, manager):
    self._manager = manager
    self._flag = threading.Event()
    self._multi = jax.process_count() > 1
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._flag.set())

  def __call__(self, step: int) -> bool:
    if self._multi:
      return self._manager.reached_preemption(step)
    return self._flag.is_set()

  def close(self):
    if hasattr(self, '_previous'):
      signal.signal(signal.SIGTERM, self._previous)


def _evaluate(predict_fn, params, config, num_classes: int, mesh, step: int, workdir: str, writer=None) -> dict:
  if detection.is_detection(config):
    batches = ava.make_ava_eval_iterator(config.data, num_classes=num_classes, global_batch_size=config.eval_batch_size,
                                         process_index=jax.process_index(), process_count=jax.process_count())
    try:
      return detection.run_eval(predict_fn, params, batches, mesh, data_config=config.data, step=step,
                                workdir=workdir, writer=writer)
    finally:
      _close(batches)
  batches = pipeline.make_eval_iterator(config.data, num_classes=num_classes, global_batch_size=config.eval_batch_size,
                                        process_index=jax.process_index(), process_count=jax.process_count())
  try:
    return evaluate.run_eval(predict_fn, params, batches, mesh, multi_label=config.data.multi_label, step=step,
                             workdir=workdir, writer=writer, class_names=sources.class_names_from_config(config.data),
                             image_clips=config.eval_image_clips, confusion_classes=config.eval_confusion_classes)
  finally:
    _close(batches)


def use_compilation_cache(cache_dir: str, workdir: str) -> str | None:
  """Points this process's JAX persistent compilation cache at `cache_dir` (config.compilation_cache_dir:
  '{workdir}' filled in; '' = off) and returns the folder in use; `mvit_jax.main` calls it before the run.
  JAX_COMPILATION_CACHE_DIR in the environment wins. Programs compiling in under a second stay out of it (JAX's
  default threshold)."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  folder = cache_dir.replace('{workdir}', workdir) or None
  if jax.config.jax_compilation_cache_dir != folder:
    # JAX opens its cache once per process, at the first compile; another run in this process reopens it.
    compilation_cache.reset_cache()
    jax.config.update('jax_compilation_cache_dir', folder)
  return folder


def _close(iterator) -> None:
  """Grain iterators with worker processes own shared memory and threads: close them when done (grain #1021)."""
  close = getattr(iterator, 'close', None)
  if close is not None:
    close()


# ---------------------------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or, with config.mode == 'eval', only evaluates) and returns the last eval metrics (possibly {}).

  Resumes from the newest checkpoint in WORKDIR/checkpoints when there is one.
  """
  # --- Config -----------------------------------------------------------------------------------------------------
  config_lib.validate(config)  # Before anything is compiled.
  prepare_synthetic_data(config, workdir)
  num_classes = sources.num_classes_from_config(config.data)
  if jax.process_index() == 0:
    storage.write_text(storage.join(workdir, 'config.json'), config.to_json_best_effort(indent=2))

  # --- Mesh -------------------------------------------------------------------------------------------------------
  mesh = sharding_lib.make_mesh(config.mesh)
  rules = sharding_lib.rules_from_config(config.sharding_rules)
  logging.info('Mesh %s on %d devices (%d processes); model %s with %d classes', dict(mesh.shape),
               jax.device_count(), jax.process_count(), config.model.name, num_classes)

  # --- Model and optimizer ------------------------------------------------------------------------------------------
  model, overrides = make_model(config, num_classes)
  if jax.process_index() == 0:
    classes = sources.class_names_from_config(config.data)
    model_card.write(workdir, model_card.ModelCard(  # What load_pretrained(workdir) and mvit_jax.predict read.
        config.model.name, overrides, classes, model_card.InputRecipe.from_data_config(config.data)))
  ts = TrainSetup.build(model, config, mesh, rules)
  if detection.is_detection(config):
    predict_fn = detection.make_predict_fn(model, mesh, rules, config.data)
  else:
    predict_fn = evaluate.make_predict_fn(model, mesh, rules, config.data)
  manager = checkpointing.create_manager(workdir, keep=config.keep_checkpoints)

  if config.mode == 'eval':
    restored = checkpointing.restore_latest_params(manager, ts.abstract_params)
    manager.close()
    if restored:
      step, params = restored
    elif config.init_from:
      step, params = 0, initial_params(ts, config.init_from, jax.random.key(config.seed), config.init_from_inflate)
    else:
      raise errors.InputError(f'config.mode=eval needs a checkpoint in {workdir} or config.init_from')
    return _evaluate(predict_fn, params, config, num_classes, mesh, step, workdir)

  # --- Data -------------------------------------------------------------------------------------------------------
  def train_iterator(seed):  # Evaluation reads through grain with either loader.
    if detection.is_detection(config):
      return ava.make_ava_train_iterator(config.data, num_classes=num_classes, global_batch_size=config.batch_size,
                                         seed=seed, process_index=jax.process_index(),
                                         process_count=jax.process_count())
    loader = dali_loader if config.data.loader == 'dali' else pipeline
    return loader.make_train_iterator(config.data, num_classes=num_classes, global_batch_size=config.batch_size,
                                      seed=seed, process_index=jax.process_index(), process_count=jax.process_count())

  data_iter = train_iterator(config.seed)

  # --- Restore: own checkpoint (newest that restores) > init_from > scratch -----------------------------------------
  try:
    restored = checkpointing.restore_latest(manager, ts.abstract_params, ts.abstract_opt_state, data_iter)
  except checkpointing.NoRestorableCheckpointError:
    _close(data_iter)
    raise
  if restored:
    resume_step, params, opt_state, base_rng, data_restored = restored
    state = {'params': params, 'opt_state': opt_state}
    if not data_restored:
      _close(data_iter)
      data_iter = train_iterator(config.seed + resume_step)
    first_step = resume_step + 1
    logging.info('Resumed from step %d in %s', resume_step, workdir)
  else:
    init_rng, base_rng = jax.random.split(jax.random.key(config.seed))
    state = ts.init_state(initial_params(ts, config.init_from, init_rng, config.init_from_inflate))
    first_step = 1
  if jax.process_index() == 0:
    metrics_lib.log_parameter_overview(ts.abstract_params)

  # --- Step -------------------------------------------------------------------------------------------------------
  train_step = ts.jit_step(make_train_step(model, ts.tx, ts.schedule, config, num_classes))

  # --- Loop -------------------------------------------------------------------------------------------------------
  last_step = config.num_train_steps
  writer = metrics_lib.create_writer(workdir)
  hooks = metrics_lib.progress_hooks(workdir, writer, last_step, log_every_steps=config.log_every_steps,
                                     profile_steps=config.profile_steps)
  preempted = PreemptionWatch(manager)
  batches = prefetch_to_device(data_iter, mesh)
  pending, pending_first = [], first_step  # Per-step device metrics not yet fetched, and the step of the first.
  eval_metrics = {}

  def flush(step):
    """Fetches pending metrics, stops on NaN/Inf (before any save), writes the averages."""
    nonlocal pending, pending_first
    if pending:
      host = jax.device_get(pending)
      metrics_lib.check_finite(host, pending_first)
      writer.write_scalars(step, {f'train/{k}': v for k, v in metrics_lib.average(host).items()})
      pending, pending_first = [], step + 1

  def run_eval(step):
    metrics = _evaluate(predict_fn, state['params'], config, num_classes, mesh, step, workdir, writer)
    writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.items()})
    return metrics

  try:
    step = first_step - 1
    with ts.context():
      for step in range(first_step, last_step + 1):
        with jax.profiler.StepTraceAnnotation('train', step_num=step):
          batch, loader_state = next(batches)
          state, step_metrics = train_step(state, batch, base_rng, np.int32(step))
        pending.append(step_metrics)
        for hook in hooks:
          hook(step)
        stop = preempted(step)
        if step % config.log_every_steps == 0 or step == last_step or stop:
          flush(step)
        if step % config.checkpoint_every_steps == 0 or step == last_step or stop:
          flush(step)
          checkpointing.save(manager, step, state['params'], state['opt_state'], base_rng, loader_state)
          writer.flush()  # Puts the events so far where TensorBoard reads them (a bucket workdir: uploads them).
        if stop:
          logging.warning('Preemption requested: saved step %d, exiting.', step)
          return eval_metrics
        if config.eval_every_steps > 0 and step % config.eval_every_steps == 0 and step != last_step:
          eval_metrics = run_eval(step)

    # --- Final eval (the last step was saved in the loop; a finished workdir only re-evaluates) ----------------------
    if config.eval_every_steps >= 0:
      eval_metrics = run_eval(step)
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
    preempted.close()
    _close(data_iter)
  return eval_metrics
