"""The MViT action detector (AVA): the classifier's trunk with PySlowFast's RoI head (`ResNetRoIHead` as its MViT
uses it with DETECTION.ENABLE) in place of the class-token head.

The last stage's tokens after the final norm, class token dropped, as the (T', H', W', C) map; its mean over T';
RoIAlign of each box to 7 x 7 bins (aligned, adaptive sampling: `roi_align`); the max over the bins; dropout
(`head_dropout_rate`); the Dense `head` to num_classes logits (PySlowFast applies the sigmoid in the model, here the
loss and the scorer do). The parameter tree is the classifier's, names included, so Kinetics checkpoints,
converted files, `init_from` / `fit_pretrained` and both block layouts serve the detector unchanged.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from mvit_jax.models import layers
from mvit_jax.models.config import MViTConfig
from mvit_jax.models.mvit import encode, token_grid
from mvit_jax.models.roi_align import roi_align

ROI_SIZE = 7  # RoIAlign bins per side (DETECTION.ROI_XFORM_RESOLUTION).


def feature_stride(config: MViTConfig) -> tuple[int, int]:
  """(stride_h, stride_w) in input pixels of the last stage's map: the stem's stride times the Q-pooling strides
  (32 for every MViT variant; PySlowFast's DETECTION.SPATIAL_SCALE_FACTOR)."""
  stride_h = config.patch_stride[1] * math.prod(s[2] for s in config.pool_q_stride)
  stride_w = config.patch_stride[2] * math.prod(s[3] for s in config.pool_q_stride)
  return stride_h, stride_w


class MViTDetector(nn.Module):
  """MViT with an RoI head: action logits for person boxes in a clip.

  Call as `module.apply(variables, video, boxes, train=False)` with video (B, T, H, W, 3) normalised float and
  boxes (B, N, 4) float (x1, y1, x2, y2) normalised to [0, 1] of the input frame; returns float32 logits
  (B, N, num_classes), pre-sigmoid, each box's independent of the others (padding boxes change nothing else).
  Without boxes every clip gets one whole-frame box (B, 1, num_classes) (for `init` and shape tools). Training
  calls need `rngs={'dropout': key}`. `method="roi_features"` returns the head's intermediate values.

  A box reaches RoIAlign in map cells: x * W / stride_w, y * H / stride_h for an H x W input (PySlowFast's boxes in
  input pixels times 1 / 32), which at 224 is x * W', y * H' on the 7 x 7 map; where the input is not a multiple of
  32 the map's last cell covers padding and the cells stay 32 pixels wide, as in PySlowFast.
  """

  config: MViTConfig
  sampling_ratio: int = 0  # RoIAlign samples per bin and axis; 0: PySlowFast's adaptive rule (see roi_align).

  def roi_features(self, x: jax.Array, boxes: jax.Array | None = None, train: bool = False) -> dict[str, jax.Array]:
    """The head's values: `map` (B, H', W', C) float32, the last stage after the final norm averaged over T';
    `roi` (B, N, 7, 7, C) float32, its RoIAlign bins per box; `pooled` (B, N, C), their max (before dropout);
    `logits` (B, N, num_classes) float32."""
    return self(x, boxes, train, return_features=True)

  @nn.compact
  def __call__(self, x: jax.Array, boxes: jax.Array | None = None, train: bool = False,
               return_features: bool = False):
    cfg = self.config
    if x.ndim != 5:
      raise ValueError(f"the detector takes (B, T, H, W, 3) video, got {x.shape}")
    batch, _, height, width, _ = x.shape
    if boxes is None:
      boxes = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0, 1.0], jnp.float32), (batch, 1, 4))
    if boxes.ndim != 3 or boxes.shape[0] != batch or boxes.shape[-1] != 4:
      raise ValueError(f"boxes must be (B, N, 4) with B = {batch}, got {boxes.shape}")
    boxes = layers.constrain(boxes.astype(jnp.float32), "batch", None, None)
    tokens, stages = encode(cfg, x, train)
    grid = token_grid(tokens, stages[-1][1], cfg)  # (B, T', H', W', C) after the final norm.
    feature_map = jnp.mean(grid, axis=1, dtype=jnp.float32)
    stride_h, stride_w = feature_stride(cfg)
    scale = jnp.asarray([width / stride_w, height / stride_h] * 2, jnp.float32)
    roi = roi_align(feature_map, boxes * scale, ROI_SIZE, sampling_ratio=self.sampling_ratio)
    pooled = jnp.max(roi, axis=(2, 3))
    y = nn.Dropout(cfg.head_dropout_rate, deterministic=not train)(pooled)
    logits = layers.dense(cfg.num_classes, ("embed", "classes"), cfg, "head")(y).astype(jnp.float32)
    if not return_features:
      return logits
    return {"map": feature_map, "roi": roi, "pooled": pooled, "logits": logits}
