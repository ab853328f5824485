"""mvit_jax.aot compiles the trainer's train step for a TPU topology on this CPU-only machine (libtpu's
compile-only client) and reports sane numbers."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

pytest.importorskip('libtpu', reason='needs libtpu (pip install -e .[tpu])')

from mvit_jax.tools import aot  # pylint: disable=g-import-not-at-top
from mvit_jax.train import config as config_lib  # pylint: disable=g-import-not-at-top
from mvit_jax.train import trainer  # pylint: disable=g-import-not-at-top
from tests import testlib

REPO = testlib.REPO


def tiny_config():
  """mvit_tiny on 4x32x32 uint8 clips (the K400 recipe's batch path), bf16, on a data x fsdp mesh. Random erasing
  and mixup are off: on a TPU they add a third to this model's compile time."""
  c = config_lib.base_config()
  c.model.name = 'mvit_tiny'
  c.half_precision = True
  c.batch_size = 8
  c.mesh.data, c.mesh.fsdp = 2, 2
  d = c.data
  d.num_classes, d.num_frames, d.crop_size = 4, 4, 32
  d.num_repeated_samples = 2
  d.random_erasing_prob, d.mixup_prob = 0.0, 0.0
  return c


def test_compiles_train_step_for_v5e_with_fsdp():
  devices = aot.topology_devices('v5e:2x2')
  assert len(devices) == 4 and devices[0].platform == 'tpu'
  report = aot.compile_train_step(tiny_config(), devices, per_chip_batch=2)
  assert report.mesh == {'data': 2, 'fsdp': 2, 'model': 1}
  assert report.hbm_bytes == 16 * aot.GiB
  assert report.flops > 0 and report.temp_bytes > 0 and report.argument_bytes > 0
  assert 0 < report.total_bytes <= report.hbm_bytes and report.fits
  assert report.compile_s > 0 and report.lower_s > 0
  # Parameters are sharded over 'fsdp' (Shardy annotations; GSPMD's would be devices=[...]).
  assert '"fsdp"' in report.stablehlo or 'devices=[' in report.stablehlo
  text = aot.format_report(report)
  assert 'HBM per chip' in text and 'TFLOP' in text


def test_abstract_batch_matches_loader_dtypes():
  c = tiny_config()
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(2, 2, 1), ('data', 'fsdp', 'model'))
  batch = trainer.abstract_train_batch(c, 8, 4, mesh)
  assert batch['video'].shape == (8, 4, 32, 32, 3) and batch['video'].dtype == np.uint8
  assert batch['label'].shape == (8,) and batch['label'].dtype == np.int32
  c.data.multi_label = True
  batch = trainer.abstract_train_batch(c, 8, 4, mesh)
  assert batch['video'].dtype == np.uint8 and batch['label'].shape == (8, 4) and batch['label'].dtype == np.float32


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'mvit_jax.aot', '--config', os.path.join(REPO, 'experiments/demo.py'),
                         *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


@pytest.mark.parametrize('args, message', [
    (('--topology', 'v9z:2x2'), 'unknown TPU topology'),
    (('--topology', 'v5e:2x2', '--per_chip_batch', '2', '--config.mesh.data=3'), 'needs 3 devices, have 4'),
    (('--topology', 'v5e:2x2', '--config.batch_size=10'), 'not divisible by 4 chips'),
])
@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_exit_2(args, message):
  result = _cli(*args)
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and message in lines[0], result.stderr
  assert not result.stdout.strip()


@pytest.mark.parametrize('start, limit', [(8, 21), (8, 8), (8, 3), (1, 1), (4, 0), (3, 100)])
def test_find_max_batch_search(monkeypatch, start, limit):
  """Doubling then bisection finds the largest batch that fits, whether it starts above or below it."""
  probes = []

  def fake_compile(config, devices, batch, options=None):
    probes.append(batch)
    if batch > limit:
      raise aot.DoesNotFit('RESOURCE_EXHAUSTED: out of HBM')
    return aot.Report(per_chip_batch=batch, chips=4, device_kind='TPU v5 lite', mesh={}, lower_s=1, compile_s=1,
                      stablehlo='', argument_bytes=0, output_bytes=0, alias_bytes=0, temp_bytes=batch,
                      code_bytes=0, flops=1, hbm_bytes=16 * aot.GiB)

  monkeypatch.setattr(aot, 'compile_train_step', fake_compile)
  best, report = aot.find_max_batch(None, [None] * 4, start, log=lambda _: None)
  assert best == limit and (report is None if limit == 0 else report.per_chip_batch == limit)
  assert len(probes) == len(set(probes)) <= 2 * max(limit, start).bit_length() + 1
