"""MViTv2 parity: torchvision `mvit_v2_s` and timm `mvitv2_tiny` / `mvitv2_small_cls` / `mvitv2_large` with
seeded random weights, converted by the CLI (or `convert.convert`), against the reference logits."""

import os
from unittest import mock

import torchvision  # noqa: F401  (import before anything that may import tensorflow)
import timm
import torch
from torchvision.models.video import mvit as tv_mvit

import jax
import numpy as np
import pytest

from mvit_jax import convert
from mvit_jax.models.pretrained import load_pretrained
import model_testlib

torch.set_num_threads(2)


def _jax_logits(folder, x_channels_first, **overrides):
  module, variables = load_pretrained(str(folder), **overrides)
  x = np.moveaxis(np.asarray(x_channels_first), 1, -1)  # (B, C, [T,] H, W) -> (B, [T,] H, W, C)
  return np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x))


def _rel_l2(a, b):
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _mvit_v2_s(spatial_size, temporal_size, num_classes):
  """torchvision's mvit_v2_s network (its block table, residual pooling, relative positions) built for another
  input size: `mvit_v2_s()` fixes 16x224²."""
  with mock.patch.object(tv_mvit, "_mvit", lambda **kwargs: kwargs):
    kwargs = tv_mvit.mvit_v2_s()
  for key in ("spatial_size", "temporal_size", "weights", "progress"):
    kwargs.pop(key)
  return tv_mvit.MViT(spatial_size=spatial_size, temporal_size=temporal_size, num_classes=num_classes, **kwargs)


def _check_cli_parity(tmp_path, fmt, arch, model, x, layouts=(True, False)):
  path = tmp_path / "model.pth"
  torch.save(model.state_dict(), path)
  with torch.no_grad():
    expected = model(x).numpy()
  result = model_testlib.run_convert_cli(fmt, arch, path, tmp_path / "out")
  assert result.returncode == 0, result.stderr
  for scan_blocks in layouts:  # The converter writes one layout; load_pretrained maps it to either.
    assert _rel_l2(_jax_logits(tmp_path / "out", x.numpy(), scan_blocks=scan_blocks), expected) < 1e-4
  return result.stdout


def test_torchvision_mvit_v2_s_parity(tmp_path):
  """The published network at its size (16x224², 400 classes), batch 2."""
  torch.manual_seed(1)
  _check_cli_parity(tmp_path, "torchvision", "mvitv2_s_16x4", model_testlib.randomise(tv_mvit.mvit_v2_s(), seed=0),
                    torch.randn(2, 3, 16, 224, 224), layouts=(True,))


def test_torchvision_mvit_v2_s_small_input_parity(tmp_path):
  """On 4x96² clips, both block layouts; the table lengths decide frames and crop size, the head the classes."""
  torch.manual_seed(1)
  stdout = _check_cli_parity(tmp_path, "torchvision", "mvitv2_s_16x4", model_testlib.randomise(_mvit_v2_s((96, 96), 4, 7), seed=0),
                             torch.randn(2, 3, 4, 96, 96))
  assert "num_frames=4" in stdout and "input_size=96" in stdout and "num_classes=7" in stdout


@pytest.mark.parametrize("name", ["mvitv2_tiny", "mvitv2_small_cls"])
def test_timm_parity(tmp_path, name):
  """Mean-pooled (tiny) and class-token (small_cls, residual pooling on the class row too) image models, 96²."""
  torch.manual_seed(1)
  model = model_testlib.randomise(timm.create_model(name, img_size=96, num_classes=7), seed=0)
  stdout = _check_cli_parity(tmp_path, "timm", name, model, torch.randn(2, 3, 96, 96))
  assert "input_size=96" in stdout


def test_timm_large_in1k_expands_in_the_mlp(tmp_path):
  """mvitv2_large (IN-1K) keeps the attention at the input width and projects on the MLP skip
  (`shortcut_proj_mlp`); read as the `_cls` arch, the file's shapes decide that too and the cls token's absence."""
  torch.manual_seed(1)
  model = model_testlib.randomise(timm.create_model("mvitv2_large", img_size=64, num_classes=3), seed=0)
  stdout = _check_cli_parity(tmp_path, "timm", "mvitv2_large_cls", model, torch.randn(2, 3, 64, 64), layouts=(True,))
  assert "dim_mul_in_att=False" in stdout and "cls_token=False" in stdout


def test_timm_missing_and_unexpected_keys_are_named(tmp_path):
  state = model_testlib.randomise(timm.create_model("mvitv2_tiny", img_size=64, num_classes=3), seed=0).state_dict()
  del state["stages.2.blocks.1.attn.rel_pos_w"]
  state["stages.2.blocks.1.attn.extra"] = torch.zeros(3)
  src = tmp_path / "tiny.pth"
  torch.save(state, src)
  with pytest.raises(convert.ConversionError) as info:
    convert.convert_file("timm", "mvitv2_tiny", str(src), str(tmp_path / "out"))
  assert "blocks_4/attn/rel_pos_w" in str(info.value) and "blocks.4.attn.extra" in str(info.value)
  assert not os.path.exists(tmp_path / "out")
