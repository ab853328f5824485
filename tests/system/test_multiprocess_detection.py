"""Two processes on localhost (jax.distributed, gloo CPU collectives, 1 CPU device each) train and evaluate the AVA
demo shrunk: each process loads half of the eval keyframes, process 0 writes one detections CSV holding every
keyframe, both report its mAP, and `python -m mvit_jax.ava_eval` on that CSV prints it."""
import json
import re
import subprocess
import sys

import pytest

from mvit_jax.data import ava
from mvit_jax.data import synthetic_ava
from mvit_jax.train import config as config_lib
from tests import testlib

pytestmark = pytest.mark.slow  # Starts processes.

OVERRIDES = ['--config.synthetic_data.ava_num_videos=4', '--config.synthetic_data.ava_num_val_videos=2',
             '--config.synthetic_data.ava_seconds=7', '--config.model.pool_impl=conv', '--config.data.num_workers=0',
             '--config.num_train_steps=2', '--config.batch_size=4', '--config.eval_batch_size=4',
             '--config.log_every_steps=1']


def test_two_processes_write_one_detections_csv_with_every_keyframe(tmp_path):
  workdir = tmp_path / 'run'
  env = testlib.subprocess_env(str(tmp_path / 'jax_cache'), num_devices=1)
  env.update(JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
  port = testlib.free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'mvit_jax.main', '--config=experiments/ava_demo.py', f'--workdir={workdir}',
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}', *OVERRIDES],
      cwd=testlib.REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  logs = [proc.communicate(timeout=900)[0] for proc in procs]
  for proc, log in zip(procs, logs):
    assert proc.returncode == 0, log[-4000:]
  reported = [float(re.findall(r'Detection eval at step 2 over \d+ keyframes, \d+ boxes: mAP ([0-9.]+)', log)[0])
              for log in logs]
  record = json.loads((workdir / 'metrics.json').read_text())
  assert reported[0] == reported[1] == pytest.approx(record['mAP'], abs=0.006)  # Logged with 2 decimals.

  config = config_lib.base_config()
  synthetic_ava.configure(config.data, str(workdir / 'synthetic_data'))
  keyframes = ava.keyframe_list(config.data, 'eval')
  assert record['num_keyframes'] == len(keyframes)
  written = {(row.split(',')[0], int(row.split(',')[1])) for row in open(record['detections'])}
  assert written == set(keyframes)  # Both processes' keyframes in the one file.
  assert abs(testlib.ava_eval_cli_map(config.data, record['detections']) - record['mAP']) < 1e-9
