"""MViTv2 parity: torchvision `mvit_v2_s` and timm `mvitv2_tiny` / `mvitv2_small_cls` / `mvitv2_large` with
seeded random weights, converted by the CLI (or `convert.convert`) from their own files and from files in
PySlowFast's and the official image repository's layouts built from them, against the reference logits."""

import os
import re
from unittest import mock

import torchvision  # noqa: F401  (import before anything that may import tensorflow)
import timm
import torch
from torchvision.models.video import mvit as tv_mvit

import jax
import numpy as np
import pytest

from mvit_jax.tools import convert
from mvit_jax.models.pretrained import load_pretrained
from tests import testlib

torch.set_num_threads(2)


def _jax_logits(folder, x_channels_first, **overrides):
  module, variables = load_pretrained(str(folder), **overrides)
  x = np.moveaxis(np.asarray(x_channels_first), 1, -1)  # (B, C, [T,] H, W) -> (B, [T,] H, W, C)
  return np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x))



def _mvit_v2_s(spatial_size, temporal_size, num_classes):
  """torchvision's mvit_v2_s network (its block table, residual pooling, relative positions) built for another
  input size: `mvit_v2_s()` fixes 16x224²."""
  with mock.patch.object(tv_mvit, "_mvit", lambda **kwargs: kwargs):
    kwargs = tv_mvit.mvit_v2_s()
  for key in ("spatial_size", "temporal_size", "weights", "progress"):
    kwargs.pop(key)
  return tv_mvit.MViT(spatial_size=spatial_size, temporal_size=temporal_size, num_classes=num_classes, **kwargs)


def _check_cli_parity(tmp_path, fmt, arch, model, x, layouts=(True, False), checkpoint=None):
  """Converts `checkpoint` (default: the model's state dict) with the CLI and compares the logits on x."""
  path = tmp_path / "model.pth"
  torch.save(model.state_dict() if checkpoint is None else checkpoint, path)
  with torch.no_grad():
    expected = model(x).numpy()
  result = testlib.run_convert_cli(fmt, arch, path, tmp_path / "out")
  assert result.returncode == 0, result.stderr
  for scan_blocks in layouts:  # The converter writes one layout; load_pretrained maps it to either.
    assert testlib.rel_l2(_jax_logits(tmp_path / "out", x.numpy(), scan_blocks=scan_blocks), expected) < 1e-4
  return result.stdout


@pytest.mark.slow
def test_torchvision_mvit_v2_s_parity(tmp_path):
  """The published network at its size (16x224², 400 classes), batch 2."""
  torch.manual_seed(1)
  _check_cli_parity(tmp_path, "torchvision", "mvitv2_s_16x4", testlib.randomise(tv_mvit.mvit_v2_s(), seed=0),
                    torch.randn(2, 3, 16, 224, 224), layouts=(True,))


@pytest.mark.slow
def test_torchvision_mvit_v2_s_small_input_parity(tmp_path):
  """On 4x96² clips, both block layouts; the table lengths decide frames and crop size, the head the classes."""
  torch.manual_seed(1)
  model = testlib.randomise(_mvit_v2_s((96, 96), 4, 7), seed=0)
  stdout = _check_cli_parity(tmp_path, "torchvision", "mvitv2_s_16x4", model, torch.randn(2, 3, 4, 96, 96))
  assert "num_frames=4" in stdout and "input_size=96" in stdout and "num_classes=7" in stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mvitv2_tiny", "mvitv2_small_cls"])
def test_timm_parity(tmp_path, name):
  """Mean-pooled (tiny) and class-token (small_cls, residual pooling on the class row too) image models, 96²."""
  torch.manual_seed(1)
  model = testlib.randomise(timm.create_model(name, img_size=96, num_classes=7), seed=0)
  stdout = _check_cli_parity(tmp_path, "timm", name, model, torch.randn(2, 3, 96, 96))
  assert "input_size=96" in stdout


@pytest.mark.slow
def test_timm_large_in1k_expands_in_the_mlp(tmp_path):
  """mvitv2_large (IN-1K) keeps the attention at the input width and projects on the MLP skip
  (`shortcut_proj_mlp`); read as the `_cls` arch, the file's shapes decide that too and the cls token's absence."""
  torch.manual_seed(1)
  model = testlib.randomise(timm.create_model("mvitv2_large", img_size=64, num_classes=3), seed=0)
  stdout = _check_cli_parity(tmp_path, "timm", "mvitv2_large_cls", model, torch.randn(2, 3, 64, 64), layouts=(True,))
  assert "dim_mul_in_att=False" in stdout and "cls_token=False" in stdout


def test_timm_missing_and_unexpected_keys_are_named(tmp_path):
  state = testlib.randomise(timm.create_model("mvitv2_tiny", img_size=64, num_classes=3), seed=0).state_dict()
  del state["stages.2.blocks.1.attn.rel_pos_w"]
  state["stages.2.blocks.1.attn.extra"] = torch.zeros(3)
  src = tmp_path / "tiny.pth"
  torch.save(state, src)
  with pytest.raises(convert.ConversionError) as info:
    convert.convert_file("timm", "mvitv2_tiny", str(src), str(tmp_path / "out"))
  assert "blocks_4/attn/rel_pos_w" in str(info.value) and "blocks.4.attn.extra" in str(info.value)
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.slow
def test_pyslowfast_mvit_v2_s_parity(tmp_path):
  """torchvision mvit_v2_s (4x96²) saved as a PySlowFast `.pyth`: `model_state` with `patch_embed.proj`, fused
  `attn.qkv`, `attn.proj`, `attn.pool_q` / `norm_q`, `attn.rel_pos_{h,w,t}`, `blocks.N.proj`, `head.projection`."""
  torch.manual_seed(1)
  model = testlib.randomise(_mvit_v2_s((96, 96), 4, 7), seed=0)
  state = testlib.to_slowfast(model.state_dict())
  assert {"blocks.1.proj.weight", "blocks.0.attn.rel_pos_t", "blocks.0.attn.norm_q.weight", "cls_token"} <= set(state)
  checkpoint = {"model_state": state, "epoch": 200, "cfg": "MVIT: {DEPTH: 16}"}
  stdout = _check_cli_parity(tmp_path, "pyslowfast", "mvitv2_s_16x4", model, torch.randn(2, 3, 4, 96, 96),
                             layouts=(True,), checkpoint=checkpoint)
  assert "num_frames=4" in stdout and "input_size=96" in stdout and "num_classes=7" in stdout


def _to_official_image(model, temporal_axis):
  """A timm MViTv2 state dict in the official image repository's `.pyth` layout: flat `blocks.N`, the expansion
  skip as `blocks.N.proj`, `head.projection`; with temporal_axis its convolutions are 5-D with a temporal extent
  of 1 (the repository's CHECKPOINT_SQUEEZE_TEMPORAL files)."""
  first_block = [sum(model.depths[:s]) for s in range(len(model.depths))]
  state = {}
  for key, value in model.state_dict().items():
    key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"blocks.{first_block[int(m[1])] + int(m[2])}.", key)
    key = re.sub(r"\.shortcut_proj_(attn|mlp)\.", ".proj.", key).replace("head.fc.", "head.projection.")
    state[key] = value[:, :, None] if temporal_axis and value.ndim == 4 else value
  return {"model_state": state, "epoch": 300}


@pytest.mark.slow
@pytest.mark.parametrize("temporal_axis", [False, True])
def test_official_image_mvitv2_tiny_parity(tmp_path, temporal_axis):
  """timm mvitv2_tiny (64²) saved in the official image repository's layout, 2-D or 5-D convolutions."""
  torch.manual_seed(1)
  model = testlib.randomise(timm.create_model("mvitv2_tiny", img_size=64, num_classes=7), seed=0)
  checkpoint = _to_official_image(model, temporal_axis)
  assert "blocks.1.proj.weight" in checkpoint["model_state"]
  stdout = _check_cli_parity(tmp_path, "mvit", "mvitv2_tiny", model, torch.randn(2, 3, 64, 64), layouts=(True,),
                             checkpoint=checkpoint)
  assert "input_size=64" in stdout and "num_classes=7" in stdout


def _official_image_error(tmp_path, arch, edit):
  model = testlib.randomise(timm.create_model("mvitv2_tiny", img_size=64, num_classes=3), seed=0)
  checkpoint = _to_official_image(model, temporal_axis=True)
  edit(checkpoint["model_state"])
  tmp_path.mkdir()
  src = tmp_path / "tiny.pyth"
  torch.save(checkpoint, src)
  with pytest.raises(convert.ConversionError) as info:
    convert.convert_file("mvit", arch, str(src), str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")
  return str(info.value)


def test_official_image_errors_name_the_problem(tmp_path):
  """A pooling kernel with a temporal extent, a temporal table, a video arch: each refused with what is wrong."""
  def deep_kernel(state):
    state["blocks.2.attn.pool_q.weight"] = state["blocks.2.attn.pool_q.weight"].repeat(1, 1, 3, 1, 1)
  assert "blocks.2.attn.pool_q.weight" in _official_image_error(tmp_path / "a", "mvitv2_tiny", deep_kernel)
  message = _official_image_error(tmp_path / "b", "mvitv2_tiny",
                                  lambda state: state.update({"blocks.0.attn.rel_pos_t": torch.zeros(3, 96)}))
  assert "unexpected keys" in message and "blocks.0.attn.rel_pos_t" in message
  assert "video arch" in _official_image_error(tmp_path / "c", "mvitv2_s_16x4", lambda state: None)
