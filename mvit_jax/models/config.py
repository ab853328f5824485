"""MViT (v1 and v2) architecture configuration and the PySlowFast rules that turn it into per-block specs.

`MViTConfig` mirrors PySlowFast's `MVIT.*` keys (DIM_MUL, HEAD_MUL, POOL_Q_STRIDE, POOL_KVQ_KERNEL,
POOL_KV_STRIDE_ADAPTIVE, USE_ABS_POS, REL_POS_SPATIAL/TEMPORAL, RESIDUAL_POOLING, DIM_MUL_IN_ATT, CLS_EMBED_ON).
`block_specs(config)` expands it into one `BlockSpec` per transformer block with exactly the rules of PySlowFast's
`MViT.__init__` (cumulative `round_width`, adaptive K/V stride divided by the Q stride at every Q-pooled block,
kernel = stride + 1 when no kernel is given, pooling removed when kernel and stride are both 1, relative position
tables sized from the block's input grid by integer division), so a config from the papers or from a PySlowFast
YAML reproduces its layer table.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

Triple = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class MViTConfig:
  """Hyper-parameters of an MViT v1 or v2 model (names follow PySlowFast's `MVIT.*` config)."""

  num_classes: int = 400
  num_frames: int = 16  # Input frames T the position tables are built for (1 for image models).
  input_size: int = 224  # Input height = width in pixels the position tables are built for.
  image: bool = False  # 2-D patch stem (Conv2d) and joint spatial position table (ImageNet models).
  patch_kernel: Triple = (3, 7, 7)
  patch_stride: Triple = (2, 4, 4)
  patch_padding: Triple = (1, 3, 3)
  embed_dim: int = 96
  num_heads: int = 1
  depth: int = 16
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  # (block index, multiplier) pairs, as PySlowFast's DIM_MUL / HEAD_MUL.
  dim_mul: tuple[tuple[int, float], ...] = ((1, 2.0), (3, 2.0), (14, 2.0))
  head_mul: tuple[tuple[int, float], ...] = ((1, 2.0), (3, 2.0), (14, 2.0))
  # (block index, st, sh, sw) entries, as POOL_Q_STRIDE.
  pool_q_stride: tuple[tuple[int, int, int, int], ...] = ((1, 1, 2, 2), (3, 1, 2, 2), (14, 1, 2, 2))
  pool_kv_stride_adaptive: Triple | None = (1, 8, 8)
  # Explicit (block index, st, sh, sw) K/V strides, used when pool_kv_stride_adaptive is None.
  pool_kv_stride: tuple[tuple[int, int, int, int], ...] = ()
  # Kernel of every Q/K/V pooling op; None means PySlowFast's default rule (stride + 1 where stride > 1).
  pool_kvq_kernel: Triple | None = (3, 3, 3)
  # Blocks without K/V pooling whatever the rules say (the original PySlowFast 16x4 checkpoint, blocks 14-15).
  kv_pool_off_blocks: tuple[int, ...] = ()
  pool_mode: str = "conv"  # "conv" (depthwise conv + LayerNorm), "avg" or "max".
  sep_pos_embed: bool = True  # Separable spatial / temporal / class tables; False: one joint table.
  abs_pos: bool = True  # Absolute position tables added to the input tokens (USE_ABS_POS; MViTv2 has none).
  cls_token: bool = True  # A class token, classified from (CLS_EMBED_ON); without one the final tokens are averaged.
  # Decomposed relative position bias in every block (MViTv2): spatial h/w tables, and a temporal one for video.
  rel_pos: bool = False
  residual_pooling: bool = False  # Adds the pooled q to the attention output (RESIDUAL_POOLING, MViTv2).
  # Residual pooling also on the class row: the image code and timm do it, the video code (PySlowFast,
  # torchvision) leaves the class row as attention @ v.
  residual_pooling_cls: bool = False
  # Channels expand inside the attention of a stage's first block, the skip being the projection of the norm1
  # output (DIM_MUL_IN_ATT, MViTv2); False: v1-style, in the MLP of the stage's last block (skip: proj(norm2)).
  dim_mul_in_att: bool = False
  norm_eps: float = 1e-6
  pool_norm_eps: float = 1e-6  # 1e-5 for checkpoints trained with the 2021 PySlowFast code.
  drop_path_rate: float = 0.2
  head_dropout_rate: float = 0.5
  dtype: Any = jnp.float32  # Compute dtype; softmax and LayerNorm statistics always run in float32.
  param_dtype: Any = jnp.float32
  pool_impl: str = "auto"  # "auto", "slices" or "conv"; see mvit_jax.models.pooling.
  remat_policy: str | None = None  # None: no remat; else "full" or a name in jax.checkpoint_policies.
  # Attention: "einsum" (two dots around `ops.softmax`, whose backward keeps only the probabilities), or
  # `jax.nn.dot_product_attention` with implementation "xla" or "cudnn" (cuDNN's fused kernel on NVIDIA GPUs;
  # bfloat16 / float16 compute, head_dim a multiple of 8 up to 128).
  attention_impl: str = "einsum"
  # Consecutive blocks of one shape run as one nn.scan, params stacked on a leading 'layers' axis
  # (`block_groups`; `layout.to_block_layout` maps parameters between the two layouts).
  scan_blocks: bool = True
  # An action detector (`mvit_jax.models.detection`): the same trunk and `head`, classifying boxes by RoIAlign on the
  # last stage instead of the class token: logits (B, N, num_classes) for (B, N, 4) boxes.
  detection: bool = False

  def __post_init__(self):
    for key in ("dtype", "param_dtype"):
      value = getattr(self, key)
      if isinstance(value, str):
        object.__setattr__(self, key, jnp.dtype(value).type)
    if self.pool_mode not in ("conv", "avg", "max"):
      raise ValueError(f"pool_mode must be 'conv', 'avg' or 'max', got {self.pool_mode!r}")
    if self.pool_impl not in ("auto", "slices", "conv"):
      raise ValueError(f"pool_impl must be 'auto', 'slices' or 'conv', got {self.pool_impl!r}")
    if self.attention_impl not in ("einsum", "xla", "cudnn"):
      raise ValueError(f"attention_impl must be 'einsum', 'xla' or 'cudnn', got {self.attention_impl!r}")
    if self.image and self.num_frames != 1:
      raise ValueError(f"image models take num_frames=1, got {self.num_frames}")
    if self.detection and self.image:
      raise ValueError("detection needs a video variant: the RoI head pools a clip's (T', H', W') map and an image "
                       "model (image=True) has no time axis; use a video variant (init_from an image model fits it)")
    if self.abs_pos and not self.cls_token:
      raise ValueError("absolute position tables hold a class position: abs_pos=True needs cls_token=True")

  @property
  def token_grid(self) -> Triple:
    """(T', H', W') token grid after the patch stem for the built input size."""
    return patch_grid(self, self.num_frames, self.input_size, self.input_size)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """One multiscale block. Kernels/strides are (t, h, w); None means no pooling of that tensor."""

  dim_in: int
  dim_out: int
  attn_dim: int  # Width of q, k, v and the attention output: dim_out when channels expand in the attention.
  num_heads: int
  q_kernel: Triple | None
  q_stride: Triple
  kv_kernel: Triple | None
  kv_stride: Triple
  drop_path: float
  rel_pos_hw: int = 0  # Rows of the spatial relative position tables (0: none).
  rel_pos_t: int = 0  # Rows of the temporal relative position table (0: none).

  @property
  def head_dim(self) -> int:
    return self.attn_dim // self.num_heads


def block_groups(config: MViTConfig) -> list[tuple[int, int]]:
  """Maximal runs [first, last] of consecutive blocks with one shape: the same spec but for the drop-path rate,
  on the same token grid (a Q-pooling block ends its run: its output grid differs from its input grid)."""
  groups: list[tuple[int, int]] = []
  previous = None
  for i, spec in enumerate(block_specs(config)):
    shape = dataclasses.replace(spec, drop_path=0.0)
    if shape == previous and spec.q_stride == (1, 1, 1):
      groups[-1] = (groups[-1][0], i)
    else:
      groups.append((i, i))
    previous = shape if spec.q_stride == (1, 1, 1) else None
  return groups


def round_width(width: float, multiplier: float, min_width: int = 1, divisor: int = 1) -> int:
  """PySlowFast's `round_width`: scale a width and round it to a multiple of `divisor`."""
  width *= multiplier
  min_width = min_width or divisor
  width_out = max(min_width, int(width + divisor / 2) // divisor * divisor)
  if width_out < 0.9 * width:
    width_out += divisor
  return int(width_out)


def _default_kernel(stride: Triple) -> Triple:
  return tuple(s + 1 if s > 1 else s for s in stride)


def block_specs(config: MViTConfig) -> list[BlockSpec]:
  """Expands a config into per-block specs by PySlowFast's construction rules."""
  depth = config.depth
  dim_mul, head_mul = np.ones(depth + 1), np.ones(depth + 1)
  for i, m in config.dim_mul:
    dim_mul[i] = m
  for i, m in config.head_mul:
    head_mul[i] = m

  q_stride = [(1, 1, 1)] * depth
  for i, *stride in config.pool_q_stride:
    q_stride[i] = tuple(stride)

  kv_stride = [(1, 1, 1)] * depth
  if config.pool_kv_stride_adaptive is not None:
    running = tuple(config.pool_kv_stride_adaptive)
    for i in range(depth):
      if q_stride[i] != (1, 1, 1):
        running = tuple(max(r // s, 1) for r, s in zip(running, q_stride[i]))
      kv_stride[i] = running
  for i, *stride in config.pool_kv_stride:
    kv_stride[i] = tuple(stride)

  def kernel_for(stride: Triple) -> Triple | None:
    kernel = tuple(config.pool_kvq_kernel) if config.pool_kvq_kernel is not None else _default_kernel(stride)
    if np.prod(kernel) == 1 and np.prod(stride) == 1:
      return None
    return kernel

  drop_path = np.linspace(0.0, config.drop_path_rate, depth)
  specs = []
  dim, heads = config.embed_dim, config.num_heads
  q_pooled = {i for i, *_ in config.pool_q_stride}
  table_grid = config.token_grid  # The grid relative position tables are sized for (PySlowFast's input_size).
  for i in range(depth):
    heads = round_width(heads, head_mul[i])
    if config.dim_mul_in_att:
      dim_out = round_width(dim, dim_mul[i], divisor=round_width(heads, head_mul[i]))
    else:
      dim_out = round_width(dim, dim_mul[i + 1], divisor=round_width(heads, head_mul[i + 1]))
    kv_kernel = None if i in config.kv_pool_off_blocks else kernel_for(kv_stride[i])
    spec = BlockSpec(
        dim_in=dim,
        dim_out=dim_out,
        attn_dim=dim_out if config.dim_mul_in_att else dim,
        num_heads=heads,
        q_kernel=kernel_for(q_stride[i]) if i in q_pooled else None,
        q_stride=q_stride[i],
        kv_kernel=kv_kernel,
        kv_stride=kv_stride[i] if kv_kernel is not None else (1, 1, 1),
        drop_path=float(drop_path[i]),
    )
    if config.rel_pos:
      spec = dataclasses.replace(spec, **rel_pos_rows(table_grid, spec.q_stride, spec.kv_stride, config.image))
    specs.append(spec)
    table_grid = tuple(n // s for n, s in zip(table_grid, q_stride[i]))
    dim = dim_out
  return specs


def rel_pos_rows(thw: Triple, q_stride: Triple, kv_stride: Triple, image: bool) -> dict[str, int]:
  """Table rows of a block on input grid `thw`: 2 max(q, kv) - 1 spatially with sizes by integer division (as
  PySlowFast and torchvision size them), 2 T - 1 temporally (no temporal table for images)."""
  size = max(thw[1:])
  spatial = 2 * max(size // q_stride[1], size // kv_stride[1]) - 1
  return dict(rel_pos_hw=spatial, rel_pos_t=0 if image else 2 * thw[0] - 1)


def conv_out_size(size: int, kernel: int, stride: int, padding: int) -> int:
  """Floor-mode output length of a conv / pool (PyTorch ceil_mode=False)."""
  return (size + 2 * padding - kernel) // stride + 1


def patch_grid(config: MViTConfig, frames: int, height: int, width: int) -> Triple:
  """Token grid (T', H', W') the patch stem makes from a (frames, height, width) input."""
  if config.image:
    t = frames
  else:
    t = conv_out_size(frames, config.patch_kernel[0], config.patch_stride[0], config.patch_padding[0])
  h = conv_out_size(height, config.patch_kernel[1], config.patch_stride[1], config.patch_padding[1])
  w = conv_out_size(width, config.patch_kernel[2], config.patch_stride[2], config.patch_padding[2])
  return (t, h, w)


def pooled_grid(thw: Triple, kernel: Triple | None, stride: Triple) -> Triple:
  """Grid after pooling with symmetric padding kernel // 2 (identity when kernel is None)."""
  if kernel is None:
    return thw
  return tuple(conv_out_size(n, k, s, k // 2) for n, k, s in zip(thw, kernel, stride))
