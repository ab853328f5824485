"""Training runs whose workdir is a bucket on a real GCS server (fake-gcs-server): the demo end to end with its data
in the bucket (same metrics and bitwise-equal params as on local disk, nothing written to local disk outside the
temporary folders), SIGKILL during a checkpoint write then an exact resume, a damaged newest checkpoint, two
processes with separate local folders preempted together, and the server going away mid-run."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import jax
import numpy as np
import pytest

from mvit_jax.models import pretrained
from mvit_jax.system import storage
from mvit_jax.train import checkpointing
from tests import testlib

pytestmark = pytest.mark.slow  # Every test here starts processes.

REPO = testlib.REPO
NUM_STEPS = 8
# The demo config, shrunk: 16 synthetic videos, faster-compiling pooling, one loader worker process (it reads the
# bucket too).
DEMO_OVERRIDES = ['--config.synthetic_data.videos_per_class=4', '--config.model.pool_impl=conv',
                  '--config.data.num_workers=1', '--config.log_every_steps=2', '--config.checkpoint_every_steps=4',
                  '--config.batch_size=8', '--config.eval_batch_size=8', f'--config.num_train_steps={NUM_STEPS}']


def _tiny_command(data_root, workdir, num_steps=NUM_STEPS):
  return [sys.executable, '-m', 'mvit_jax.main', f'--config=tests/testlib.py:{data_root}', f'--workdir={workdir}',
          f'--config.num_train_steps={num_steps}', '--config.checkpoint_every_steps=2', '--config.log_every_steps=2',
          '--config.eval_every_steps=-1']


def _env(server, cache_dir, **extra):
  return {**testlib.subprocess_env(cache_dir), **server.env, **extra}


def _objects(server, bucket: str, prefix: str) -> list[str]:
  """Object names under `prefix` in `bucket` ('gs://NAME'), asked of the server directly (no client cache)."""
  query = urllib.parse.urlencode({'prefix': prefix})
  with urllib.request.urlopen(f'{server.url}/storage/v1/b/{bucket[5:]}/o?{query}', timeout=10) as response:
    return [item['name'] for item in json.load(response).get('items', [])]


def _complete_steps(server, bucket: str) -> list[int]:
  """Steps of run/checkpoints whose write orbax has finished (a bucket has no rename: it writes the step, then the
  step's commit_success.txt)."""
  names = _objects(server, bucket, 'run/checkpoints/')
  return [int(m.group(1)) for n in names if (m := re.fullmatch(r'run/checkpoints/(\d+)/commit_success\.txt', n))]


def _assert_same_params(workdir, reference):
  # Same programs, same data order, same per-step keys on CPU: bitwise equal.
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(pretrained.latest_params(workdir)),
               jax.device_get(pretrained.latest_params(reference)))


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
  return testlib.write_tiny_dataset(str(tmp_path_factory.mktemp('tiny_data')))


@pytest.fixture(scope='module')
def tiny_reference(tiny_data, tmp_path_factory):
  """Local workdir of an uninterrupted NUM_STEPS run of the tiny config (checkpoints 4, 6, 8)."""
  tmp = tmp_path_factory.mktemp('reference')
  workdir = str(tmp / 'run')
  env = testlib.subprocess_env(str(tmp / 'jax_cache'))
  result = subprocess.run(_tiny_command(tiny_data, workdir), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  assert result.returncode == 0, result.stdout[-3000:]
  return workdir


def test_demo_in_a_bucket_matches_the_local_run(gcs_server, bucket, tmp_path):
  local = str(tmp_path / 'local')
  command = [sys.executable, '-m', 'mvit_jax.main', f'--config={REPO}/experiments/demo.py', *DEMO_OVERRIDES]
  result = subprocess.run([*command, f'--workdir={local}'], cwd=REPO, env=testlib.subprocess_env(str(tmp_path / 'c')),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  assert result.returncode == 0, result.stdout[-3000:]

  # In the bucket: the process starts in an empty folder with its own HOME and TMPDIR; its compilation cache is the
  # config's default, WORKDIR/compilation_cache.
  workdir = f'{bucket}/run'
  cwd, home, tmp = (tmp_path / n for n in ('cwd', 'home', 'tmp'))
  for folder in (cwd, home, tmp):
    folder.mkdir()
  env = {**os.environ, **gcs_server.env, 'HOME': str(home), 'TMPDIR': str(tmp), 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  result = subprocess.run([*command, f'--workdir={workdir}'], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  assert result.returncode == 0, result.stdout[-3000:]

  assert json.loads(storage.read_text(f'{workdir}/metrics.json')) == json.loads(
      open(os.path.join(local, 'metrics.json')).read())
  _assert_same_params(workdir, local)
  names = _objects(gcs_server, bucket, 'run/')
  for expected in ('run/config.json', 'run/model.json', 'run/synthetic_data/classes.txt',
                   f'run/eval/predictions_{NUM_STEPS}.csv', f'run/checkpoints/{NUM_STEPS}/params/'):
    assert any(n.startswith(expected) for n in names), expected
  assert any(re.match(r'run/events\.out\.tfevents\.', n) for n in names), names
  assert any(n.startswith('run/compilation_cache/') for n in names), names
  assert not list(cwd.iterdir()) and not list(tmp.iterdir()), (list(cwd.iterdir()), list(tmp.iterdir()))
  # Keras (imported with TensorFlow by clu's TensorBoard writer) writes its default settings to ~/.keras/keras.json
  # and, where matplotlib is installed, imports it, which caches its font list in ~/.cache/matplotlib.
  written = {str(p.relative_to(home)) for p in home.rglob('*') if p.is_file()}
  assert not {p for p in written if p != '.keras/keras.json' and not p.startswith('.cache/matplotlib/')}, written


def test_sigkill_during_a_checkpoint_write_then_exact_resume(gcs_server, bucket, tiny_data, tiny_reference,
                                                               tmp_path):
  workdir = f'{bucket}/run'
  env = _env(gcs_server, str(tmp_path / 'jax_cache'))
  with open(tmp_path / 'log.txt', 'w') as log:
    proc = subprocess.Popen(_tiny_command(tiny_data, workdir), cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    # The first object of step 4 (step 2 is complete by then): the write of that step has begun.
    deadline = time.time() + 300
    while not any(n.startswith('run/checkpoints/4') for n in _objects(gcs_server, bucket, 'run/checkpoints/')):
      assert proc.poll() is None and time.time() < deadline, (tmp_path / 'log.txt').read_text()[-3000:]
      time.sleep(0.01)
    proc.kill()
    assert proc.wait(60) == -signal.SIGKILL
  assert checkpointing.latest_step(workdir) in (2, 4)  # Step 4 only if its write had finished: never half of it.
  result = subprocess.run(_tiny_command(tiny_data, workdir), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  assert result.returncode == 0, result.stdout[-3000:]
  assert re.search(r'Resumed from step [24] in gs://', result.stdout), result.stdout[-3000:]
  assert checkpointing.latest_step(workdir) == NUM_STEPS
  _assert_same_params(workdir, tiny_reference)


def test_damaged_newest_checkpoint_in_a_bucket_falls_back(gcs_server, bucket, tiny_data, tiny_reference, tmp_path):
  damaged = str(tmp_path / 'damaged')
  shutil.copytree(tiny_reference, damaged)
  testlib.damage_checkpoint(damaged, NUM_STEPS, 'truncate')
  workdir = f'{bucket}/run'
  storage.upload_tree(damaged, workdir)
  result = subprocess.run(_tiny_command(tiny_data, workdir), cwd=REPO, env=_env(gcs_server, str(tmp_path / 'c')),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  assert result.returncode == 0, result.stdout[-3000:]
  assert f'Checkpoint {workdir}/checkpoints/{NUM_STEPS} does not restore' in result.stdout, result.stdout[-3000:]
  assert 'Resumed from step 6' in result.stdout
  assert _objects(gcs_server, bucket, f'run/damaged_checkpoints/{NUM_STEPS}/params/')  # Copied aside, then deleted.
  assert checkpointing.latest_step(workdir) == NUM_STEPS
  _assert_same_params(workdir, tiny_reference)


def test_two_processes_with_separate_local_folders_share_a_bucket_workdir(gcs_server, bucket, tmp_path):
  """SIGTERM to process 1 only: both save the same step in the bucket, and a restart resumes from it."""
  workdir = f'{bucket}/run'
  port, num_steps = testlib.free_port(), 200
  procs, logs = [], []
  for i in range(2):
    home, tmp = tmp_path / f'home_{i}', tmp_path / f'tmp_{i}'
    home.mkdir(), tmp.mkdir()
    env = _env(gcs_server, str(tmp_path / f'jax_cache_{i}'), HOME=str(home), TMPDIR=str(tmp),
               JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo')
    logs.append(tmp_path / f'process_{i}.log')
    procs.append(subprocess.Popen(
        [sys.executable, '-m', 'mvit_jax.main', '--config=experiments/demo.py', f'--workdir={workdir}',
         f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}', *DEMO_OVERRIDES,
         f'--config.num_train_steps={num_steps}', '--config.checkpoint_every_steps=2', '--config.eval_every_steps=-1',
         '--config.data.num_workers=0'],
        cwd=REPO, env=env, stdout=open(logs[i], 'w'), stderr=subprocess.STDOUT))
  deadline = time.time() + 600
  while not _complete_steps(gcs_server, bucket):
    assert time.time() < deadline and procs[0].poll() is None, logs[0].read_text()[-3000:]
    time.sleep(0.1)
  procs[1].send_signal(signal.SIGTERM)
  for proc, log in zip(procs, logs):
    assert proc.wait(300) == 0, log.read_text()[-4000:]
  saved = [re.findall(r'Preemption requested: saved step (\d+)', log.read_text()) for log in logs]
  assert saved[0] == saved[1] and len(saved[0]) == 1, saved
  step = int(saved[0][0])
  assert checkpointing.latest_step(workdir) == step
  data_files = storage.listdir(f'{workdir}/checkpoints/{step}/data_iter')
  assert sorted(f for f in data_files if f.endswith('.json')) == ['process_0-of-2.json', 'process_1-of-2.json']
  result = subprocess.run(
      [sys.executable, '-m', 'mvit_jax.main', '--config=experiments/demo.py', f'--workdir={workdir}', *DEMO_OVERRIDES,
       f'--config.num_train_steps={step + 1}', '--config.eval_every_steps=-1', '--config.data.num_workers=0'],
      cwd=REPO, env=_env(gcs_server, str(tmp_path / 'jax_cache_0')), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-4000:]
  assert f'Resumed from step {step}' in result.stdout
  assert checkpointing.latest_step(workdir) == step + 1


def test_a_server_that_goes_away_ends_the_run_with_one_line_and_the_last_checkpoint_restores(tiny_data, tmp_path):
  server = testlib.GcsServer(root=str(tmp_path / 'objects')).start()  # Kept on disk across the restart.
  try:
    bucket = server.create_bucket('run-bucket')
    workdir = f'{bucket}/run'
    env = _env(server, str(tmp_path / 'jax_cache'))
    command = [*_tiny_command(tiny_data, workdir, num_steps=1000), '--config.checkpoint_every_steps=4']
    with open(tmp_path / 'log.txt', 'w') as log:
      proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.PIPE, text=True)
      deadline = time.time() + 300
      while not _complete_steps(server, bucket):
        assert proc.poll() is None and time.time() < deadline, (tmp_path / 'log.txt').read_text()[-3000:]
        time.sleep(0.05)
      server.stop()
      _, stderr = proc.communicate(timeout=900)  # The client's retries (about 30 s per call) come first.
    assert proc.returncode == 1, stderr[-3000:]
    last_line = stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf'mvit_jax\.main: error: {re.escape(workdir)}: .+', last_line), stderr[-3000:]

    server.start()
    result = subprocess.run([*_tiny_command(tiny_data, workdir, num_steps=NUM_STEPS)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r'Resumed from step \d+ in gs://', result.stdout), result.stdout[-3000:]
  finally:
    server.stop()
