"""Parity with torchvision's mvit_v1_b through the conversion CLI, and the converter's error handling."""

import os

import torchvision  # noqa: F401  (import before anything that may import tensorflow)
import torch
from torchvision.models.video import mvit as tv_mvit

import jax
import numpy as np
import pytest

from mvit_jax.tools import convert
from mvit_jax.tools import convert_card
from mvit_jax import inference
from mvit_jax.models import model_card
from mvit_jax.inference import predict
from mvit_jax.data import sources
from mvit_jax.system.errors import InputError
from mvit_jax.models.pretrained import load_pretrained
from tests import testlib

torch.set_num_threads(2)


def _jax_logits(folder, clip_ncthw, **overrides):
  module, variables = load_pretrained(str(folder), **overrides)
  x = np.asarray(clip_ncthw).transpose(0, 2, 3, 4, 1)  # (B, C, T, H, W) -> (B, T, H, W, C)
  return np.asarray(jax.jit(lambda v, x: module.apply(v, x, train=False))(variables, x))



@pytest.fixture(scope="module")
def mvit_v1_b(tmp_path_factory):
  """torchvision mvit_v1_b with seeded random weights, its state dict file and its logits on 2 random clips."""
  model = testlib.randomise(tv_mvit.mvit_v1_b(), seed=0)
  folder = tmp_path_factory.mktemp("tv")
  path = folder / "mvit_v1_b.pth"
  torch.save(model.state_dict(), path)
  torch.manual_seed(1)
  clip = torch.randn(2, 3, 16, 224, 224)
  with torch.no_grad():
    logits = model(clip).numpy()
  return model, path, clip.numpy(), logits


@pytest.mark.slow
def test_torchvision_parity(mvit_v1_b, tmp_path):
  _, path, clip, expected = mvit_v1_b
  result = testlib.run_convert_cli("torchvision", "mvit_b_16x4", path, tmp_path / "out")
  assert result.returncode == 0, result.stderr
  for scan_blocks in (True, False):  # The converter writes one layout; load_pretrained maps it to either.
    assert testlib.rel_l2(_jax_logits(tmp_path / "out", clip, scan_blocks=scan_blocks), expected) < 1e-4
  card = model_card.read(str(tmp_path / "out"))  # Kinetics-400 names and torchvision's evaluation recipe.
  assert card.classes == tuple(tv_mvit.MViT_V1_B_Weights.KINETICS400_V1.meta["categories"])
  assert card.input == model_card.InputRecipe(num_frames=16, sampling_rate=4, target_fps=30.0, short_side=256,
                                              crop_size=224, mean=(0.45,) * 3, std=(0.225,) * 3, num_clips=5)
  assert card.source == {"format": "torchvision", "file": "mvit_v1_b.pth", "sha256": model_card.sha256(str(path))}


@pytest.mark.slow
def test_pyslowfast_parity_fused_qkv(mvit_v1_b, tmp_path):
  model, _, clip, expected = mvit_v1_b
  path = tmp_path / "MVIT_B_16x4.pyth"
  state = testlib.to_slowfast(model.state_dict())
  torch.save({"model_state": state, "epoch": 200, "cfg": "MVIT: {DEPTH: 16}"}, path)
  result = testlib.run_convert_cli("pyslowfast", "mvit_b_16x4", path, tmp_path / "out")
  assert result.returncode == 0, result.stderr
  assert testlib.rel_l2(_jax_logits(tmp_path / "out", clip), expected) < 1e-4


def _small_v1(kv_off_last_stage: bool, num_classes=7):
  """A torchvision MViT with mvit_v1_b's block table on an 8x96x96 input (optionally no K/V pooling in blocks
  14-15, as the original PySlowFast 16x4 checkpoint)."""
  settings = []
  table = [(96, 192, 1, False), (192, 192, 2, True), (192, 384, 2, False), (384, 384, 4, True)]
  table += [(384, 384, 4, False)] * 9 + [(384, 768, 4, False), (768, 768, 8, True), (768, 768, 8, False)]
  kv = [[1, 8, 8]] + [[1, 4, 4]] * 2 + [[1, 2, 2]] * 11 + [[1, 1, 1]] * 2
  for i, (cin, cout, heads, q) in enumerate(table):
    off = kv_off_last_stage and i >= 14
    settings.append(tv_mvit.MSBlockConfig(
        num_heads=heads, input_channels=cin, output_channels=cout,
        kernel_q=[3, 3, 3] if q else [], kernel_kv=[1, 1, 1] if off else [3, 3, 3],
        stride_q=[1, 2, 2] if q else [], stride_kv=kv[i]))
  model = tv_mvit.MViT(spatial_size=(96, 96), temporal_size=8, block_setting=settings, residual_pool=False,
                       residual_with_cls_embed=True, rel_pos_embed=False, proj_after_attn=False,
                       stochastic_depth_prob=0.2, num_classes=num_classes)
  return testlib.randomise(model, seed=2)


@pytest.mark.slow
def test_pyslowfast_separate_qkv_without_last_stage_kv_pooling(tmp_path):
  """The file's keys decide: K/V pooling absent in blocks 14-15, 7 classes, 8x96x96 input; a message says so."""
  model = _small_v1(kv_off_last_stage=True)
  path = tmp_path / "old.pyth"
  torch.save({"model_state": testlib.to_slowfast(model.state_dict(), separate_qkv=True)}, path)
  result = testlib.run_convert_cli("pyslowfast", "mvit_b_16x4", path, tmp_path / "out")
  assert result.returncode == 0, result.stderr
  assert "kv_pool_off_blocks=(14, 15)" in result.stdout
  assert "num_classes=7" in result.stdout and "input_size=96" in result.stdout and "num_frames=8" in result.stdout
  torch.manual_seed(3)
  clip = torch.randn(2, 3, 8, 96, 96)
  with torch.no_grad():
    expected = model(clip).numpy()
  assert testlib.rel_l2(_jax_logits(tmp_path / "out", clip.numpy()), expected) < 1e-4


# ---------------------------------------------------------------------------------------------------------------
# Bad input: a clear error naming the problem, nonzero exit, no output folder.


@pytest.fixture(scope="module")
def small_state(tmp_path_factory):
  model = _small_v1(kv_off_last_stage=False)
  return {k: v.clone() for k, v in model.state_dict().items()}


def _expect_error(tmp_path, fmt, arch, obj_or_bytes, *needles):
  src = tmp_path / "input.pth"
  if isinstance(obj_or_bytes, bytes):
    src.write_bytes(obj_or_bytes)
  else:
    torch.save(obj_or_bytes, src)
  out = tmp_path / "out"
  with pytest.raises(convert.ConversionError) as info:
    convert.convert_file(fmt, arch, str(src), str(out))
  for needle in needles:
    assert needle in str(info.value)
  assert not out.exists()
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".convert-")]


def test_not_a_checkpoint(tmp_path):
  _expect_error(tmp_path, "torchvision", "mvit_b_16x4", b"this is a text file\n", "not a PyTorch checkpoint")


def test_pickled_code_is_refused(tmp_path):
  import argparse  # Old checkpoints often pickle an argparse.Namespace beside the weights.

  _expect_error(tmp_path, "torchvision", "mvit_b_16x4", {"args": argparse.Namespace(lr=0.1)}, "refused")


def test_missing_and_unexpected_keys_are_named(tmp_path, small_state):
  state = dict(small_state)
  del state["blocks.3.mlp.0.bias"]
  state["blocks.3.extra.weight"] = torch.zeros(3)
  _expect_error(tmp_path, "torchvision", "mvit_b_16x4", state, "blocks_3/mlp/fc1/bias", "blocks.3.extra.weight")


def test_wrong_arch_names_the_shapes(tmp_path, small_state):
  _expect_error(tmp_path, "torchvision", "mvit_s_16x4", small_state, "conv_proj.weight")


def test_pyslowfast_without_model_state(tmp_path, small_state):
  _expect_error(tmp_path, "pyslowfast", "mvit_b_16x4", small_state, "model_state")


@pytest.mark.slow
def test_cli_exit_status_and_message(tmp_path):
  bad = tmp_path / "bad.pth"
  bad.write_text("not a checkpoint")
  result = testlib.run_convert_cli("torchvision", "mvit_b_16x4", bad, tmp_path / "out")
  assert result.returncode != 0 and "not a PyTorch checkpoint" in result.stderr
  assert not (tmp_path / "out").exists()


def test_image_checkpoint_round_trip():
  """A PySlowFast ImageNet-layout state (Conv2d stem, joint pos_embed (1, 1+HW, D)) converts back to the params."""
  import flax
  import flax.linen as nn

  overrides = dict(input_size=32, num_classes=5, depth=2, dim_mul=((1, 2.0),), head_mul=((1, 2.0),),
                   pool_q_stride=((1, 1, 2, 2),))
  from mvit_jax.models import create_model

  model = create_model("mvit_b16_in1k", **overrides)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))["params"])
  flat = {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(params, sep="/").items()}
  state = {}
  for path, v in flat.items():
    key = path.replace("/", ".")
    key = (key.replace("patch_embed.proj.kernel", "patch_embed.proj.weight").replace("pos_embed.pos_embed", "pos_embed")
           .replace("pos_embed.cls_token", "cls_token").replace("head.", "head.projection.")
           .replace(".scale", ".weight").replace("blocks_", "blocks."))
    key = key.replace(".kernel", ".weight")
    for x in "qkv":
      key = key.replace(f"attn.pool_{x}.norm.", f"attn.norm_{x}.")
    if v.ndim == 2 and key.endswith(".weight"):
      v = v.T
    elif v.ndim == 4 and "pool_" in key:  # (kt, kh, kw, hd) -> (hd, 1, kt, kh, kw)
      v = v.transpose(3, 0, 1, 2)[:, None]
    elif v.ndim == 4:  # Conv2d (kh, kw, I, O) -> (O, I, kh, kw)
      v = v.transpose(3, 2, 0, 1)
    if key in ("cls_token", "pos_embed"):
      v = v[None]
    state[key] = torch.from_numpy(np.array(v))
  assert "pos_embed" in state and state["pos_embed"].shape == (1, 1 + 8 * 8, 96)
  cfg, converted, notes = convert.convert(
      convert.slowfast_to_torchvision({k: t.numpy() for k, t in state.items()}), "mvit_b16_in1k", **overrides)
  assert not notes
  for path, v in flax.traverse_util.flatten_dict(converted, sep="/").items():
    np.testing.assert_array_equal(v, flat[path], err_msg=path)


# ---------------------------------------------------------------------------------------------------------------
# The model card of a converted checkpoint, and predict on it.


@pytest.fixture(scope="module")
def tiny_torchvision_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("tv_tiny") / "tiny.pth"
  torch.save(testlib.tiny_torchvision().state_dict(), path)
  return path


def test_converted_torchvision_folder_predicts_kinetics_names(tiny_torchvision_file, tmp_path, monkeypatch):
  """--verify's logit error, the Kinetics-400 names, the source file; predict names its classes. A 400-class
  torchvision MViT with mvit_tiny's blocks stands in for mvit_v1_b (whose card test_torchvision_parity checks):
  --verify builds the source model by the arch's torchvision builder, here one that builds this model."""
  monkeypatch.setitem(convert_card.TORCHVISION_BUILDERS, "mvit_tiny", "tiny_for_test")
  monkeypatch.setattr(tv_mvit.__name__.rsplit(".", 1)[0] + ".tiny_for_test", testlib.tiny_torchvision, raising=False)
  out = str(tmp_path / "out")
  notes = convert.convert_file("torchvision", "mvit_tiny", str(tiny_torchvision_file), out, verify=True)
  card = model_card.read(out)
  assert card.verification["logit_rel_l2"] < 1e-4 and card.verification["input_shape"] == [2, 4, 32, 32, 3]
  assert any(n.startswith("--verify: logits within relative L2") for n in notes)
  names = tv_mvit.MViT_V1_B_Weights.KINETICS400_V1.meta["categories"]
  assert card.classes == tuple(names)
  assert card.source["sha256"] == model_card.sha256(str(tiny_torchvision_file))
  assert (card.input.crop_size, card.input.short_side, card.input.num_clips) == (32, 36, 5)  # int(32 / 0.875).

  video = testlib.write_index_video(str(tmp_path / "v.mp4"), 40)
  predictor = inference.load(out, views=(1, 1))
  (result,) = predict.predict(predictor, [sources.VideoRecord(video, None)])
  top = predict.top_k(result, predictor, 3)
  assert [t["class"] for t in top] == [names[t["index"]] for t in top]


def test_classes_file_must_match_the_class_count(tiny_torchvision_file, tmp_path):
  classes = tmp_path / "classes.txt"
  classes.write_text("a\nb\nc\n")
  with pytest.raises(InputError, match="names 3 classes, the checkpoint has 400"):
    convert.convert_file("torchvision", "mvit_tiny", str(tiny_torchvision_file), str(tmp_path / "out"),
                         classes_file=str(classes))
  assert not (tmp_path / "out").exists()
