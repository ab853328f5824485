"""RoIAlign against torchvision.ops.roi_align: values and feature gradients on random maps and awkward boxes."""

import torchvision  # noqa: F401  (import before anything that may import tensorflow)
import torch
from torchvision import ops as tv_ops

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvit_jax.models.roi_align import roi_align

torch.set_num_threads(1)


def _boxes(rng, batch, height, width, scale):
  """(batch, 12, 4) boxes in map units / scale: random inside, over every border, tiny, degenerate, inverted."""
  h, w = height / scale, width / scale
  out = []
  for _ in range(batch):
    x = np.sort(rng.uniform(0, w, (4, 2)), axis=1)
    y = np.sort(rng.uniform(0, h, (4, 2)), axis=1)
    random = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
    special = np.array([
        [0, 0, w, h],  # The whole map.
        [-0.3 * w, -0.2 * h, 0.4 * w, 0.5 * h],  # Over the top-left border.
        [0.6 * w, 0.7 * h, 1.3 * w, 1.2 * h],  # Over the bottom-right border.
        [-0.6 * w, 0.1 * h, -0.2 * w, 0.3 * h],  # Wholly outside (samples beyond -1 are zero).
        [0.31 * w, 0.42 * h, 0.31 * w + 1e-3, 0.42 * h + 2e-3],  # Tiny.
        [0.5 * w, 0.25 * h, 0.5 * w, 0.75 * h],  # Zero width.
        [0.0, 0.0, 0.0, 0.0],  # Padding.
        [0.7 * w, 0.6 * h, 0.2 * w, 0.1 * h],  # Inverted.
    ])
    out.append(np.concatenate([random, special]))
  return np.asarray(out, np.float32)


def _torch_roi_align(features, boxes, output_size, scale, sampling_ratio, aligned):
  """torchvision on the same (B, H, W, C) map and (B, N, 4) boxes, as (B, N, out_h, out_w, C)."""
  batch, num = boxes.shape[:2]
  rois = torch.cat([torch.arange(batch, dtype=torch.float32).repeat_interleave(num)[:, None],
                    torch.from_numpy(boxes.reshape(-1, 4))], dim=1)
  pooled = tv_ops.roi_align(features.permute(0, 3, 1, 2), rois, output_size, spatial_scale=scale,
                            sampling_ratio=sampling_ratio, aligned=aligned)
  return pooled.permute(0, 2, 3, 1).reshape(batch, num, *pooled.shape[2:], pooled.shape[1])


@pytest.mark.parametrize("height,width,output_size,scale,sampling_ratio,aligned", [
    (7, 7, 7, 1 / 32, 0, True),  # MViT at 224 (the AVA head).
    (7, 13, 7, 1 / 32, 0, True),  # Full-frame test: 2 samples across wide boxes.
    (10, 10, 7, 1 / 32, 0, True),  # MViTv2-L at 312.
    (9, 11, (3, 5), 1.0, 2, True),
    (16, 12, 4, 0.5, 1, True),
    (8, 8, 2, 1.0, 0, True),  # Adaptive up to 4 samples per bin.
    (6, 9, 3, 1.0, 3, False),  # The legacy rule (PyTorchVideo's default).
    (6, 9, 3, 1.0, 0, False),
])
def test_matches_torchvision(height, width, output_size, scale, sampling_ratio, aligned):
  rng = np.random.default_rng(height * 100 + width)
  features = rng.normal(size=(2, height, width, 5)).astype(np.float32)
  boxes = _boxes(rng, 2, height, width, scale)
  if not aligned:  # The legacy rule's 1-cell minimum makes an inverted box's bins span backwards: skip them.
    boxes = boxes[:, :-1]
  cotangent = rng.normal(size=_torch_roi_align(torch.from_numpy(features), boxes, output_size, scale,
                                               sampling_ratio, aligned).shape).astype(np.float32)

  torch_features = torch.from_numpy(features).requires_grad_()
  expected = _torch_roi_align(torch_features, boxes, output_size, scale, sampling_ratio, aligned)
  (expected * torch.from_numpy(cotangent)).sum().backward()

  def loss(f):
    out = roi_align(f, jnp.asarray(boxes), output_size, spatial_scale=scale, sampling_ratio=sampling_ratio,
                    aligned=aligned)
    return (out * cotangent).sum(), out

  (_, got), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(jnp.asarray(features))
  np.testing.assert_allclose(np.asarray(got), expected.detach().numpy(), atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(grad), torch_features.grad.numpy(), atol=1e-5, rtol=0)


def test_adaptive_is_one_sample_per_bin_at_224():
  """MViT at 224: on the 7 x 7 map at 1 / 32 a box inside the frame takes 1 sample per bin and axis."""
  rng = np.random.default_rng(1)
  features = jnp.asarray(rng.normal(size=(2, 7, 7, 4)), jnp.float32)
  corners = np.sort(rng.uniform(0, 224, (2, 16, 2, 2)), axis=2)  # (B, N, low/high, x/y) in input pixels.
  boxes = jnp.asarray(corners.reshape(2, 16, 4), jnp.float32)
  boxes = boxes.at[:, 0].set(jnp.asarray([0.0, 0.0, 224.0, 224.0]))  # The whole frame: exactly 7 cells.
  adaptive = roi_align(features, boxes, 7, spatial_scale=1 / 32)
  np.testing.assert_array_equal(adaptive, roi_align(features, boxes, 7, spatial_scale=1 / 32, sampling_ratio=1))
  two = roi_align(features, boxes, 7, spatial_scale=1 / 32, sampling_ratio=2)
  assert np.abs(np.asarray(adaptive - two)).max() > 1e-3


def test_box_gradient_matches_finite_differences():
  """torchvision has no box gradient; the box gradient here is the derivative of the bilinear samples."""
  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.normal(size=(1, 7, 7, 3)), jnp.float32)
  boxes = jnp.asarray([[[1.3, 0.7, 5.2, 4.9], [0.2, 2.1, 3.6, 6.4]]], jnp.float32)
  f = jax.jit(lambda b: roi_align(features, b, 3, sampling_ratio=2).sum())
  grad = np.asarray(jax.grad(f)(boxes))
  eps = 1e-2
  numeric = np.zeros_like(grad)
  for index in np.ndindex(*boxes.shape):
    step = np.zeros(boxes.shape, np.float32)
    step[index] = eps
    numeric[index] = (f(boxes + step) - f(boxes - step)) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, atol=2e-3)
  assert np.abs(grad).min() > 0  # Every edge moves the samples.


def test_bfloat16_features_pool_in_float32():
  features = jnp.ones((1, 4, 4, 2), jnp.bfloat16)
  out = roi_align(features, jnp.asarray([[[0.0, 0.0, 4.0, 4.0]]]), 2)
  assert out.dtype == jnp.float32 and out.shape == (1, 1, 2, 2, 2)
  np.testing.assert_allclose(np.asarray(out), 1.0)
