"""Orbax checkpoints of a training run: WORKDIR/checkpoints/<step>/{params, state, data_iter}.

- params: the unboxed model parameters (what `mvit_jax.models.load_pretrained` reads);
- state: {'opt_state': optax state, 'rng': uint32 key data of the run's base PRNG key};
- data_iter: the grain iterator state, one `process_<i>-of-<n>.json` per process.

Saves are asynchronous (the device->host copy happens inside `save`, so donated buffers can be reused right away)
and keep the newest `keep` steps. Restores take abstract targets carrying the *current* shardings, so a checkpoint
written on one mesh, device count or process count restores onto another (orbax #648). `restore_latest` and
`restore_latest_params` fall back past checkpoints that do not restore (a file truncated or missing).
"""
import re

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from mvit_jax.models import layout
from mvit_jax.models import pretrained
from mvit_jax.models.pretrained import checkpoint_dir
from mvit_jax.models.pretrained import NoRestorableCheckpointError  # Re-exported for the trainer.
from mvit_jax.system import storage


def create_manager(workdir: str, *, keep: int = 3, read_only: bool = False,
                   asynchronous: bool = True) -> ocp.CheckpointManager:
  """CheckpointManager for WORKDIR/checkpoints; every `save` call with force=False is gated by `should_save`."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only, enable_async_checkpointing=asynchronous)
  handlers = {'params': ocp.StandardCheckpointHandler(), 'state': ocp.StandardCheckpointHandler(),
              'data_iter': grain.checkpoint.CheckpointHandler()}
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, params, opt_state, rng: jax.Array, data_iter) -> None:
  """Starts an asynchronous save of step `step` (forced: the caller decides when to save)."""
  state = {'opt_state': opt_state, 'rng': np.asarray(jax.random.key_data(rng))}
  manager.save(step, force=True, args=ocp.args.Composite(
      params=ocp.args.StandardSave(params), state=ocp.args.StandardSave(state),
      data_iter=grain.checkpoint.CheckpointSave(data_iter)))


def saved_process_count(manager: ocp.CheckpointManager, step: int) -> int | None:
  """Process count that wrote the data-iterator state of `step` (from its file names), None if absent."""
  folder = storage.join(str(manager.directory), str(step), 'data_iter')
  if not storage.isdir(folder):
    return None
  counts = {int(m.group(1)) for f in storage.listdir(folder) if (m := re.fullmatch(r'process_\d+-of-(\d+)\.json', f))}
  return counts.pop() if len(counts) == 1 else None


def restore(manager: ocp.CheckpointManager, step: int, abstract_params, abstract_opt_state, data_iter):
  """Restores step `step` onto the shardings held by the abstract targets (jax.ShapeDtypeStruct leaves).

  Returns (params, opt_state, rng, data_restored). The data iterator is restored in place when the checkpoint
  was written by the same number of processes; otherwise data_restored is False and the caller restarts the
  loader (grain iterator state is per process and cannot be re-split). A checkpoint written in the other block
  layout (`scan_blocks`) is read in its own layout, replicated, and converted here (`layout.to_block_layout`).
  """
  saved = pretrained.saved_params_tree(manager, step)
  other_layout = set(saved) != set(abstract_params)
  if other_layout:
    logging.info('Checkpoint step %d has the other block layout (scan_blocks); converting it.', step)
  in_saved_layout = lambda tree: _replicated_in_layout(tree, saved) if other_layout else tree
  abstract_state = {'opt_state': in_saved_layout(abstract_opt_state),
                    'rng': jax.ShapeDtypeStruct((2,), np.uint32, sharding=_replicated_like(abstract_params))}
  args = {'params': ocp.args.StandardRestore(in_saved_layout(abstract_params)),
          'state': ocp.args.StandardRestore(abstract_state)}
  written_by = saved_process_count(manager, step)
  data_restored = data_iter is not None and written_by == jax.process_count()
  if data_restored:
    args['data_iter'] = grain.checkpoint.CheckpointRestore(data_iter)
  elif data_iter is not None:
    logging.warning(
        'Checkpoint step %d holds data-loader state of %s processes but this run has %d: the loader restarts '
        'from a fresh shuffle (seed folded with the step) instead of the exact data position.',
        step, written_by, jax.process_count())
  restored = manager.restore(step, args=ocp.args.Composite(**args))
  params, opt_state = restored['params'], restored['state']['opt_state']
  if other_layout:
    params, opt_state = (
        jax.device_put(layout.map_param_trees(tree, lambda t: layout.to_block_layout(t, abstract_params)),
                       jax.tree.map(lambda a: a.sharding, target))
        for tree, target in ((params, abstract_params), (opt_state, abstract_opt_state)))
  rng = jax.random.wrap_key_data(np.asarray(restored['state']['rng']))
  return params, opt_state, rng, data_restored


def _replicated_in_layout(tree, saved_params):
  """Abstract `tree` (params, or an optimizer state holding param-shaped dicts) with its blocks in the layout of
  `saved_params`, every leaf replicated (a stacked leaf has no sharding of the model's to take)."""
  replicated = _replicated_like(tree)
  in_layout = layout.map_param_trees(tree, lambda t: layout.to_block_layout(t, saved_params))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated)
                      if isinstance(x, jax.ShapeDtypeStruct) else x, in_layout)


def restore_params(manager: ocp.CheckpointManager, step: int, abstract_params):
  """Only the params of step `step`, onto the shardings of the abstract target."""
  args = ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))
  return manager.restore(step, args=args)['params']


def _replicated_like(abstract_params):
  leaf = jax.tree.leaves(abstract_params)[0]
  sharding = getattr(leaf, 'sharding', None)
  if isinstance(sharding, jax.NamedSharding):
    return jax.NamedSharding(sharding.mesh, jax.P())
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def latest_step(workdir: str) -> int | None:
  """Newest complete checkpoint step in WORKDIR/checkpoints, or None."""
  if not storage.isdir(checkpoint_dir(workdir)):
    return None
  with create_manager(workdir, read_only=True) as manager:
    return manager.latest_step()


def restore_latest(manager: ocp.CheckpointManager, abstract_params, abstract_opt_state, data_iter):
  """Restores the newest checkpoint that restores: (step, params, opt_state, rng, data_restored), or None when
  there is no checkpoint (see `restore` for the arguments and data_restored).

  Newer checkpoints that fail to restore are logged and moved to WORKDIR/damaged_checkpoints/, so that the resumed
  run can save their steps again. Raises NoRestorableCheckpointError when there are checkpoints but none restores:
  a run never starts from scratch over its own checkpoints.
  """
  found = pretrained.newest_restorable(
      manager, lambda step: restore(manager, step, abstract_params, abstract_opt_state, data_iter))
  if found is None:
    return None
  step, (params, opt_state, rng, data_restored) = found
  _set_aside_steps_after(manager, step)
  return step, params, opt_state, rng, data_restored


def restore_latest_params(manager: ocp.CheckpointManager, abstract_params):
  """(step, params) of the newest checkpoint whose params restore (onto the abstract target's shardings), or None
  when there is no checkpoint; raises NoRestorableCheckpointError when none restores. Nothing is moved."""
  return pretrained.newest_restorable(manager, lambda step: restore_params(manager, step, abstract_params))


def _set_aside_steps_after(manager: ocp.CheckpointManager, step: int) -> None:
  """Moves checkpoints newer than `step` (they did not restore) to WORKDIR/damaged_checkpoints/<step>[.<n>] (in a
  bucket: copy, then delete)."""
  newer = [s for s in manager.all_steps() if s > step]
  if not newer:
    return
  if jax.process_index() == 0:
    damaged = storage.join(storage.parent(str(manager.directory)), 'damaged_checkpoints')
    storage.makedirs(damaged)
    for s in newer:
      target, n = storage.join(damaged, str(s)), 0
      while storage.exists(target):
        n += 1
        target = storage.join(damaged, f'{s}.{n}')
      storage.move(storage.join(str(manager.directory), str(s)), target)
      logging.warning('Moved checkpoint step %d, which does not restore, to %s; resuming from step %d.', s, target,
                      step)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('set_aside_damaged_checkpoints')
  manager.reload()
