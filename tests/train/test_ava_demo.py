"""experiments/ava_demo.py end to end: the tiny detector learns the synthetic actions (frame mAP well above the mAP
of the same boxes with random scores) and `python -m mvit_jax.ava_eval` on the detections CSV the run wrote prints
the run's mAP."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mvit_jax.data import ava
from mvit_jax.data import synthetic_ava
from mvit_jax.train import ava_eval
from mvit_jax.train import config as config_lib
from tests import testlib

REPO = testlib.REPO


def chance_map(data_config, detections: str, seeds: int = 5) -> float:
  """mAP in percent of the CSV's boxes with uniformly random scores (mean over seeds): what a detector that tells
  no action from another gets on these boxes."""
  _, class_ids = ava_eval.read_labelmap(ava.annotation_path(data_config, 'ava_label_map'))
  gt = ava_eval.read_groundtruth(ava.annotation_path(data_config, 'ava_val_gt'), class_ids)
  det = ava_eval.read_detections(detections, class_ids)
  excluded = ava_eval.read_exclusions(ava.annotation_path(data_config, 'ava_exclusions'))
  rng = np.random.default_rng(0)
  maps = [ava_eval.frame_map(gt, det._replace(scores=rng.uniform(size=len(det.scores))), class_ids, excluded)[0]
          for _ in range(seeds)]
  return 100 * float(np.mean(maps))


@pytest.mark.slow
def test_ava_demo_learns_and_ava_eval_agrees(tmp_path):
  workdir = tmp_path / 'demo'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-m', 'mvit_jax.main', '--config', os.path.join(REPO, 'experiments',
                                                                                          'ava_demo.py'),
                           f'--workdir={workdir}'], capture_output=True, text=True, check=False, cwd=REPO, env=env)
  assert result.returncode == 0, result.stderr[-4000:]
  record = json.loads((workdir / 'metrics.json').read_text())
  config = config_lib.base_config()
  synthetic_ava.configure(config.data, str(workdir / 'synthetic_data'))  # The paths the run wrote and read.
  chance = chance_map(config.data, record['detections'])
  print(f"demo mAP {record['mAP']:.2f}, chance {chance:.2f}, per class {record['per_class_AP']}")
  assert record['mAP'] > chance + 20, (record['mAP'], chance)

  assert abs(testlib.ava_eval_cli_map(config.data, record['detections']) - record['mAP']) < 1e-9
