"""The detector's RoI head on a converted torchvision MViT-B: the map it pools, its boxes' scale and its RoIAlign are
torchvision's (`roi_align` on the time-averaged last stage after the final norm, boxes in input pixels / 32, as
PySlowFast's MViT with DETECTION.ENABLE feeds ResNetRoIHead)."""

import torchvision  # noqa: F401  (import before anything that may import tensorflow)
import torch
from torchvision import ops as tv_ops
from torchvision.models.video import mvit as tv_mvit

import jax
import numpy as np
import pytest

from mvit_jax.models import VARIANTS, create_model
from mvit_jax.models.layout import to_block_layout
from mvit_jax.models.pretrained import config_overrides
from mvit_jax.tools import convert
from tests import testlib

torch.set_num_threads(2)

# (x1, y1, x2, y2) normalised: a person, the whole frame, one on the right border, a small one off the cell grid.
BOXES = np.asarray([[[0.12, 0.2, 0.47, 0.95], [0.0, 0.0, 1.0, 1.0], [0.71, 0.05, 1.0, 0.6],
                     [0.333, 0.41, 0.39, 0.52]]], np.float32)


def _torch_last_stage(model, clip):
  """torchvision MViT's tokens after blocks and final norm, class token dropped, as (B, C, T', H', W')."""
  x = model.conv_proj(clip).flatten(2).transpose(1, 2)
  x = model.pos_encoding(x)
  thw = (model.pos_encoding.temporal_size,) + model.pos_encoding.spatial_size
  for block in model.blocks:
    x, thw = block(x, thw)
  x = model.norm(x)[:, 1:]
  return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *thw)


def _torch_roi_align(feature_map, boxes_pixels):
  """torchvision roi_align (B, C, H', W') at 1 / 32 as ResNetRoIHead calls it -> (B, N, 7, 7, C)."""
  batch, num = boxes_pixels.shape[:2]
  rois = torch.cat([torch.arange(batch, dtype=torch.float32).repeat_interleave(num)[:, None],
                    torch.from_numpy(boxes_pixels.reshape(-1, 4))], dim=1)
  out = tv_ops.roi_align(feature_map, rois, 7, spatial_scale=1 / 32, sampling_ratio=0, aligned=True)
  return out.permute(0, 2, 3, 1).reshape(batch, num, 7, 7, -1)


@pytest.mark.slow
def test_roi_features_are_torchvision_roi_align_of_the_last_stage():
  model = testlib.randomise(tv_mvit.mvit_v1_b(), seed=0)
  cfg, params, _ = convert.convert({k: v.numpy() for k, v in model.state_dict().items()}, "mvit_b_16x4")
  overrides = config_overrides(cfg, VARIANTS["mvit_b_16x4"])
  detector = create_model("mvit_b_16x4", detection=True, **overrides)
  classifier = create_model("mvit_b_16x4", **overrides)
  variables = {"params": to_block_layout(params, detector.config)}
  torch.manual_seed(1)
  clip = torch.randn(1, 3, 16, 224, 224)
  video = clip.numpy().transpose(0, 2, 3, 4, 1)  # (B, C, T, H, W) -> (B, T, H, W, C)

  @jax.jit
  def run(variables, video, boxes):
    return (detector.apply(variables, video, boxes, method="roi_features"),
            classifier.apply(variables, video, method="features")["stage4"])

  got, stage4 = jax.tree.map(np.asarray, run(variables, video, BOXES))

  with torch.no_grad():
    last = _torch_last_stage(model, clip)
    expected = _torch_roi_align(last.mean(2), BOXES * 224)
    logits = model.head(torch.tensor(got["roi"]).amax(dim=(2, 3)))
  # The map: layout (T', H', W', C), class token dropped, the final norm; then scale and box coordinates.
  assert got["map"].shape == (1, 7, 7, 768)
  assert testlib.rel_l2(got["map"], last.mean(2).permute(0, 2, 3, 1).numpy()) < 1e-4
  assert testlib.rel_l2(got["roi"], expected.numpy()) < 1e-4
  np.testing.assert_allclose(got["logits"], logits.numpy(), rtol=1e-4, atol=1e-4)

  # The same RoIAlign on `features`' last stage (before the norm) normalised with the converted final norm: the
  # head's values to float32 rounding.
  norm = variables["params"]["norm"]
  mean = stage4.mean(-1, keepdims=True)
  normed = (stage4 - mean) / np.sqrt(stage4.var(-1, keepdims=True) + cfg.norm_eps) * norm["scale"] + norm["bias"]
  from_features = _torch_roi_align(torch.from_numpy(normed.mean(1)).permute(0, 3, 1, 2), BOXES * 224)
  np.testing.assert_allclose(got["roi"], from_features.numpy(), atol=2e-5, rtol=0)
