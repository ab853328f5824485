"""Named MViT variants (paper names; MViTv2 image models as timm names them) and `create_model`.

Sources: MViT paper (arXiv 2104.11227) Tables 3-5 and 17; PySlowFast configs `MVIT_B_16x4_CONV.yaml`,
`MVIT_B_32x3_CONV.yaml` (the B-24 K600 model), `ImageNet/MVIT_B_16_CONV.yaml`; torchvision `mvit_v1_b`.
MViTv2 paper (arXiv 2112.01526) Tables 1 and 10; PySlowFast `MVITv2_{S_16x4,B_32x3,L_40x3_test}.yaml`;
torchvision `mvit_v2_s`; the official image configs `MVITv2_{T,S,B,L}.yaml` and timm's `mvitv2_*`.
"""

from __future__ import annotations

import dataclasses

from mvit_jax.system.errors import InputError, did_you_mean
from mvit_jax.models.config import MViTConfig
from mvit_jax.models.detection import MViTDetector
from mvit_jax.models.mvit import MViT

_B24_STAGES = dict(
    depth=24,
    dim_mul=((2, 2.0), (5, 2.0), (21, 2.0)),
    head_mul=((2, 2.0), (5, 2.0), (21, 2.0)),
    pool_q_stride=((2, 1, 2, 2), (5, 1, 2, 2), (21, 1, 2, 2)),
)
_IMAGE = dict(
    image=True,
    num_frames=1,
    num_classes=1000,
    patch_kernel=(1, 7, 7),
    patch_stride=(1, 4, 4),
    patch_padding=(0, 3, 3),
    pool_kvq_kernel=(1, 3, 3),
    pool_kv_stride_adaptive=(1, 4, 4),
    sep_pos_embed=False,
    head_dropout_rate=0.0,
)



def _v2_stages(depth: int, stage_starts: tuple[int, ...]) -> dict:
  """MViTv2 stages: width and heads double at each stage's first block, which pools Q with stride 2 in space;
  every other block pools Q with stride 1 (full Q pooling: POOL_Q_STRIDE lists every block)."""
  return dict(
      depth=depth,
      dim_mul=tuple((i, 2.0) for i in stage_starts),
      head_mul=tuple((i, 2.0) for i in stage_starts),
      pool_q_stride=tuple((i, 1, 2, 2) if i in stage_starts else (i, 1, 1, 1) for i in range(depth)),
  )


def _v2_image_stages(depths: tuple[int, int, int, int]) -> dict:
  """`_v2_stages` from timm's per-stage depths."""
  return _v2_stages(sum(depths), (depths[0], sum(depths[:2]), sum(depths[:3])))


_V2 = dict(abs_pos=False, rel_pos=True, residual_pooling=True, dim_mul_in_att=True, pool_kvq_kernel=(3, 3, 3),
           pool_kv_stride_adaptive=(1, 8, 8))
# Without a class token (IN-1K models mean-pool the final tokens); the `_cls` models set cls_token=True and then
# add q to the class row too in residual pooling, as the official image code and timm do.
_V2_IMAGE = dict(_IMAGE, abs_pos=False, rel_pos=True, residual_pooling=True, residual_pooling_cls=True,
                 dim_mul_in_att=True, cls_token=False)

VARIANTS: dict[str, MViTConfig] = {
    # MViT-B 16x4 (K400): torchvision mvit_v1_b, 36,610,672 parameters.
    "mvit_b_16x4": MViTConfig(),
    "mvit_b_32x3": MViTConfig(num_frames=32),
    "mvit_b_64x3": MViTConfig(num_frames=64),
    # MViT-S (paper Table 3c; no public config): 3x8x8 cube to 128 channels, 28x28 tokens, stages 3/7/6 blocks.
    "mvit_s_16x4": MViTConfig(
        patch_kernel=(3, 8, 8),
        patch_stride=(2, 8, 8),
        patch_padding=(1, 0, 0),
        embed_dim=128,
        dim_mul=((3, 2.0), (10, 2.0)),
        head_mul=((3, 2.0), (10, 2.0)),
        pool_q_stride=((3, 1, 2, 2), (10, 1, 2, 2)),
        pool_kv_stride_adaptive=(1, 4, 4),
    ),
    # MViT-B-24 32x3 (K600): PySlowFast MVIT_B_32x3_CONV.yaml, default kernel rule (no POOL_KVQ_KERNEL).
    "mvit_b24_32x3": MViTConfig(
        num_frames=32, num_classes=600, pool_kvq_kernel=None, drop_path_rate=0.3, **_B24_STAGES
    ),
    "mvit_b16_in1k": MViTConfig(drop_path_rate=0.1, **_IMAGE),
    "mvit_b24_in1k": MViTConfig(drop_path_rate=0.3, **_IMAGE, **_B24_STAGES),
    # Small model for the CPU demo and tests: 8x64x64 input, 4 blocks, widths 32/64/128.
    "mvit_tiny": MViTConfig(
        num_frames=8,
        input_size=64,
        num_classes=10,
        embed_dim=32,
        depth=4,
        dim_mul=((1, 2.0), (3, 2.0)),
        head_mul=((1, 2.0), (3, 2.0)),
        pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2)),
        pool_kv_stride_adaptive=(1, 4, 4),
        drop_path_rate=0.1,
        head_dropout_rate=0.0,
    ),
    # MViTv2 video (K400): torchvision mvit_v2_s (34,537,744 parameters), PySlowFast B 32x3 and L 40x3 at 312².
    "mvitv2_s_16x4": MViTConfig(**_V2, **_v2_stages(16, (1, 3, 14))),
    "mvitv2_b_32x3": MViTConfig(num_frames=32, drop_path_rate=0.3, **_V2, **_v2_stages(24, (2, 5, 21))),
    "mvitv2_l_40x3": MViTConfig(num_frames=40, input_size=312, embed_dim=144, num_heads=2, drop_path_rate=0.75,
                                **_V2, **_v2_stages(48, (2, 8, 44))),
    # MViTv2 image (IN-1K; drop path of the official configs). timm's mvitv2_large expands channels in the MLP.
    "mvitv2_tiny": MViTConfig(drop_path_rate=0.1, **_V2_IMAGE, **_v2_image_stages((1, 2, 5, 2))),
    "mvitv2_small": MViTConfig(drop_path_rate=0.1, **_V2_IMAGE, **_v2_image_stages((1, 2, 11, 2))),
    "mvitv2_base": MViTConfig(drop_path_rate=0.3, **_V2_IMAGE, **_v2_image_stages((2, 3, 16, 3))),
    "mvitv2_large": MViTConfig(embed_dim=144, num_heads=2, drop_path_rate=0.5,
                               **dict(_V2_IMAGE, dim_mul_in_att=False), **_v2_image_stages((2, 6, 36, 4))),
    # With a class token (the IN-21K models; timm's `_cls` names).
    "mvitv2_small_cls": MViTConfig(drop_path_rate=0.1, **dict(_V2_IMAGE, cls_token=True),
                                   **_v2_image_stages((1, 2, 11, 2))),
    "mvitv2_base_cls": MViTConfig(drop_path_rate=0.3, **dict(_V2_IMAGE, cls_token=True),
                                  **_v2_image_stages((2, 3, 16, 3))),
    "mvitv2_large_cls": MViTConfig(embed_dim=144, num_heads=2, drop_path_rate=0.5, **dict(_V2_IMAGE, cls_token=True),
                                   **_v2_image_stages((2, 6, 36, 4))),
    "mvitv2_huge_cls": MViTConfig(embed_dim=192, num_heads=3, drop_path_rate=0.8, **dict(_V2_IMAGE, cls_token=True),
                                  **_v2_image_stages((4, 8, 60, 8))),
}

# Paper numbers (params in millions, forward GFLOPs per view as multiply-adds) for model_stats.
PAPER_STATS: dict[str, tuple[float, float]] = {
    "mvit_s_16x4": (26.1, 32.9),
    "mvit_b_16x4": (36.6, 70.5),
    "mvit_b_32x3": (36.6, 170.0),
    "mvit_b_64x3": (36.6, 455.0),
    "mvit_b24_32x3": (52.9, 236.0),
    "mvit_b16_in1k": (37.0, 7.8),
    "mvit_b24_in1k": (53.5, 10.9),
    "mvitv2_s_16x4": (34.5, 64.0),
    "mvitv2_b_32x3": (51.2, 225.0),
    "mvitv2_l_40x3": (217.6, 2828.0),  # P2's SSv2 row gives 213.1 M for this network with 174 classes.
    "mvitv2_tiny": (24.0, 4.7),
    "mvitv2_small": (35.0, 7.0),
    "mvitv2_base": (52.0, 10.2),
    "mvitv2_large": (218.0, 42.1),  # P2 Table 1 says 39.6; channels expanding in the attention give 42.0.
    "mvitv2_huge_cls": (667.0, 120.6),
}


def get_config(name: str, **overrides) -> MViTConfig:
  """The config of variant `name` with fields replaced by `overrides`; InputError (a ValueError) names an unknown
  variant or field and the closest valid one."""
  if name not in VARIANTS:
    raise InputError(f"unknown MViT variant {name!r}{did_you_mean(name, VARIANTS)}; known: {', '.join(VARIANTS)}")
  fields = {f.name for f in dataclasses.fields(MViTConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise InputError(f"unknown override {unknown[0]!r} for {name!r}{did_you_mean(unknown[0], fields)}; valid: "
                     f"{', '.join(sorted(fields))}")
  return dataclasses.replace(VARIANTS[name], **overrides)


def create_model(name: str, **overrides) -> MViT | MViTDetector:
  """Returns the Linen module of variant `name`, e.g. `create_model('mvit_b_16x4', num_classes=174)`; with
  `detection=True` the action detector (`MViTDetector`, video variants only), e.g.
  `create_model('mvit_b_16x4', detection=True, num_classes=80)`."""
  config = get_config(name, **overrides)
  return MViTDetector(config) if config.detection else MViT(config)
