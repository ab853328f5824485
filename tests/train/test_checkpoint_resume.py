"""Exact resume with real processes: SIGTERM saves and exits cleanly, SIGKILL loses only the steps since the last
checkpoint, a damaged newest checkpoint falls back to the previous one, and each resumed run ends with the same
params (bitwise) as an uninterrupted one. Two processes preempted by SIGTERM save the same step."""
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mvit_jax.models import pretrained
from mvit_jax.train import checkpointing
from tests import testlib

pytestmark = pytest.mark.slow  # Every test here starts processes.

REPO = testlib.REPO
NUM_STEPS = 8


def _command(data_root, workdir, num_steps=NUM_STEPS, checkpoint_every_steps=2):
  return [sys.executable, '-m', 'mvit_jax.main', f'--config=tests/testlib.py:{data_root}',
          f'--workdir={workdir}', f'--config.num_train_steps={num_steps}',
          f'--config.checkpoint_every_steps={checkpoint_every_steps}',
          '--config.log_every_steps=2', '--config.eval_every_steps=-1']


def _start(data_root, workdir, env, log):
  return subprocess.Popen(_command(data_root, workdir), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_for_checkpoint_after(workdir, step, proc, timeout=300):
  """Polls until a finished checkpoint newer than `step` exists; returns its step."""
  folder = checkpointing.checkpoint_dir(workdir)
  deadline = time.time() + timeout
  while time.time() < deadline:
    done = [int(n) for n in (os.listdir(folder) if os.path.isdir(folder) else []) if n.isdigit()]
    if done and max(done) > step:
      return max(done)
    if proc.poll() is not None:
      raise AssertionError(f'run exited with {proc.returncode} before a checkpoint after step {step}')
    time.sleep(0.02)
  raise AssertionError('timed out waiting for a checkpoint')


def _assert_same_final_params(workdir, reference):
  # Same programs, same data order (grain state), same per-step keys (fold_in(rng, step)) on CPU: bitwise equal.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(pretrained.latest_params(workdir)),
               jax.device_get(pretrained.latest_params(reference)))


@pytest.fixture(scope='module')
def run_env(tmp_path_factory):
  """(data_root, env, log_path): the tiny dataset, the subprocess environment with a compilation cache shared by
  the module's runs, and one log for the single-process runs."""
  tmp_path = tmp_path_factory.mktemp('resume')
  data_root = testlib.write_tiny_dataset(str(tmp_path / 'data'))
  return data_root, testlib.subprocess_env(str(tmp_path / 'jax_cache')), tmp_path / 'log.txt'


@pytest.fixture(scope='module')
def reference(run_env, tmp_path_factory):
  """Workdir of an uninterrupted NUM_STEPS run (checkpoints 4, 6, 8)."""
  data_root, env, log_path = run_env
  workdir = str(tmp_path_factory.mktemp('reference'))
  with open(log_path, 'a') as log:
    assert subprocess.run(_command(data_root, workdir), cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT).returncode == 0, log_path.read_text()[-3000:]
  assert checkpointing.latest_step(workdir) == NUM_STEPS
  return workdir


def test_sigterm_and_sigkill_then_exact_resume(run_env, reference, tmp_path):
  data_root, env, log_path = run_env
  with open(log_path, 'a') as log:
    # Preemption: SIGTERM once step 2 is saved -> the run saves its current step and exits 0.
    workdir = str(tmp_path / 'interrupted')
    proc = _start(data_root, workdir, env, log)
    _wait_for_checkpoint_after(workdir, 0, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 0, log_path.read_text()[-3000:]
    preempted_at = checkpointing.latest_step(workdir)
    assert 2 <= preempted_at < NUM_STEPS, preempted_at

    # Crash: SIGKILL right after the resumed run writes a newer checkpoint (an async save may be cut short).
    proc = _start(data_root, workdir, env, log)
    _wait_for_checkpoint_after(workdir, preempted_at, proc)
    proc.kill()
    assert proc.wait(60) == -signal.SIGKILL
    assert checkpointing.latest_step(workdir) < NUM_STEPS

    # Resume to the end.
    assert subprocess.run(_command(data_root, workdir), cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT).returncode == 0, log_path.read_text()[-3000:]
  assert checkpointing.latest_step(workdir) == NUM_STEPS
  _assert_same_final_params(workdir, reference)


def test_truncated_newest_checkpoint_resumes_from_the_previous_one(run_env, reference, tmp_path):
  data_root, env, _ = run_env
  # The reference stopped at step 8 of 8; the copy is asked for the same 8 steps with its step 8 damaged.
  workdir = str(tmp_path / 'damaged')
  shutil.copytree(reference, workdir)
  damaged_file = testlib.damage_checkpoint(workdir, NUM_STEPS, 'truncate')
  result = subprocess.run(_command(data_root, workdir), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  assert result.returncode == 0, result.stdout[-3000:]
  step_folder = os.path.join(checkpointing.checkpoint_dir(workdir), str(NUM_STEPS))
  assert f'Checkpoint {step_folder} does not restore' in result.stdout
  assert 'Resumed from step 6' in result.stdout
  assert '[8] train/' in result.stdout  # Steps 7 and 8 ran again.
  # The damaged step is kept aside, not overwritten.
  set_aside = os.path.join(workdir, 'damaged_checkpoints', str(NUM_STEPS))
  assert os.path.getsize(os.path.join(set_aside, os.path.relpath(damaged_file, step_folder))) < os.path.getsize(
      os.path.join(reference, 'checkpoints', os.path.relpath(damaged_file, os.path.join(workdir, 'checkpoints'))))
  assert checkpointing.latest_step(workdir) == NUM_STEPS
  _assert_same_final_params(workdir, reference)
