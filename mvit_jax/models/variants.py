"""Named MViT variants (paper names) and `create_model`.

Sources: MViT paper (arXiv 2104.11227) Tables 3-5 and 17; PySlowFast configs `MVIT_B_16x4_CONV.yaml`,
`MVIT_B_32x3_CONV.yaml` (the B-24 K600 model), `ImageNet/MVIT_B_16_CONV.yaml`; torchvision `mvit_v1_b`.
"""

from __future__ import annotations

import dataclasses

from mvit_jax.errors import InputError, did_you_mean
from mvit_jax.models.config import MViTConfig
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


def create_model(name: str, **overrides) -> MViT:
  """Returns the Linen module of variant `name`, e.g. `create_model('mvit_b_16x4', num_classes=174)`."""
  return MViT(get_config(name, **overrides))
