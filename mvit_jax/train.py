"""The MViT trainer: one readable function in big_vision style.

setup -> mesh -> data -> model & optimizer (eval_shape + jit with out_shardings) -> restore ladder (own checkpoint >
config.init_from > scratch) -> jitted update with donated state -> loop (clu hooks, metrics, checkpoints,
preemption, periodic eval) -> final checkpoint and eval.

Shapes: videos (B, T, H, W, 3) uint8 (float32 once normalised in the step), labels (B,) int32 or (B, C) float32
multi-hot; B is the global batch.
"""
from collections.abc import Callable, Mapping
import contextlib
import json
import os
import shutil
import signal
import threading

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax

from mvit_jax import checkpointing
from mvit_jax.data import device_preprocess
from mvit_jax import config_lib
from mvit_jax import evaluate
from mvit_jax import metrics as metrics_lib
from mvit_jax import optim
from mvit_jax import sharding as sharding_lib


# ---------------------------------------------------------------------------------------------------------------
# Model, loss and update step.
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
  return overrides


def make_targets(rng: jax.Array, videos: jax.Array, labels: jax.Array, data_config, num_classes: int):
  """(videos, targets (B, C) float32): mixup/cutmix with label smoothing, or smoothed one-hot, or multi-hot as is."""
  d = data_config
  if d.multi_label:
    return videos, labels.astype(jnp.float32)
  from mvit_jax.data import mixup  # pylint: disable=g-import-not-at-top
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

  def loss_fn(params, videos, targets, rng):
    logits = model.apply({'params': params}, videos, train=True, rngs={'dropout': rng}).astype(jnp.float32)
    if multi_label:
      loss = optax.sigmoid_binary_cross_entropy(logits, targets).mean()
    else:
      loss = optax.softmax_cross_entropy(logits, targets).mean()
    return loss, logits

  def train_step(state, batch, base_rng, step):
    erase_rng, mix_rng, dropout_rng = jax.random.split(jax.random.fold_in(base_rng, step), 3)
    # The loader's uint8 clips are normalised and randomly erased here, on the device.
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


def abstract_train_batch(config: ml_collections.ConfigDict, batch_size: int, num_classes: int,
                         mesh: jax.sharding.Mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes, dtypes and shardings of the global batch `pipeline.make_train_iterator` yields (after
  sharding_lib.global_batch): uint8 videos; int32 or multi-hot labels."""
  d, sharding = config.data, sharding_lib.batch_sharding(mesh)
  label = ((batch_size, num_classes), jnp.float32) if d.multi_label else ((batch_size,), jnp.int32)
  return {'video': jax.ShapeDtypeStruct((batch_size, d.num_frames, d.crop_size, d.crop_size, 3), jnp.uint8,
                                        sharding=sharding),
          'label': jax.ShapeDtypeStruct(*label, sharding=sharding)}


class TrainSetup:
  """Model, optimizer, and the shapes and shardings of params and optimizer state; builds, places and compiles
  them (`build`, `init_params`, `init_opt_state`, `place_params`, `compile_step`)."""

  def __init__(self, *, model, tx, schedule, mesh, rules, param_shardings, opt_shardings, abstract_params,
               abstract_opt_state):
    self.model, self.tx, self.schedule, self.mesh, self.rules = model, tx, schedule, mesh, rules
    self.param_shardings, self.opt_shardings = param_shardings, opt_shardings
    self.abstract_params, self.abstract_opt_state = abstract_params, abstract_opt_state

  @classmethod
  def build(cls, model: nn.Module, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, rules):
    """Shapes and shardings of params and optimizer state, from jax.eval_shape (nothing is allocated)."""
    tx, schedule = optim.make_optimizer(config)
    dummy = jnp.zeros((1, config.data.num_frames, config.data.crop_size, config.data.crop_size, 3), jnp.float32)
    with nn.logical_axis_rules(rules):
      boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy, train=False)['params'])
    param_shardings = sharding_lib.param_shardings(boxed, mesh, rules)
    abstract_params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                   nn.unbox(boxed), param_shardings)
    opt_abstract = jax.eval_shape(tx.init, abstract_params)
    opt_shardings = sharding_lib.opt_state_shardings(opt_abstract, abstract_params, param_shardings, mesh)
    abstract_opt_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                      opt_abstract, opt_shardings)
    return cls(model=model, tx=tx, schedule=schedule, mesh=mesh, rules=rules, param_shardings=param_shardings,
               opt_shardings=opt_shardings, abstract_params=abstract_params, abstract_opt_state=abstract_opt_state)

  def init_params(self, rng: jax.Array, dummy: jax.Array):
    """Parameters born sharded (jit with out_shardings; the forward pass is dead code and removed)."""
    # lazy_init drops the forward pass from the traced program: only the initialisers are compiled.
    dummy = jax.ShapeDtypeStruct(dummy.shape, dummy.dtype)
    init = lambda r: nn.unbox(self.model.lazy_init(r, dummy, train=False)['params'])
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      return jax.jit(init, out_shardings=self.param_shardings)(rng)

  def init_opt_state(self, params):
    with jax.set_mesh(self.mesh):
      return jax.jit(self.tx.init, out_shardings=self.opt_shardings)(params)

  def place_params(self, params):
    """Puts host/other-device params onto this run's param shardings."""
    return jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), params, self.param_shardings)

  @contextlib.contextmanager
  def context(self):
    """The mesh and logical-axis rules the model's sharding constraints resolve against (trace/lower in it)."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  def jit_step(self, train_step):
    """jax.jit of train_step(state, batch, base_rng, step) with the run's shardings; the state is donated."""
    state_shardings = {'params': self.param_shardings, 'opt_state': self.opt_shardings}
    replicated = jax.NamedSharding(self.mesh, jax.P())
    batch_sharding = sharding_lib.batch_sharding(self.mesh)
    return jax.jit(train_step, donate_argnums=(0,),
                   in_shardings=(state_shardings, batch_sharding, replicated, replicated),
                   out_shardings=(state_shardings, replicated))

  def compile_step(self, train_step):
    jitted = self.jit_step(train_step)

    def step_fn(state, batch, base_rng, step):
      with self.context():
        return jitted(state, batch, base_rng, step)

    return step_fn


# ---------------------------------------------------------------------------------------------------------------
# Preemption.
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------------------------
def prepare_synthetic_data(config: ml_collections.ConfigDict, workdir: str) -> None:
  """With config.synthetic_data.enabled: writes the synthetic dataset to WORKDIR/synthetic_data once (process 0,
  into a temporary folder renamed at the end) and points config.data at it."""
  syn = config.synthetic_data
  if not syn.enabled:
    return
  root = os.path.join(workdir, 'synthetic_data')
  if jax.process_index() == 0 and not os.path.exists(os.path.join(root, 'classes.txt')):
    from mvit_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    tmp = root + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    logging.info('Writing %d synthetic videos to %s', syn.num_classes * syn.videos_per_class, root)
    synthetic.write_dataset(tmp, num_classes=syn.num_classes, videos_per_class=syn.videos_per_class, seed=syn.seed,
                            num_frames=syn.num_frames, height=syn.height, width=syn.width)
    os.rename(tmp, root)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('synthetic_data')
  config.data.root = root
  config.data.train_manifest = os.path.join(root, 'train.csv')
  config.data.eval_manifest = os.path.join(root, 'val.csv')
  config.data.classes_file = os.path.join(root, 'classes.txt')


def make_model(config, num_classes: int) -> tuple[nn.Module, dict]:
  """(model, its create_model overrides) for config.model."""
  from mvit_jax import models  # pylint: disable=g-import-not-at-top
  overrides = model_overrides(config, num_classes)
  return models.create_model(config.model.name, **overrides), overrides


def setup_model_and_mesh(config, workdir):
  """(model, num_classes, mesh, rules); writes WORKDIR/model.json (for load_pretrained) and config.json."""
  from mvit_jax.data import sources  # pylint: disable=g-import-not-at-top
  num_classes = sources.num_classes_from_config(config.data)
  model, overrides = make_model(config, num_classes)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'model.json'), 'w') as f:
      json.dump({'name': config.model.name, 'overrides': overrides}, f, indent=2)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  mesh = sharding_lib.make_mesh(config.mesh)
  rules = sharding_lib.rules_from_config(config.sharding_rules)
  return model, num_classes, mesh, rules


def initial_params(ts: TrainSetup, config, rng):
  """Scratch init, or config.init_from (converted checkpoint or training workdir) adapted to this model."""
  dummy = jnp.zeros((1, config.data.num_frames, config.data.crop_size, config.data.crop_size, 3), jnp.float32)
  params = ts.init_params(rng, dummy)
  if config.init_from:
    from mvit_jax import models  # pylint: disable=g-import-not-at-top
    _, variables = models.load_pretrained(config.init_from)
    adapted = models.adapt_pretrained(variables['params'], jax.device_get(params))
    params = ts.place_params(adapted)
    logging.info('Initialised from %s', config.init_from)
  return params


def _eval(ts: TrainSetup, predict_fn, params, config, num_classes, step, workdir):
  from mvit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  batches = pipeline.make_eval_iterator(config.data, num_classes=num_classes,
                                        global_batch_size=config.eval_batch_size,
                                        process_index=jax.process_index(), process_count=jax.process_count())
  try:
    return evaluate.run_eval(predict_fn, params, batches, ts.mesh, multi_label=config.data.multi_label,
                             step=step, workdir=workdir)
  finally:
    _close(batches)


def _close(iterator) -> None:
  """Grain iterators with worker processes own shared memory and threads: close them when done (grain #1021)."""
  close = getattr(iterator, 'close', None)
  if close is not None:
    close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or, with config.mode == 'eval', only evaluates) and returns the last eval metrics (possibly {}).

  Resumes from the newest checkpoint in WORKDIR/checkpoints when there is one.
  """
  config_lib.validate(config)  # Before anything is compiled.
  prepare_synthetic_data(config, workdir)
  model, num_classes, mesh, rules = setup_model_and_mesh(config, workdir)
  logging.info('Mesh %s on %d devices (%d processes); model %s with %d classes', dict(mesh.shape),
               jax.device_count(), jax.process_count(), config.model.name, num_classes)
  ts = TrainSetup.build(model, config, mesh, rules)
  predict_fn = evaluate.make_predict_fn(model, mesh, rules, config.data)
  manager = checkpointing.create_manager(workdir, keep=config.keep_checkpoints)
  resume_step = manager.latest_step()

  if config.mode == 'eval':
    if resume_step is not None:
      params = checkpointing.restore_params(manager, resume_step, ts.abstract_params)
    elif config.init_from:
      params = initial_params(ts, config, jax.random.key(config.seed))
    else:
      raise ValueError(f'config.mode=eval needs a checkpoint in {workdir} or config.init_from')
    result = _eval(ts, predict_fn, params, config, num_classes, resume_step or 0, workdir)
    manager.close()
    return result

  # --- Data ------------------------------------------------------------------------------------------------------
  from mvit_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  def train_iterator(seed):
    return pipeline.make_train_iterator(config.data, num_classes=num_classes, global_batch_size=config.batch_size,
                                        seed=seed, process_index=jax.process_index(),
                                        process_count=jax.process_count())

  data_iter = train_iterator(config.seed)

  # --- Restore ladder: own checkpoint > init_from > scratch --------------------------------------------------------
  if resume_step is not None:
    params, opt_state, base_rng, data_restored = checkpointing.restore(
        manager, resume_step, ts.abstract_params, ts.abstract_opt_state, data_iter)
    if not data_restored:
      _close(data_iter)
      data_iter = train_iterator(config.seed + resume_step)
    first_step = resume_step + 1
    logging.info('Resumed from step %d in %s', resume_step, workdir)
  else:
    init_rng, base_rng = jax.random.split(jax.random.key(config.seed))
    params = initial_params(ts, config, init_rng)
    opt_state = ts.init_opt_state(params)
    first_step = 1
  state = {'params': params, 'opt_state': opt_state}
  if jax.process_index() == 0:
    metrics_lib.log_parameter_overview(ts.abstract_params)

  step_fn = ts.compile_step(make_train_step(model, ts.tx, ts.schedule, config, num_classes))
  writer = metrics_lib.create_writer(workdir)
  hooks = metrics_lib.progress_hooks(workdir, writer, config.num_train_steps, log_every_steps=config.log_every_steps,
                                     profile_steps=config.profile_steps)
  preempted = PreemptionWatch(manager)
  eval_metrics = {}
  pending, pending_first = [], first_step  # Per-step device metrics not yet fetched, and the step of the first.
  last_step = config.num_train_steps

  def flush(step):
    """Fetches pending metrics, stops on NaN/Inf (before any save), writes the averages."""
    nonlocal pending, pending_first
    if not pending:
      return
    host = jax.device_get(pending)
    metrics_lib.check_finite(host, pending_first)
    writer.write_scalars(step, {f'train/{k}': v for k, v in metrics_lib.average(host).items()})
    pending, pending_first = [], step + 1

  try:
    step = first_step - 1
    for step in range(first_step, last_step + 1):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        batch = sharding_lib.global_batch(next(data_iter), mesh)
        state, step_metrics = step_fn(state, batch, base_rng, np.int32(step))
      pending.append(step_metrics)
      for hook in hooks:
        hook(step)
      stop = preempted(step)
      if step % config.log_every_steps == 0 or step == last_step or stop:
        flush(step)
      if step % config.checkpoint_every_steps == 0 or step == last_step or stop:
        flush(step)
        checkpointing.save(manager, step, state['params'], state['opt_state'], base_rng, data_iter)
      if stop:
        logging.warning('Preemption requested: saved step %d, exiting.', step)
        break
      if config.eval_every_steps > 0 and step % config.eval_every_steps == 0 and step != last_step:
        eval_metrics = _eval(ts, predict_fn, state['params'], config, num_classes, step, workdir)
        writer.write_scalars(step, {f'eval/{k}': v for k, v in eval_metrics.items()})
    else:
      if config.eval_every_steps >= 0:
        eval_metrics = _eval(ts, predict_fn, state['params'], config, num_classes, step, workdir)
        writer.write_scalars(step, {f'eval/{k}': v for k, v in eval_metrics.items()})
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
    preempted.close()
    _close(data_iter)
  return eval_metrics
