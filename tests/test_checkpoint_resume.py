"""Exact resume with real processes: SIGTERM saves and exits cleanly, SIGKILL loses only the steps since the last
checkpoint, and the resumed run ends with the same params (bitwise) as an uninterrupted one."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mvit_jax import checkpointing
import train_testlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 8


def _command(data_root, workdir):
  return [sys.executable, '-m', 'mvit_jax.main', f'--config=tests/train_testlib.py:{data_root}',
          f'--workdir={workdir}', f'--config.num_train_steps={NUM_STEPS}', '--config.checkpoint_every_steps=2',
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


@pytest.mark.slow
def test_sigterm_and_sigkill_then_exact_resume(tmp_path):
  data_root = train_testlib.write_tiny_dataset(str(tmp_path / 'data'))
  env = train_testlib.subprocess_env(str(tmp_path / 'jax_cache'))
  log_path = tmp_path / 'log.txt'
  with open(log_path, 'w') as log:
    # Reference: uninterrupted run.
    reference = str(tmp_path / 'reference')
    assert subprocess.run(_command(data_root, reference), cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT).returncode == 0, log_path.read_text()[-3000:]
    assert checkpointing.latest_step(reference) == NUM_STEPS

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
  # Same programs, same data order (grain state), same per-step keys (fold_in(rng, step)) on CPU: bitwise equal.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(checkpointing.latest_params(workdir)),
               jax.device_get(checkpointing.latest_params(reference)))
