"""Two processes on localhost (jax.distributed.initialize, gloo CPU collectives, 1 CPU device each) train the demo
config for a few steps and agree on the loss; the checkpoint they write restores in a single process."""
import os
import re
import subprocess
import sys

import pytest

from mvit_jax import checkpointing
import train_testlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The demo config, shrunk: fewer synthetic videos, faster-compiling pooling, no loader worker processes.
DEMO_OVERRIDES = ['--config.synthetic_data.videos_per_class=4', '--config.model.pool_impl=conv',
                  '--config.data.num_workers=0', '--config.log_every_steps=1', '--config.checkpoint_every_steps=2',
                  '--config.eval_batch_size=8']


def _losses(log: str) -> dict[int, float]:
  return {int(step): float(loss) for step, loss in re.findall(r'\[(\d+)\] train/accuracy=\S+, train/grad_norm=\S+, '
                                                              r'train/loss=([0-9.eE+-]+)', log)}


@pytest.mark.slow
def test_two_processes_agree_and_restore_in_one(tmp_path):
  workdir = str(tmp_path / 'run')
  env = train_testlib.subprocess_env(str(tmp_path / 'jax_cache'), num_devices=1)
  env.update(JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  port = train_testlib.free_port()
  procs, logs = [], []
  for i in range(2):
    logs.append(tmp_path / f'process_{i}.log')
    procs.append(subprocess.Popen(
        [sys.executable, '-m', 'mvit_jax.main', '--config=experiments/demo.py', f'--workdir={workdir}',
         f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}',
         '--config.num_train_steps=3', *DEMO_OVERRIDES],
        cwd=REPO, env=env, stdout=open(logs[i], 'w'), stderr=subprocess.STDOUT))
  for proc, log in zip(procs, logs):
    assert proc.wait(600) == 0, log.read_text()[-4000:]
  texts = [log.read_text() for log in logs]
  assert 'Process 1 of 2, 1 local devices' in texts[1]
  assert "Mesh {'data': 2, 'fsdp': 1, 'model': 1} on 2 devices (2 processes)" in texts[0]
  losses = [_losses(t) for t in texts]
  assert sorted(losses[0]) == [1, 2, 3], texts[0][-3000:]
  assert losses[0] == losses[1]  # Replicated global loss: identical on both processes.
  assert checkpointing.latest_step(workdir) == 3
  data_files = os.listdir(os.path.join(checkpointing.checkpoint_dir(workdir), '3', 'data_iter'))
  assert sorted(f for f in data_files if f.endswith('.json')) == ['process_0-of-2.json', 'process_1-of-2.json']
  assert os.path.exists(os.path.join(workdir, 'metrics.json'))  # The final multi-view eval ran on 2 processes.

  # One process with 1 device resumes the 2-process, 2-device checkpoint: the loader restarts with a warning.
  result = subprocess.run(
      [sys.executable, '-m', 'mvit_jax.main', '--config=experiments/demo.py', f'--workdir={workdir}',
       '--config.num_train_steps=4', '--config.eval_every_steps=-1', *DEMO_OVERRIDES],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-4000:]
  assert 'Resumed from step 3' in result.stdout
  assert 'holds data-loader state of 2 processes but this run has 1' in result.stdout
  assert checkpointing.latest_step(workdir) == 4
