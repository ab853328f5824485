"""RoIAlign (He et al., Mask R-CNN) on channels-last maps with a static number of boxes: the pooling of AVA's RoI head.

`roi_align(features, boxes, ...)` computes what `torchvision.ops.roi_align` (detectron2's `ROIAlign`) does,
bin by bin: a box (x1, y1, x2, y2) times `spatial_scale`, shifted by -0.5 when `aligned` (pixel centres at
half-integers), is cut into out_h x out_w bins; each bin averages g_h x g_w bilinear samples at the centres of a
regular sub-grid; a sample with y < -1 or y > H (x < -1 or x > W) is 0, otherwise y is clamped to [0, H - 1].

Written as two weight matrices per box instead of gathers: bilinear interpolation with torchvision's border rules
is separable (a sample's weight at (h, w) is wy(h) * wx(w), and "zero outside" is zero in either factor), so the
out_h bins x g_h samples give rows (B, N, out_h, H) and the columns (B, N, out_w, W), each sample's weights a hat
function max(0, 1 - |y - h|) of the clamped coordinate, and the pooled features are one einsum with the
(B, H, W, C) map. Shapes depend on (N, out, H, W) only, the einsum is a batched matmul (sharded on the batch
axis), and it is differentiable in the features and in the boxes (torchvision gives no box gradient).

Sampling ratio. `sampling_ratio > 0` takes that many samples per bin and axis. `sampling_ratio = 0` is
torchvision's and PySlowFast's adaptive rule (ResNetRoIHead uses it): ceil(roi_size / out_size) samples per bin
and axis, per box. The count varies per box but the positions it can take are bounded: the samples are built for
g_max = ceil(map_size / out_size) per axis and those past a box's own count get weight 0, so the shapes stay
static. A box inside the frame spans at most map_size cells (the map covers the frame: H' = ceil(H_in / stride)),
so for such boxes this is the adaptive rule exactly; a box reaching beyond the map by more than the map's padding
gets g_max samples where torchvision takes more.
What adaptive gives for MViT (stride 32, 7 x 7 output):
- training and centre-crop test at 224: the map is 7 x 7 and a box is at most 7 cells, so 1 sample per bin and
  axis (0 for a box of zero width or height, whose features are then 0): g_max = 1, the cost of a fixed ratio 1;
- MViTv2-L at 312: the map is 10 x 10 at scale 312 / 32 = 9.75 cells, so boxes wider (taller) than 7 cells, 72%
  of the frame, take 2 samples: a fixed 1 would differ from PySlowFast there;
- full-frame test, short side 224 of a 16:9 frame (224 x 398): the map is 7 x 13, 2 samples across boxes wider
  than 7 cells (56% of the frame), 1 down.
So the default is the adaptive rule (0), PySlowFast's everywhere for boxes inside the frame at the price of a
fixed ratio 1 at 224, and g_max per axis elsewhere.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _axis_weights(start: jax.Array, end: jax.Array, size: int, out: int, sampling_ratio: int, aligned: bool):
  """Weights (B, N, out, size) of one axis: bin b of each box averages its samples' bilinear weights.

  Args: start, end (B, N) box edges in map cells (times spatial scale, before the aligned shift).
  """
  offset = 0.5 if aligned else 0.0
  start = start - offset
  roi = end - offset - start
  if not aligned:  # The legacy rule makes every box at least one cell long.
    roi = jnp.maximum(roi, 1.0)
  bin_size = roi / out
  if sampling_ratio > 0:
    grid = jnp.full_like(roi, float(sampling_ratio))
    samples = sampling_ratio
  else:
    grid = jnp.ceil(roi / out)
    samples = max(1, math.ceil(size / out))
  bins = jnp.arange(out, dtype=roi.dtype)[:, None]  # (out, 1)
  sub = jnp.arange(samples, dtype=roi.dtype)[None, :] + 0.5  # (1, samples)
  # torchvision's expression and order: y = start + b * bin + (i + 0.5) * bin / grid.
  y = (start[..., None, None] + bins * bin_size[..., None, None]
       + sub * bin_size[..., None, None] / grid[..., None, None])  # (B, N, out, samples)
  inside = (y >= -1.0) & (y <= size) & (sub < grid[..., None, None])
  y = jnp.clip(y, 0.0, size - 1.0)
  cells = jnp.arange(size, dtype=y.dtype)
  hat = jnp.maximum(0.0, 1.0 - jnp.abs(y[..., None] - cells))  # (B, N, out, samples, size)
  hat = jnp.where(inside[..., None], hat, 0.0)
  # torchvision divides each bin's sum by max(g_h * g_w, 1): a box with g = 0 on an axis has no samples at all.
  return hat.sum(axis=-2) / jnp.maximum(grid, 1.0)[..., None, None]


def roi_align(features: jax.Array, boxes: jax.Array, output_size: int | tuple[int, int], *,
              spatial_scale: float = 1.0, sampling_ratio: int = 0, aligned: bool = True) -> jax.Array:
  """RoIAlign of `boxes` on `features`, as `torchvision.ops.roi_align` with the same arguments.

  Args:
    features: (B, H, W, C) maps.
    boxes: (B, N, 4) float (x1, y1, x2, y2) per map of the batch, in the units `spatial_scale` maps to cells
      (input pixels with spatial_scale 1 / stride, or cells with 1).
    output_size: out or (out_h, out_w) bins.
    spatial_scale: cells per box unit.
    sampling_ratio: samples per bin and axis; 0: adaptive ceil(roi / out) per box (see the module docstring).
    aligned: pixel model with centres at half-integers (detectron2's aligned=True); False: the legacy one.

  Returns:
    (B, N, out_h, out_w, C) in float32 (or the features' dtype when wider), each bin the mean of its samples.
  """
  out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
  if sampling_ratio < 0:
    raise ValueError(f"sampling_ratio must be >= 0, got {sampling_ratio}")
  _, height, width, _ = features.shape
  dtype = jnp.promote_types(features.dtype, jnp.float32)
  boxes = boxes.astype(dtype) * spatial_scale
  x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
  wy = _axis_weights(y1, y2, height, out_h, sampling_ratio, aligned)  # (B, N, out_h, H)
  wx = _axis_weights(x1, x2, width, out_w, sampling_ratio, aligned)  # (B, N, out_w, W)
  # Full float32 products: on TPU the default precision would round the weights to bfloat16.
  return jnp.einsum("bnyh,bnxw,bhwc->bnyxc", wy, wx, features.astype(dtype),
                    precision=jax.lax.Precision.HIGHEST)
