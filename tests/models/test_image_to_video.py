"""Image to video `init_from`: an image MViTv2's 2-D stem and pooling kernels inflated to a video MViTv2's 3-D ones
("centre" or "average"), spatial tables interpolated, what the image model lacks freshly initialised, one summary;
from a converted timm checkpoint, a few training steps of the video model reduce the loss."""

import logging
import types

import torch  # Before anything that may import tensorflow.
import timm.models.mvitv2 as timm_mvitv2

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvit_jax.train import config as config_lib
from mvit_jax.tools import convert
from mvit_jax import models
from mvit_jax.train import sharding as sharding_lib
from mvit_jax.train import trainer
from mvit_jax.models import adapt
from mvit_jax.models import layers
from tests import testlib

# Two blocks, one per stage (widths 16 and 32), on 32² input: the image arch's stages for the video models too.
STAGES = dict(embed_dim=16, num_heads=1, depth=2, dim_mul=((1, 2.0),), head_mul=((1, 2.0),),
              pool_q_stride=((0, 1, 1, 1), (1, 1, 2, 2)))
IMAGE = dict(STAGES, input_size=32, num_classes=3, pool_impl="conv")
# The video model pools K/V with the image model's spatial strides, so both attend over the same spatial grids.
VIDEO = dict(IMAGE, num_frames=4, pool_kv_stride_adaptive=(1, 4, 4))


def _random_params(model, shape, seed):
  """Seeded random values of the shapes of `model`'s params: jax.eval_shape, no compilation (XLA takes long to
  compile the initialisers on the CPU). Norm scales around 1, every other leaf around 0."""
  shapes = nn.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape))["params"]))
  rng = np.random.default_rng(seed)
  leaf = lambda path, s: (float(jax.tree_util.keystr(path).endswith("['scale']")) +
                          0.2 * rng.standard_normal(s.shape).astype(np.float32))
  return jax.tree_util.tree_map_with_path(leaf, shapes)


def _zeros(shapes):
  return jax.tree.map(lambda s: np.zeros(s, np.float32), shapes, is_leaf=lambda s: isinstance(s, tuple))


def _trees(src_cls: bool, dst_cls: bool):
  """Hand-made (image, video) param trees: a 7x7 stem to 8 channels, two blocks of 3x3 Q pooling over 4 channels,
  relative position tables of 7 rows (image) and 11 rows + a temporal table (video), 10 and 4 classes."""
  def block(pool, rows, temporal):
    attn = {"pool_q": {"kernel": pool}, "rel_pos_h": (rows, 4), "rel_pos_w": (rows, 4)}
    return {"attn": dict(attn, rel_pos_t=(3, 4)) if temporal else attn}
  image = {"patch_embed": {"proj": {"kernel": (7, 7, 3, 8), "bias": (8,)}}, "head": {"kernel": (8, 10)},
           **{f"blocks_{i}": block((1, 3, 3, 4), 7, False) for i in range(2)}}
  video = {"patch_embed": {"proj": {"kernel": (3, 7, 7, 3, 8), "bias": (8,)}}, "head": {"kernel": (8, 4)},
           **{f"blocks_{i}": block((3, 3, 3, 4), 11, True) for i in range(2)}}
  image, video = _zeros(image), _zeros(video)
  if src_cls:
    image["pos_embed"] = {"cls_token": np.full((1, 8), 0.5, np.float32)}
  if dst_cls:
    video["pos_embed"] = {"cls_token": np.full((1, 8), -1.0, np.float32)}
  rng = np.random.default_rng(0)
  image = jax.tree.map(lambda a: a + rng.normal(size=a.shape).astype(np.float32), image)
  return image, video


@pytest.mark.parametrize("mode", ["centre", "average"])
def test_inflated_kernels(mode):
  """Stem (kh, kw, 3, C) and pooling (1, kh, kw, C) kernels to kt = 3: in the centre frame with zeros elsewhere, or
  a third in every frame."""
  image, video = _trees(src_cls=False, dst_cls=False)
  fitted, _ = adapt.fit_pretrained(image, video, inflate=mode)
  for got, kernel in ((fitted["patch_embed"]["proj"]["kernel"], image["patch_embed"]["proj"]["kernel"]),
                      (fitted["blocks_1"]["attn"]["pool_q"]["kernel"],
                       image["blocks_1"]["attn"]["pool_q"]["kernel"][0])):
    assert got.shape == (3,) + kernel.shape
    want = [np.zeros_like(kernel), kernel, np.zeros_like(kernel)] if mode == "centre" else [kernel / 3] * 3
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-6)


def test_summary_groups_and_class_token():
  """One line: inflated, interpolated, zeroed (temporal tables), initialised (a class token the image model lacks,
  a head of another class count) and dropped (a class token the video model lacks) leaves, grouped over blocks."""
  image, video = _trees(src_cls=False, dst_cls=True)
  video["blocks_1"]["attn"]["rel_pos_t"] += 1  # The target's own init, which the recipe replaces by zeros.
  fitted, report = adapt.fit_pretrained(image, video)
  assert report == ("inflated (centre) 3: patch_embed/proj/kernel, attn/pool_q/kernel (blocks 0-1); "
                    "interpolated 4: attn/rel_pos_h (blocks 0-1), attn/rel_pos_w (blocks 0-1); "
                    "zeroed 2: attn/rel_pos_t (blocks 0-1); initialised 2: pos_embed/cls_token, head/kernel; copied 1")
  np.testing.assert_array_equal(fitted["pos_embed"]["cls_token"], video["pos_embed"]["cls_token"])
  assert not np.any(fitted["blocks_1"]["attn"]["rel_pos_t"])
  assert fitted["blocks_0"]["attn"]["rel_pos_h"].shape == (11, 4)

  fitted, report = adapt.fit_pretrained(*_trees(src_cls=True, dst_cls=False))
  assert "pos_embed" not in fitted and report.endswith("; dropped 1: pos_embed/cls_token; copied 1")
  image, video = _trees(src_cls=True, dst_cls=True)
  fitted, report = adapt.fit_pretrained(image, video)
  np.testing.assert_array_equal(fitted["pos_embed"]["cls_token"], image["pos_embed"]["cls_token"])
  assert "cls_token" not in report and report.endswith("copied 2")


@pytest.mark.parametrize("edit, message", [
    # Another width: the stem cannot hold the image kernel.
    (lambda image, video: video["patch_embed"]["proj"].update(kernel=np.zeros((3, 7, 7, 3, 12), np.float32)),
     r"pretrained 'patch_embed/proj/kernel' has shape \(7, 7, 3, 8\), the target model needs \(3, 7, 7, 3, 12\)"),
    # A block the image model lacks: its kinds of leaves exist, so the tree does not fit.
    (lambda image, video: video.update(blocks_2=video["blocks_1"]), r"pretrained params have no 'blocks_2/"),
    (lambda image, video: image["blocks_1"]["attn"].update(extra=np.zeros(3)),
     r"'blocks_1/attn/extra'\] have no place"),
])
def test_what_does_not_fit_is_an_error_naming_the_key(edit, message):
  image, video = _trees(src_cls=False, dst_cls=False)
  edit(image, video)
  with pytest.raises(adapt.AdaptError, match=message):
    adapt.fit_pretrained(image, video)
  with pytest.raises(adapt.AdaptError, match=r"inflate must be 'centre' or 'average', got 'middle'"):
    adapt.fit_pretrained(*_trees(src_cls=False, dst_cls=False), inflate="middle")


def test_channels_expanding_in_the_mlp_do_not_fit_an_attention_expanding_video_model():
  """An image model that widens in the MLP (timm's mvitv2_large) against a video model that widens in the attention:
  the error names the block and why."""
  image = models.create_model("mvitv2_large", **IMAGE)
  video = models.create_model("mvitv2_s_16x4", **VIDEO)
  with pytest.raises(adapt.AdaptError, match=r"'blocks_0/mlp/fc2/\w+'.*one model expands channels in block 0"):
    adapt.fit_pretrained(_random_params(image, (1, 32, 32, 3), 0), _random_params(video, (1, 4, 32, 32, 3), 1))


def test_centre_inflation_on_a_static_clip():
  """Centre inflation: each frame of the video stem is the image stem of its input frame; with "average" the frames
  away from the temporal padding are. Without class tokens the video model's logits on a static clip are the image
  model's, whatever its temporal tables: each query attends to T copies of the image's keys with equal values,
  so a bias that depends only on the temporal offset moves weight between equal values."""
  image = models.create_model("mvitv2_tiny", **IMAGE)
  video = models.create_model("mvitv2_s_16x4", cls_token=False, **VIDEO)
  image_params = _random_params(image, (1, 32, 32, 3), seed=0)
  video_init = _random_params(video, (1, 4, 32, 32, 3), seed=1)
  frame = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
  clip = jnp.repeat(frame[:, None], 4, axis=1)

  stem = lambda model, params, x: layers.PatchEmbed(model.config).apply({"params": params["patch_embed"]}, x)[0]
  stem_2d = jax.jit(lambda p: stem(image, p, frame[:, None]))(image_params)
  for mode, frames in (("centre", [0, 1]), ("average", [1])):
    fitted, _ = adapt.fit_pretrained(image_params, video_init, inflate=mode)
    stem_3d = jax.jit(lambda p: stem(video, p, clip))(fitted).reshape(2, 2, -1, stem_2d.shape[-1])  # T' = 2.
    for t in frames:
      np.testing.assert_allclose(stem_3d[:, t], stem_2d, rtol=1e-5, atol=1e-5)

  fitted, _ = adapt.fit_pretrained(image_params, video_init, inflate="centre")
  for name, block in fitted.items():  # Zero temporal tables (the recipe) would make this trivial; random ones too.
    if name.startswith("blocks_"):
      block["attn"]["rel_pos_t"] = video_init[name]["attn"]["rel_pos_t"]
  assert float(np.abs(fitted["blocks_1"]["attn"]["rel_pos_t"]).max()) > 0
  want = jax.jit(lambda p: image.apply({"params": p}, frame))(image_params)
  got = jax.jit(lambda p: video.apply({"params": p}, clip))(fitted)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_config_inflate_choice_is_validated():
  config = config_lib.base_config()
  config.init_from_inflate = "center"
  with pytest.raises(config_lib.ConfigError, match=r"config\.init_from_inflate must be 'centre' or 'average', got "
                                                   r"'center' \(did you mean 'centre'\?\)"):
    config_lib.validate(config)


def _timm_image_checkpoint(tmp_path):
  """A small timm MViTv2 with a class token (as the IN-21K models), seeded random weights on 32² images, converted
  --from timm with the matching arch overrides."""
  cfg = timm_mvitv2.MultiScaleVitCfg(depths=(1, 1), embed_dim=16, num_heads=1, stride_q=((1, 1), (2, 2)),
                                     use_cls_token=True)
  model = testlib.randomise(timm_mvitv2.MultiScaleVit(cfg, img_size=(32, 32), num_classes=7), seed=0)
  torch.save(model.state_dict(), tmp_path / "image.pth")
  notes = convert.convert_file("timm", "mvitv2_small_cls", str(tmp_path / "image.pth"), str(tmp_path / "image"),
                               **STAGES)
  assert any("num_classes=7" in n for n in notes)
  return str(tmp_path / "image")


def test_video_model_from_a_converted_timm_image_checkpoint_trains(tmp_path, caplog):
  """The trainer's init_from on a converted timm image checkpoint: the video model starts from its weights (one
  summary logged) and five AdamW steps on a fixed batch reduce the loss."""
  folder = _timm_image_checkpoint(tmp_path)
  config = config_lib.base_config()
  config.init_from, config.init_from_inflate = folder, "centre"
  config.half_precision = False
  config.batch_size = 4
  config.optimizer.base_lr, config.optimizer.base_batch_size = 1e-3, 4
  config.optimizer.schedule, config.optimizer.warmup_steps = "constant", 0
  d = config.data
  d.num_frames, d.crop_size, d.num_classes = 4, 32, 4
  d.mixup_prob, d.label_smoothing, d.random_erasing_prob = 0.0, 0.0, 0.0
  config_lib.validate(config)

  model = models.create_model("mvitv2_s_16x4", **dict(VIDEO, num_classes=4, drop_path_rate=0.0,
                                                        head_dropout_rate=0.0))
  mesh = sharding_lib.make_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
  ts = trainer.TrainSetup.build(model, config, mesh, sharding_lib.rules_from_config(config.sharding_rules))
  fresh = _random_params(model, (1, 4, 32, 32, 3), seed=1)  # The trainer's init_params compiles slowly on the CPU.
  with caplog.at_level(logging.INFO, logger="absl"):  # absl.logging: its level may have been raised by an earlier test.
    params = trainer.initial_params(types.SimpleNamespace(init_params=lambda rng: fresh), config.init_from,
                                  jax.random.key(0), config.init_from_inflate)
  (report,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Initialised from")]
  assert ("inflated (centre) 7: patch_embed/proj/kernel, attn/pool_k/kernel (blocks 0-1), attn/pool_q/kernel "
          "(blocks 0-1), attn/pool_v/kernel (blocks 0-1); zeroed 2: attn/rel_pos_t (blocks 0-1); initialised 2: "
          "head/bias, head/kernel; copied ") in report
  assert not np.any(params["blocks_1"]["attn"]["rel_pos_t"])
  _, image = models.load_pretrained(folder)
  np.testing.assert_array_equal(jax.device_get(params["blocks_1"]["attn"]["qkv"]["kernel"]),
                                image["params"]["blocks_1"]["attn"]["qkv"]["kernel"])

  state = ts.init_state(params)
  step_fn = ts.jit_step(trainer.make_train_step(model, ts.tx, ts.schedule, config, 4))
  rng = np.random.default_rng(0)
  batch = sharding_lib.global_batch({"video": rng.integers(0, 256, (4, 4, 32, 32, 3), dtype=np.uint8),
                                     "label": np.arange(4, dtype=np.int32)}, mesh)
  losses = []
  with ts.context():
    for step in range(1, 6):
      state, metrics = step_fn(state, batch, jax.random.key(1), np.int32(step))
      losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0], losses
