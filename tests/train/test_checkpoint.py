"""Orbax checkpoints: restore onto another mesh, params-only restore, process-count change of the data state."""
import os

import grain
import jax
import numpy as np
import pytest

from mvit_jax.models import pretrained
from mvit_jax.train import checkpointing
from mvit_jax.train import sharding as sharding_lib
from tests import testlib


def _tree(mesh):
  """A params-like tree sharded FSDP-style on `mesh` and an optimizer-state-like tree."""
  rng = np.random.default_rng(0)
  host = {'dense': {'kernel': rng.standard_normal((16, 8), dtype=np.float32),
                    'bias': rng.standard_normal((8,), dtype=np.float32)}}
  specs = {'dense': {'kernel': jax.P('fsdp', None), 'bias': jax.P()}}
  params = jax.tree.map(lambda x, s: jax.device_put(x, jax.NamedSharding(mesh, s)), host, specs,
                        is_leaf=lambda x: isinstance(x, jax.P))
  opt_state = {'mu': jax.tree.map(lambda p: 2 * p, params), 'count': jax.numpy.int32(7)}
  return host, params, opt_state


def _abstract(tree, sharding_fn):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_fn(x)), tree)


def test_restore_onto_other_meshes(tmp_path):
  workdir = str(tmp_path)
  mesh_a = sharding_lib.make_mesh({'data': 2, 'fsdp': 4, 'model': 1})
  host, params, opt_state = _tree(mesh_a)
  data_iter = iter(grain.MapDataset.range(100).batch(2))
  for _ in range(3):
    next(data_iter)
  with checkpointing.create_manager(workdir) as manager:
    checkpointing.save(manager, 5, params, opt_state, jax.random.key(3), data_iter)
    manager.wait_until_finished()
  assert checkpointing.latest_step(workdir) == 5

  # Onto 8-way data parallel (replicated params) and onto a single device.
  for mesh in (sharding_lib.make_mesh({'data': 8, 'fsdp': 1, 'model': 1}),
               sharding_lib.make_mesh({'data': 1, 'fsdp': 1, 'model': 1}, jax.devices()[3:4])):
    replicated = lambda x: jax.NamedSharding(mesh, jax.P())
    fresh_iter = iter(grain.MapDataset.range(100).batch(2))
    with checkpointing.create_manager(workdir) as manager:
      got_params, got_opt, rng, data_restored = checkpointing.restore(
          manager, 5, _abstract(params, replicated), _abstract(opt_state, replicated), fresh_iter)
    assert data_restored
    np.testing.assert_array_equal(next(fresh_iter), [6, 7])  # The 4th batch: the data position was restored.
    assert got_params['dense']['kernel'].sharding.mesh.shape == mesh.shape
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(got_params), host)
    np.testing.assert_array_equal(jax.device_get(got_opt['mu']['dense']['kernel']), 2 * host['dense']['kernel'])
    assert int(got_opt['count']) == 7
    np.testing.assert_array_equal(jax.random.key_data(rng), jax.random.key_data(jax.random.key(3)))

  # latest_params: only the params, on one device, without knowing the tree in advance.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(pretrained.latest_params(workdir)), host)


def test_data_state_from_other_process_count_is_skipped(tmp_path):
  """A checkpoint whose loader state was written by 2 processes restores params in 1 and reports that the loader
  must restart (grain states are per process)."""
  workdir = str(tmp_path)
  mesh = sharding_lib.make_mesh({'data': 8, 'fsdp': 1, 'model': 1})
  host, params, opt_state = _tree(mesh)
  data_iter = iter(grain.MapDataset.range(100).batch(2))
  with checkpointing.create_manager(workdir) as manager:
    checkpointing.save(manager, 1, params, opt_state, jax.random.key(0), data_iter)
    manager.wait_until_finished()
  folder = os.path.join(checkpointing.checkpoint_dir(workdir), '1', 'data_iter')
  os.rename(os.path.join(folder, 'process_0-of-1.json'), os.path.join(folder, 'process_0-of-2.json'))
  with open(os.path.join(folder, 'process_1-of-2.json'), 'w') as f:
    f.write('{}')
  replicated = lambda x: jax.NamedSharding(mesh, jax.P())
  with checkpointing.create_manager(workdir) as manager:
    assert checkpointing.saved_process_count(manager, 1) == 2
    got_params, _, _, data_restored = checkpointing.restore(
        manager, 1, _abstract(params, replicated), _abstract(opt_state, replicated), iter(grain.MapDataset.range(4)))
  assert not data_restored
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(got_params), host)


def test_latest_params_without_checkpoint(tmp_path):
  os.makedirs(checkpointing.checkpoint_dir(str(tmp_path)))
  with pytest.raises(FileNotFoundError, match='No checkpoint'):
    pretrained.latest_params(str(tmp_path))


def _save_steps(workdir, mesh, steps):
  """Saves params and optimizer state scaled by the step number at each of `steps`; returns the host params."""
  host, params, opt_state = _tree(mesh)
  with checkpointing.create_manager(workdir, keep=10) as manager:
    for step in steps:
      scaled = lambda tree: jax.tree.map(lambda x: x * step, tree)  # pylint: disable=cell-var-from-loop
      checkpointing.save(manager, step, scaled(params), scaled(opt_state), jax.random.key(step),
                         iter(grain.MapDataset.range(100).batch(2)))
    manager.wait_until_finished()
  return host


@pytest.mark.parametrize('how', ['truncate', 'delete'])
def test_damaged_newest_checkpoint_falls_back_and_is_set_aside(tmp_path, how, caplog):
  workdir = str(tmp_path)
  mesh = sharding_lib.make_mesh({'data': 8, 'fsdp': 1, 'model': 1})
  host = _save_steps(workdir, mesh, [1, 2, 3])
  testlib.damage_checkpoint(workdir, 3, how)
  replicated = lambda x: jax.NamedSharding(mesh, jax.P())
  _, params, opt_state = _tree(mesh)
  # What load_pretrained(workdir) and init_from read skips the damaged step too.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(pretrained.latest_params(workdir)),
               jax.tree.map(lambda x: 2 * x, host))
  with checkpointing.create_manager(workdir, keep=10) as manager:
    step, got_params = checkpointing.restore_latest_params(manager, _abstract(params, replicated))
    assert step == 2 and manager.all_steps() == [1, 2, 3]  # Eval-style restores move nothing.
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(got_params), jax.tree.map(lambda x: 2 * x, host))
    step, got_params, _, rng, data_restored = checkpointing.restore_latest(
        manager, _abstract(params, replicated), _abstract(opt_state, replicated), iter(grain.MapDataset.range(4)))
    assert step == 2 and data_restored
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(got_params), jax.tree.map(lambda x: 2 * x, host))
    np.testing.assert_array_equal(jax.random.key_data(rng), jax.random.key_data(jax.random.key(2)))
    # Step 3 is moved aside, so the resumed run can save step 3 again.
    assert manager.all_steps() == [1, 2]
    checkpointing.save(manager, 3, params, opt_state, jax.random.key(3), iter(grain.MapDataset.range(4)))
    manager.wait_until_finished()
  assert checkpointing.latest_step(workdir) == 3
  assert os.listdir(tmp_path / 'damaged_checkpoints') == ['3']
  assert f'Checkpoint {checkpointing.checkpoint_dir(workdir)}/3 does not restore' in caplog.text


def test_no_restorable_checkpoint_names_the_folder(tmp_path):
  workdir = str(tmp_path)
  mesh = sharding_lib.make_mesh({'data': 8, 'fsdp': 1, 'model': 1})
  _save_steps(workdir, mesh, [1, 2])
  testlib.damage_checkpoint(workdir, 1, 'delete')
  testlib.damage_checkpoint(workdir, 2, 'truncate')
  replicated = lambda x: jax.NamedSharding(mesh, jax.P())
  _, params, opt_state = _tree(mesh)
  message = f'No checkpoint in {checkpointing.checkpoint_dir(workdir)} restores'
  with checkpointing.create_manager(workdir, keep=10) as manager:
    with pytest.raises(checkpointing.NoRestorableCheckpointError, match=message):
      checkpointing.restore_latest(manager, _abstract(params, replicated), _abstract(opt_state, replicated), None)
    with pytest.raises(checkpointing.NoRestorableCheckpointError, match=message):
      checkpointing.restore_latest_params(manager, _abstract(params, replicated))
    assert manager.all_steps() == [1, 2]  # Nothing is moved when nothing restores.
  # No checkpoint at all: None, the caller starts from scratch or init_from.
  with checkpointing.create_manager(str(tmp_path / 'empty')) as manager:
    assert checkpointing.restore_latest_params(manager, _abstract(params, replicated)) is None
