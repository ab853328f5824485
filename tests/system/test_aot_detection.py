"""mvit_jax.aot compiles a detection (AVA) train step for a TPU topology: clips, boxes, box masks and per-box labels
in, the detector's parameters (head Dense(C, K)) and SGD state sharded over the mesh."""
import pytest

pytest.importorskip('libtpu', reason='needs libtpu (pip install -e .[tpu])')

from mvit_jax.tools import aot  # pylint: disable=g-import-not-at-top
from mvit_jax.train import config as config_lib  # pylint: disable=g-import-not-at-top


@pytest.mark.slow
def test_compiles_the_detection_train_step_for_v5e():
  c = config_lib.ava_recipe('mvit_tiny', num_frames=4, sampling_rate=2)
  c.data.num_classes, c.data.crop_size, c.data.train_jitter_scales, c.data.ava_max_boxes = 5, 32, (32, 40), 4
  c.mesh.data, c.mesh.fsdp = 2, 2
  report = aot.compile_train_step(c, aot.topology_devices('v5e:2x2'), per_chip_batch=2)
  assert report.fits and report.flops > 0 and report.mesh == {'data': 2, 'fsdp': 2, 'model': 1}
  assert 'tensor<8x4x4xf32>' in report.stablehlo and 'tensor<8x4x5xf32>' in report.stablehlo  # Boxes, labels.
