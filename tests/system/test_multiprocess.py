"""Two processes on localhost (jax.distributed.initialize, gloo CPU collectives, 1 CPU device each) train the demo
config, agree on the loss, are preempted at one step together, and the checkpoint they write restores in a single
process."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from mvit_jax.train import checkpointing
from tests import testlib

pytestmark = pytest.mark.slow  # Every test here starts processes.

REPO = testlib.REPO
# The demo config, shrunk: fewer synthetic videos, faster-compiling pooling, no loader worker processes.
DEMO_OVERRIDES = ['--config.synthetic_data.videos_per_class=4', '--config.model.pool_impl=conv',
                  '--config.data.num_workers=0', '--config.log_every_steps=1', '--config.checkpoint_every_steps=2',
                  '--config.eval_batch_size=8']


def _losses(log: str) -> dict[int, float]:
  return {int(step): float(loss) for step, loss in re.findall(r'\[(\d+)\] train/accuracy=\S+, train/grad_norm=\S+, '
                                                              r'train/loss=([0-9.eE+-]+)', log)}


def test_two_processes_agree_are_preempted_together_and_restore_in_one(tmp_path):
  """SIGTERM to process 1 only: JAX's preemption sync service picks a step both processes reach; both save it."""
  workdir = str(tmp_path / 'run')
  env = testlib.subprocess_env(str(tmp_path / 'jax_cache'), num_devices=1)
  env.update(JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  port, num_steps = testlib.free_port(), 200
  procs, logs = [], []
  for i in range(2):
    logs.append(tmp_path / f'process_{i}.log')
    procs.append(subprocess.Popen(
        [sys.executable, '-m', 'mvit_jax.main', '--config=experiments/demo.py', f'--workdir={workdir}',
         f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}',
         f'--config.num_train_steps={num_steps}', '--config.eval_every_steps=2', *DEMO_OVERRIDES],
        cwd=REPO, env=env, stdout=open(logs[i], 'w'), stderr=subprocess.STDOUT))
  deadline = time.time() + 600
  # The multi-view eval after step 2 ran on both processes (it writes metrics.json); then preempt.
  while not os.path.exists(os.path.join(workdir, 'metrics.json')):
    assert time.time() < deadline and procs[0].poll() is None, logs[0].read_text()[-3000:]
    time.sleep(0.1)
  procs[1].send_signal(signal.SIGTERM)
  for proc, log in zip(procs, logs):
    assert proc.wait(300) == 0, log.read_text()[-4000:]
  texts = [log.read_text() for log in logs]
  assert 'Process 1 of 2, 1 local devices' in texts[1]
  assert "Mesh {'data': 2, 'fsdp': 1, 'model': 1} on 2 devices (2 processes)" in texts[0]
  saved = [re.findall(r'Preemption requested: saved step (\d+)', t) for t in texts]
  assert saved[0] == saved[1] and len(saved[0]) == 1, saved
  step = int(saved[0][0])
  assert 2 <= step < num_steps
  losses = [_losses(t) for t in texts]
  assert sorted(losses[0]) == list(range(1, step + 1)), texts[0][-3000:]
  assert losses[0] == losses[1]  # Replicated global loss: identical on both processes.
  assert checkpointing.latest_step(workdir) == step
  data_files = os.listdir(os.path.join(checkpointing.checkpoint_dir(workdir), str(step), 'data_iter'))
  assert sorted(f for f in data_files if f.endswith('.json')) == ['process_0-of-2.json', 'process_1-of-2.json']
  # One process with 1 device resumes the 2-process, 2-device checkpoint: the loader restarts with a warning.
  result = subprocess.run(
      [sys.executable, '-m', 'mvit_jax.main', '--config=experiments/demo.py', f'--workdir={workdir}',
       f'--config.num_train_steps={step + 1}', '--config.eval_every_steps=-1', *DEMO_OVERRIDES],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-4000:]
  assert f'Resumed from step {step}' in result.stdout
  assert 'holds data-loader state of 2 processes but this run has 1' in result.stdout
  assert checkpointing.latest_step(workdir) == step + 1
