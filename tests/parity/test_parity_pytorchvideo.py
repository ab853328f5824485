"""Parity with PyTorchVideo's MViT v1, the only runnable reference for the v1 image models, through
`convert.convert_file` (what `python -m mvit_jax.convert --from pytorchvideo` runs), and its errors on files of
another format.

Reduced sizes keep the tests cheap. The image model is PyTorchVideo's image MViT-B-16 (its hub `mvit_base_16`
config: every block, width, head count and pooling kernel) built for 64² inputs and 10 classes, which the file's
tables and head decide: `--arch mvit_b16_in1k` with no override. The video model has `mvit_base_16x4`'s layout (3-D
stem, 3³ pooling kernels, separable tables, adaptive K/V stride 8) with 4 blocks of widths 32 to 128 for 4x64²
inputs, given to `--arch mvit_b_16x4` as overrides. Every tensor of both is perturbed (`testlib.randomise`),
so a dropped or swapped bias, norm or table fails.
"""

import torchvision  # noqa: F401  (import before anything that may import tensorflow)
import torch
from pytorchvideo.models.hub import vision_transformers as ptv_hub
from pytorchvideo.models.vision_transformers import create_multiscale_vision_transformers

import jax
import numpy as np
import pytest

from mvit_jax.tools import convert
from mvit_jax.models.pretrained import load_pretrained
from tests import testlib

torch.set_num_threads(2)

# mvit_base_16x4's stage table cut to 4 blocks: a stage change (width and heads doubled in the MLP of blocks 0 and
# 2) and a stride-2 Q pooling (blocks 1 and 3), K/V pooling in every block.
_SMALL_VIDEO = dict(depth=4, patch_embed_dim=32, embed_dim_mul=[[1, 2.0], [3, 2.0]],
                    atten_head_mul=[[1, 2.0], [3, 2.0]], pool_q_stride_size=[[1, 1, 2, 2], [3, 1, 2, 2]])
_SMALL_VIDEO_OVERRIDES = dict(depth=4, embed_dim=32, dim_mul=((1, 2.0), (3, 2.0)), head_mul=((1, 2.0), (3, 2.0)),
                              pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2)))



def _check_parity(tmp_path, arch, model, x, checkpoint=None, **overrides):
  """Converts `checkpoint` (default: the model's state dict) and compares the logits on x (B, C, [T,] H, W)."""
  path = tmp_path / "ptv.pth"
  torch.save(model.state_dict() if checkpoint is None else checkpoint, path)
  with torch.no_grad():
    expected = model(x).numpy()
  notes = convert.convert_file("pytorchvideo", arch, str(path), str(tmp_path / "out"), **overrides)
  module, variables = load_pretrained(str(tmp_path / "out"))
  channels_last = np.moveaxis(x.numpy(), 1, -1)  # (B, C, [T,] H, W) -> (B, [T,] H, W, C)
  logits = np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, channels_last))
  assert logits.shape == expected.shape
  assert testlib.rel_l2(logits, expected) < 1e-4
  return notes


@pytest.fixture(scope="module")
def small_video():
  """PyTorchVideo's video MViT in mvit_base_16x4's layout, reduced (4x64² input, 10 classes)."""
  config = dict(ptv_hub.mvit_video_base_config, spatial_size=64, temporal_size=4, head_num_classes=10, **_SMALL_VIDEO)
  return testlib.randomise(create_multiscale_vision_transformers(**config), seed=1)


def test_image_mvit_b_16_parity(tmp_path):
  config = dict(ptv_hub.mvit_image_base_16_config, spatial_size=64, head_num_classes=10)
  model = testlib.randomise(create_multiscale_vision_transformers(**config), seed=0)
  torch.manual_seed(2)
  notes = _check_parity(tmp_path, "mvit_b16_in1k", model, torch.randn(2, 3, 64, 64))
  assert any("sep_pos_embed=True" in n for n in notes) and any("input_size=64" in n for n in notes)


def test_video_mvit_base_16x4_layout_parity(tmp_path, small_video):
  """A hub-style `.pyth` (weights under `model_state`); the tables decide 4 frames at 64²."""
  torch.manual_seed(3)
  checkpoint = {"model_state": small_video.state_dict(), "epoch": 200}
  notes = _check_parity(tmp_path, "mvit_b_16x4", small_video, torch.randn(2, 3, 4, 64, 64), checkpoint,
                        **_SMALL_VIDEO_OVERRIDES)
  assert any("num_frames=4" in n for n in notes) and any("num_classes=10" in n for n in notes)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line naming the keys, no output folder.


def _expect_error(tmp_path, fmt, arch, checkpoint, *needles):
  src = tmp_path / "input.pth"
  torch.save(checkpoint, src)
  with pytest.raises(convert.ConversionError) as info:
    convert.convert_file(fmt, arch, str(src), str(tmp_path / "out"), **_SMALL_VIDEO_OVERRIDES)
  message = str(info.value)
  assert "\n" not in message
  for needle in needles:
    assert needle in message
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["torchvision", "timm", "pyslowfast"])
def test_pytorchvideo_file_as_another_format(tmp_path, small_video, fmt):
  checkpoint = small_video.state_dict()
  if fmt == "pyslowfast":
    checkpoint = {"model_state": checkpoint}
  _expect_error(tmp_path, fmt, "mvit_b_16x4", checkpoint, "cls_positional_encoding.cls_token", "--from pytorchvideo")


def test_pytorchvideo_pyth_as_torchvision(tmp_path, small_video):
  _expect_error(tmp_path, "torchvision", "mvit_b_16x4", {"model_state": small_video.state_dict()}, "model_state",
                "pytorchvideo")


@pytest.mark.parametrize("fmt", ["torchvision", "pyslowfast"])
def test_other_format_as_pytorchvideo(tmp_path, small_video, fmt):
  """torchvision and PySlowFast names (built from the PyTorchVideo model's tensors) are not PyTorchVideo's."""
  state = {k: torch.from_numpy(v) for k, v in convert.pytorchvideo_to_slowfast(
      {k: t.numpy() for k, t in small_video.state_dict().items()}, "ptv").items()}
  if fmt == "pyslowfast":
    _expect_error(tmp_path, "pytorchvideo", "mvit_b_16x4", {"model_state": state}, "not PyTorchVideo's MViT layout",
                  "cls_token", "head.projection.bias")
  else:
    state = {k: torch.from_numpy(v) for k, v in convert.slowfast_to_torchvision(
        {k: t.numpy() for k, t in state.items()}).items()}
    _expect_error(tmp_path, "pytorchvideo", "mvit_b_16x4", state, "not PyTorchVideo's MViT layout", "conv_proj.bias")


def test_missing_tensor_is_named(tmp_path, small_video):
  state = dict(small_video.state_dict())
  del state["blocks.1.attn.norm_q.bias"]
  _expect_error(tmp_path, "pytorchvideo", "mvit_b_16x4", state, "missing keys", "blocks_1/attn/pool_q/norm/bias")


def test_later_pytorchvideo_duplicate_pooling_names():
  """PyTorchVideo after 0.1.5 holds each pooling tensor under two names: equal copies are one tensor, unequal ones
  an error naming both."""
  state = {"blocks.0.attn.pool_q.weight": np.ones((2, 1, 3, 3, 3), np.float32),
           "blocks.0.attn._attention_pool_q.pool.weight": np.ones((2, 1, 3, 3, 3), np.float32),
           "blocks.0.attn.norm_q.bias": np.zeros(2, np.float32),
           "blocks.0.attn._attention_pool_q.norm.bias": np.zeros(2, np.float32)}
  assert sorted(convert.pytorchvideo_to_slowfast(state, "f")) == ["blocks.0.attn.norm_q.bias",
                                                                  "blocks.0.attn.pool_q.weight"]
  state["blocks.0.attn._attention_pool_q.norm.bias"] = np.ones(2, np.float32)
  with pytest.raises(convert.ConversionError) as info:
    convert.pytorchvideo_to_slowfast(state, "f")
  assert "blocks.0.attn.norm_q.bias" in str(info.value) and "_attention_pool_q.norm.bias" in str(info.value)
