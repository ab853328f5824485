"""The trainer's loop in-process: its own update step learns, SIGTERM saves the step it arrives in, retention keeps
the newest checkpoints, and a finished workdir only re-evaluates (its checkpoints win over init_from)."""
import contextlib
import json
import logging
import os
import shutil
import signal

import jax
import numpy as np
import pytest

from mvit_jax.train import checkpointing
from mvit_jax.train import metrics as metrics_lib
from mvit_jax import models
from mvit_jax.train import sharding as sharding_lib
from mvit_jax.train import trainer
from tests import testlib

NUM_CLASSES = 4  # Of the tiny dataset.
SIGTERM_STEP = 5


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
  return testlib.write_tiny_dataset(str(tmp_path_factory.mktemp('tiny_data')))


def test_train_step_lowers_the_loss_on_a_fixed_batch(data_root):
  """make_train_step with the tiny config's AdamW, warm-up, mixup/cutmix and label smoothing."""
  config = testlib.tiny_train_config(data_root, num_train_steps=100)
  mesh = sharding_lib.make_mesh({'data': 1, 'fsdp': 1, 'model': 1}, jax.devices()[:1])
  model = models.create_model(config.model.name, **trainer.model_overrides(config, NUM_CLASSES))
  ts = trainer.TrainSetup.build(model, config, mesh, sharding_lib.rules_from_config(config.sharding_rules))
  abstract_batch = trainer.abstract_train_batch(config, config.batch_size, NUM_CLASSES, mesh)
  rng = np.random.default_rng(0)
  video = abstract_batch['video']
  batch = {'video': rng.integers(0, 256, video.shape).astype(video.dtype) if video.dtype == np.uint8 else
                    rng.standard_normal(video.shape).astype(video.dtype),
           'label': np.arange(config.batch_size, dtype=np.int32) % NUM_CLASSES}
  batch = sharding_lib.global_batch(batch, mesh)
  state = ts.init_state(ts.init_params(jax.random.key(0)))
  step_fn = ts.jit_step(trainer.make_train_step(model, ts.tx, ts.schedule, config, NUM_CLASSES))
  losses = []
  for _ in range(6):
    # One step number for all calls: the same mixup, erasing and drop-path draws, so the losses compare the
    # params on identical targets (the optimizer's own count still advances the warm-up).
    with ts.context():
      state, step_metrics = step_fn(state, batch, jax.random.key(1), np.int32(1))
    losses.append(float(step_metrics['loss']))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.1, losses


@contextlib.contextmanager
def _compilation_cache_as_main_sets_it(config, workdir):
  """The process-wide compilation cache `mvit_jax.main` sets up before a run, for this block only."""
  min_seconds = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)  # The tiny step compiles in about a second.
  try:
    yield trainer.use_compilation_cache(config.compilation_cache_dir, workdir)
  finally:
    trainer.use_compilation_cache('', workdir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', min_seconds)


@pytest.fixture(scope='module')
def preempted_workdir(data_root, tmp_path_factory):
  """A 6-step run (checkpoints every 2 steps, keep 2) that receives SIGTERM during step SIGTERM_STEP."""
  workdir = str(tmp_path_factory.mktemp('preempted'))
  config = testlib.tiny_train_config(data_root, num_train_steps=6, checkpoint_every_steps=2, keep_checkpoints=2)
  progress_hooks = metrics_lib.progress_hooks

  def hooks_with_sigterm(*args, **kwargs):
    def sigterm(step):
      if step == SIGTERM_STEP:
        os.kill(os.getpid(), signal.SIGTERM)
    return [*progress_hooks(*args, **kwargs), sigterm]

  with pytest.MonkeyPatch.context() as mp, _compilation_cache_as_main_sets_it(config, workdir):
    mp.setattr(metrics_lib, 'progress_hooks', hooks_with_sigterm)
    trainer.train_and_evaluate(config, workdir)
  return workdir


def test_sigterm_saves_its_step_and_only_the_newest_checkpoints_remain(preempted_workdir):
  with checkpointing.create_manager(preempted_workdir, read_only=True) as manager:
    steps = manager.all_steps()
  # Step 5 is saved on SIGTERM (after the periodic step 4) and the run stops before step 6; keep_checkpoints=2
  # deleted step 2.
  assert sorted(steps) == [4, SIGTERM_STEP]
  assert sorted(os.listdir(checkpointing.checkpoint_dir(preempted_workdir))) == ['4', str(SIGTERM_STEP)]


def _tree_state(folder):
  """{relative path: (size, mtime_ns)} of every file under folder."""
  return {os.path.relpath(os.path.join(d, f), folder): (os.stat(os.path.join(d, f)).st_size,
                                                        os.stat(os.path.join(d, f)).st_mtime_ns)
          for d, _, names in os.walk(folder) for f in names}


def test_finished_workdir_only_reevaluates_and_ignores_init_from(preempted_workdir, data_root, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'finished')
  shutil.copytree(preempted_workdir, workdir)
  checkpoints_before = _tree_state(checkpointing.checkpoint_dir(workdir))
  assert not os.path.exists(os.path.join(workdir, 'metrics.json'))
  traced_steps = []
  make_train_step = trainer.make_train_step

  def counting_make_train_step(*args, **kwargs):
    train_step = make_train_step(*args, **kwargs)

    def counted(*step_args):
      traced_steps.append(step_args[-1])  # Runs when jax traces the step, i.e. before any step can run.
      return train_step(*step_args)

    return counted

  monkeypatch.setattr(trainer, 'make_train_step', counting_make_train_step)
  # num_train_steps equals the newest checkpoint's step: the run is finished. init_from names a folder that does not
  # exist: reading it would raise, so the run's own checkpoints must win.
  config = testlib.tiny_train_config(data_root, num_train_steps=SIGTERM_STEP, eval_every_steps=0,
                                           init_from=str(tmp_path / 'no_such_model'))
  result = trainer.train_and_evaluate(config, workdir)
  assert not traced_steps
  assert _tree_state(checkpointing.checkpoint_dir(workdir)) == checkpoints_before
  assert result['num_videos'] == 4
  with open(os.path.join(workdir, 'metrics.json')) as f:
    assert json.load(f)['step'] == SIGTERM_STEP


def test_a_resumed_run_loads_its_train_step_from_the_compilation_cache(preempted_workdir, data_root, tmp_path,
                                                                         caplog):
  workdir = str(tmp_path / 'resumed')
  shutil.copytree(preempted_workdir, workdir)
  # The preempted run's cache, where it wrote it: the cache path is part of JAX's cache key on the CPU (XLA's
  # autotuning cache lives under it), so a copied workdir would miss.
  cache = os.path.join(preempted_workdir, 'compilation_cache')
  assert os.listdir(cache)
  config = testlib.tiny_train_config(data_root, num_train_steps=6, checkpoint_every_steps=2, keep_checkpoints=2,
                                           compilation_cache_dir=cache)
  with _compilation_cache_as_main_sets_it(config, workdir) as folder:
    assert folder == cache
    with caplog.at_level(logging.DEBUG, logger='jax._src.compiler'):
      trainer.train_and_evaluate(config, workdir)
  hits = [r.getMessage() for r in caplog.records if r.getMessage().startswith('Persistent compilation cache hit')]
  assert any("'jit_train_step'" in hit for hit in hits), hits
  with checkpointing.create_manager(workdir, read_only=True) as manager:
    assert manager.latest_step() == 6


@pytest.mark.slow
def test_no_restorable_checkpoint_stops_the_run(preempted_workdir, data_root, tmp_path):
  workdir = str(tmp_path / 'damaged')
  shutil.copytree(preempted_workdir, workdir)
  testlib.damage_checkpoint(workdir, 4, 'delete')
  testlib.damage_checkpoint(workdir, SIGTERM_STEP, 'truncate')
  checkpoints_before = _tree_state(checkpointing.checkpoint_dir(workdir))
  for mode in ('train', 'eval'):
    config = testlib.tiny_train_config(data_root, num_train_steps=6, mode=mode)
    with pytest.raises(checkpointing.NoRestorableCheckpointError,
                       match=f'No checkpoint in {checkpointing.checkpoint_dir(workdir)} restores'):
      trainer.train_and_evaluate(config, workdir)
  assert _tree_state(checkpointing.checkpoint_dir(workdir)) == checkpoints_before  # Nothing trained or saved.
