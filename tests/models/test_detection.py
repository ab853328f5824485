"""The action detector: every video variant builds one, boxes are independent, gradients reach trunk and head, and
the classifier's parameters (Kinetics checkpoints) fit it."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvit_jax.models import MViTDetector, VARIANTS, create_model, fit_pretrained, model_card
from mvit_jax.models import pretrained
from mvit_jax.models.detection import ROI_SIZE, feature_stride
from mvit_jax.models.layout import to_block_layout
from mvit_jax.models.roi_align import roi_align

VIDEO_VARIANTS = [name for name, cfg in VARIANTS.items() if not cfg.image]
IMAGE_VARIANTS = [name for name, cfg in VARIANTS.items() if cfg.image]


def _clip_and_boxes(model, batch=2, key=1):
  c = model.config
  video = jax.random.normal(jax.random.key(key), (batch, c.num_frames, c.input_size, c.input_size, 3))
  boxes = jnp.asarray([[[0.1, 0.2, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0], [0.45, 0.3, 0.55, 0.4]],
                       [[0.5, 0.1, 0.95, 0.7], [0.2, 0.25, 0.3, 0.8], [0.0, 0.5, 0.5, 1.0]]], jnp.float32)[:batch]
  return video, boxes


@pytest.mark.parametrize("name", VIDEO_VARIANTS)
def test_every_video_variant_builds_a_detector(name):
  """(B, N, K) logits and the classifier's parameter tree (abstract shapes: nothing runs)."""
  model = create_model(name, detection=True, num_classes=80)
  assert isinstance(model, MViTDetector)
  c = model.config
  video = jax.ShapeDtypeStruct((2, c.num_frames, c.input_size, c.input_size, 3), jnp.float32)
  boxes = jax.ShapeDtypeStruct((2, 5, 4), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), video, boxes)
  out = jax.eval_shape(lambda v, x, b: model.apply(v, x, b, method="roi_features"), variables, video, boxes)
  assert jax.eval_shape(model.apply, variables, video, boxes) == out["logits"]
  assert out["logits"].shape == (2, 5, 80) and out["logits"].dtype == jnp.float32
  stride = 16 if name == "mvit_tiny" else 32  # The map's stride, which scales the boxes.
  assert feature_stride(c) == (stride, stride)
  assert out["map"].shape[1:3] == (-(-c.input_size // stride),) * 2
  classifier = create_model(name, num_classes=80)
  expected = jax.eval_shape(classifier.init, jax.random.key(0), video)
  shapes = lambda tree: jax.tree.map(lambda a: (a.shape, a.dtype), nn.unbox(tree))
  assert shapes(variables) == shapes(expected)


@pytest.mark.parametrize("name", IMAGE_VARIANTS[:1] + IMAGE_VARIANTS[-1:])
def test_image_variants_are_refused(name):
  with pytest.raises(ValueError, match="detection needs a video variant"):
    create_model(name, detection=True)


@pytest.fixture(scope="module")
def tiny_detector():
  """(model, params, video, boxes): mvit_tiny on 4 x 32 x 32 clips (the head is the same on every trunk)."""
  model = create_model("mvit_tiny", detection=True, num_classes=6, num_frames=4, input_size=32, head_dropout_rate=0.5)
  video, boxes = _clip_and_boxes(model)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), video, boxes)["params"])
  return model, params, video, boxes


def test_padding_boxes_change_no_other_box(tiny_detector):
  model, params, video, boxes = tiny_detector
  padded = jnp.concatenate([boxes, jnp.zeros((2, 4, 4), jnp.float32)], axis=1)
  moved = boxes.at[0, 1].set(jnp.asarray([0.3, 0.3, 0.7, 0.7]))
  logits, moved_logits = jax.jit(jax.vmap(model.apply, (None, None, 0)))(
      {"params": params}, video, jnp.stack([boxes, moved]))
  padded_logits = jax.jit(model.apply)({"params": params}, video, padded)
  assert logits.shape == (2, 3, 6) and padded_logits.shape == (2, 7, 6)
  np.testing.assert_allclose(padded_logits[:, :3], logits, rtol=1e-6, atol=1e-6)
  # Each box's logits are its own: a box moved in one clip changes only that box.
  changed = np.abs(np.asarray(moved_logits - logits)).max(axis=-1) > 1e-4
  np.testing.assert_array_equal(changed, [[False, True, False], [False, False, False]])


def test_head_is_max_over_roi_bins_then_dense(tiny_detector):
  model, params, video, boxes = tiny_detector
  out = jax.jit(lambda p, x, b: model.apply({"params": p}, x, b, method="roi_features"))(params, video, boxes)
  assert out["map"].shape == (2, 2, 2, 128)  # 32 / 16: mvit_tiny pools twice after the stride-4 stem.
  assert out["roi"].shape == (2, 3, ROI_SIZE, ROI_SIZE, 128)
  np.testing.assert_array_equal(out["pooled"], out["roi"].max(axis=(2, 3)))
  head = params["head"]
  np.testing.assert_allclose(out["pooled"] @ head["kernel"] + head["bias"], out["logits"], rtol=1e-5, atol=1e-5)
  # Without boxes: one whole-frame box per clip (boxes[0, 1] is the whole frame).
  whole = jax.jit(model.apply)({"params": params}, video)
  assert whole.shape == (2, 1, 6)
  np.testing.assert_allclose(whole[0, 0], out["logits"][0, 1], rtol=1e-6, atol=1e-6)


def test_boxes_are_scaled_by_input_pixels_over_the_stride(tiny_detector):
  """A 32 x 40 input (not a multiple of the stride 16): the map is 2 x 3 cells of 16 pixels, the last one over
  padding, and a box's x spans 40 / 16 = 2.5 cells (PySlowFast's pixels / stride), not the map's 3."""
  model, params, _, boxes = tiny_detector
  video = jax.random.normal(jax.random.key(4), (2, 4, 32, 40, 3))
  out = jax.jit(lambda p, x, b: model.apply({"params": p}, x, b, method="roi_features"))(params, video, boxes)
  assert out["map"].shape == (2, 2, 3, 128)
  expected = roi_align(out["map"], boxes * jnp.asarray([40 / 16, 32 / 16] * 2), ROI_SIZE)
  np.testing.assert_allclose(out["roi"], expected, rtol=1e-6, atol=1e-6)
  wrong = roi_align(out["map"], boxes * jnp.asarray([3, 2] * 2), ROI_SIZE)
  assert np.abs(np.asarray(out["roi"] - wrong)).max() > 1e-2


@pytest.mark.slow  # The backward pass compiles for ~10 s on one core.
def test_gradient_reaches_every_parameter(tiny_detector):
  model, params, video, boxes = tiny_detector
  targets = (jax.random.uniform(jax.random.key(3), (2, 3, 6)) > 0.5).astype(jnp.float32)

  def loss(p):
    logits = model.apply({"params": p}, video, boxes, train=True, rngs={"dropout": jax.random.key(2)})
    return jnp.mean(jnp.logaddexp(0.0, logits) - targets * logits)  # Sigmoid cross-entropy.

  grads = jax.jit(jax.grad(loss))(params)
  flat = flax.traverse_util.flatten_dict(grads, sep="/")
  dead = [k for k, g in flat.items() if not np.any(np.asarray(g))]
  assert not dead, dead
  assert any(k.startswith("head/") for k in flat) and any(k.startswith("patch_embed/") for k in flat)


def test_classifier_parameters_fit_the_detector(tiny_detector):
  """A Kinetics classifier's parameters (400 classes) start the detector: the trunk copied, a new head."""
  detector, target, video, _ = tiny_detector
  classifier = create_model("mvit_tiny", num_classes=400, num_frames=4, input_size=32)
  source = nn.unbox(jax.jit(classifier.init)(jax.random.key(5), video)["params"])
  params, report = fit_pretrained(source, target)
  assert "initialised" in report and "head" in report
  got = flax.traverse_util.flatten_dict(params, sep="/")
  want = flax.traverse_util.flatten_dict(to_block_layout(source, detector.config), sep="/")
  fresh = flax.traverse_util.flatten_dict(target, sep="/")
  assert got.keys() == fresh.keys()
  for key, value in got.items():
    np.testing.assert_array_equal(value, fresh[key] if key.startswith("head/") else want[key], err_msg=key)


def test_model_card_round_trips_the_detector(tmp_path):
  config = create_model("mvit_tiny", detection=True, num_classes=80).config
  overrides = pretrained.config_overrides(config, VARIANTS["mvit_tiny"])
  assert overrides == {"detection": True, "num_classes": 80}
  model_card.write(str(tmp_path), model_card.ModelCard(name="mvit_tiny", overrides=overrides))
  module = pretrained.read_module(str(tmp_path))
  assert isinstance(module, MViTDetector) and module.config == config
