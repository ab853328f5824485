"""Training on prepared shards and on DMVR TFRecords resumes bitwise after SIGKILL: the killed run, restarted,
ends with the parameters of an uninterrupted run on the same source (grain iterator state, checkpoints and
per-step keys as for video files, tests/train/test_checkpoint_resume.py)."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mvit_jax.data import decode
from mvit_jax.data import prepare
from mvit_jax.data import sources
from mvit_jax.models import pretrained
from mvit_jax.train import checkpointing
from tests import testlib

pytestmark = pytest.mark.slow  # Starts trainer processes.

NUM_STEPS = 6


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  """(config overrides per kind, subprocess env): the tiny dataset as prepared shards and as DMVR TFRecords."""
  tmp = tmp_path_factory.mktemp('sources')
  root = testlib.write_tiny_dataset(str(tmp / 'videos'))
  shards = {}
  for split in ('train', 'val'):
    manifest = os.path.join(root, f'{split}.csv')
    prepare.prepare(manifest, root, str(tmp / 'prepared' / split), workers=1)
    records = sources.read_manifest(manifest, root)
    videos = [(decode.decode_video(r.path, lambda n, fps: np.arange(n)).frames, [r.label]) for r in records]
    shards[split] = str(tmp / f'{split}.tfrecord')
    testlib.write_tfrecords(shards[split], videos)
  overrides = {
      'prepared': [f'--config.data.train_shards={tmp / "prepared" / "train"}',
                   f'--config.data.eval_shards={tmp / "prepared" / "val"}'],
      'dmvr': [f'--config.data.train_shards={shards["train"]}', f'--config.data.eval_shards={shards["val"]}',
               '--config.data.frames_fps=10'],
  }
  return root, overrides, testlib.subprocess_env(str(tmp / 'jax_cache'))


def _command(root, kind, overrides, workdir):
  return [sys.executable, '-m', 'mvit_jax.main', f'--config=tests/testlib.py:{root}', f'--workdir={workdir}',
          f'--config.data.dataset_kind={kind}', *overrides[kind], f'--config.num_train_steps={NUM_STEPS}',
          '--config.checkpoint_every_steps=2', '--config.eval_every_steps=-1']


@pytest.mark.parametrize('kind', ['prepared', 'dmvr'])
def test_sigkill_then_resume_is_bitwise_the_uninterrupted_run(data, kind, tmp_path):
  root, overrides, env = data
  run = lambda workdir, **kw: subprocess.run(_command(root, kind, overrides, workdir), cwd=testlib.REPO, env=env,
                                             capture_output=True, text=True, **kw)
  reference = str(tmp_path / 'reference')
  result = run(reference)
  assert result.returncode == 0, result.stderr[-3000:]

  workdir = str(tmp_path / 'killed')
  proc = subprocess.Popen(_command(root, kind, overrides, workdir), cwd=testlib.REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while checkpointing.latest_step(workdir) is None or checkpointing.latest_step(workdir) < 2:
    assert proc.poll() is None and time.time() < deadline, 'no checkpoint before the run ended'
    time.sleep(0.02)
  proc.kill()
  assert proc.wait(60) == -signal.SIGKILL
  assert checkpointing.latest_step(workdir) < NUM_STEPS

  result = run(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from step' in result.stderr + result.stdout
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(pretrained.latest_params(workdir)),
               jax.device_get(pretrained.latest_params(reference)))
