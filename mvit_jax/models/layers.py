"""Building blocks of MViT v1 and v2: patch stem, position embeddings, pooling attention (with MViTv2's decomposed
relative position bias and residual pooling), multiscale block, drop path.

Activations are token sequences (B, L, C) with the class token (when the config has one) at index 0, followed by
the (T, H, W) grid in row-major order. Every parameter carries logical axis names for sharding rules:
'embed' (model width), 'mlp' (MLP hidden), 'qkv' (fused q/k/v output), 'heads' (attention output projection
input, heads x head_dim), 'head_dim' (per-head pooling channels), 'pos' (position-table rows), 'classes'.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvit_jax.models import ops
from mvit_jax.models import pooling
from mvit_jax.models.config import BlockSpec, MViTConfig, Triple, pooled_grid


dense_init = nn.initializers.truncated_normal(0.02)
table_init = nn.initializers.truncated_normal(0.02)
# PyTorch's default Conv init (kaiming_uniform, a=sqrt(5)): U(+-1/sqrt(fan_in)), what the papers trained with.
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _partitioned(init, axes):
  return nn.with_logical_partitioning(init, axes)


def dense(features: int, axes: tuple[str, str], config: MViTConfig, name: str, use_bias: bool = True) -> nn.Dense:
  return nn.Dense(
      features,
      use_bias=use_bias,
      dtype=config.dtype,
      param_dtype=config.param_dtype,
      kernel_init=_partitioned(dense_init, axes),
      bias_init=_partitioned(nn.initializers.zeros, (axes[1],)),
      name=name,
  )


class LayerNorm(nn.Module):
  """LayerNorm over the last axis with float32 statistics whatever the compute dtype (params `scale`, `bias`, as
  flax's nn.LayerNorm), differentiated by `ops.layer_norm`'s lean rule."""

  epsilon: float
  axis_name: str
  config: MViTConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    scale = self.param("scale", _partitioned(nn.initializers.ones, (self.axis_name,)), features,
                       self.config.param_dtype)
    bias = self.param("bias", _partitioned(nn.initializers.zeros, (self.axis_name,)), features,
                      self.config.param_dtype)
    return ops.layer_norm(x.astype(self.config.dtype), scale, bias, self.epsilon)


def layer_norm(axis_name: str, config: MViTConfig, name: str, eps: float | None = None) -> LayerNorm:
  return LayerNorm(config.norm_eps if eps is None else eps, axis_name, config, name=name)


def constrain(x: jax.Array, *axes: str | None) -> jax.Array:
  return nn.with_logical_constraint(x, axes)


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per sample, scaling kept ones by 1 / (1 - rate). The rate
  is a float or, in scanned blocks, a traced scalar."""

  rate: float | jax.Array

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if not train or (isinstance(self.rate, float) and self.rate == 0.0):
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return x * (mask / keep).astype(x.dtype)  # A (B, 1, ...) factor: all the backward pass keeps.


class PatchEmbed(nn.Module):
  """Conv stem: (B, T, H, W, 3) -> tokens (B, T'*H'*W', D) and the grid (T', H', W')."""

  config: MViTConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, Triple]:
    cfg = self.config
    kt, kh, kw = cfg.patch_kernel
    fan_in = 3 * kh * kw * (1 if cfg.image else kt)
    bound = 1.0 / np.sqrt(fan_in)
    bias_init = lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)
    if cfg.image:
      # Conv2d stem applied to every frame (T = 1 for image models).
      kernel_size, strides = (kh, kw), cfg.patch_stride[1:]
      padding = [(p, p) for p in cfg.patch_padding[1:]]
      kernel_axes = (None, None, None, "embed")
    else:
      kernel_size, strides = cfg.patch_kernel, cfg.patch_stride
      padding = [(p, p) for p in cfg.patch_padding]
      kernel_axes = (None, None, None, None, "embed")
    conv = nn.Conv(
        cfg.embed_dim,
        kernel_size,
        strides=strides,
        padding=padding,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        kernel_init=_partitioned(torch_conv_init, kernel_axes),
        bias_init=_partitioned(bias_init, ("embed",)),
        name="proj",
    )
    b, t = x.shape[:2]
    if cfg.image:
      y = conv(x.reshape((b * t,) + x.shape[2:]))
      y = y.reshape((b, t) + y.shape[1:])
    else:
      y = conv(x)
    grid = tuple(y.shape[1:4])
    return y.reshape(b, -1, cfg.embed_dim), grid


def resize_table(table: jax.Array, src_grid: tuple[int, ...], dst_grid: tuple[int, ...]) -> jax.Array:
  """Linearly interpolates a position table (prod(src_grid), D) to (prod(dst_grid), D).

  Half-pixel (align_corners=False) linear interpolation without antialiasing, as PyTorch's
  `F.interpolate(mode='trilinear')` that PySlowFast uses to adapt position embeddings.
  """
  if tuple(src_grid) == tuple(dst_grid):
    return table
  grid = table.reshape(tuple(src_grid) + table.shape[-1:])
  resized = jax.image.resize(grid.astype(jnp.float32), tuple(dst_grid) + table.shape[-1:], "linear", antialias=False)
  return resized.reshape(-1, table.shape[-1]).astype(table.dtype)


class PositionEmbedding(nn.Module):
  """Prepends the class token (`config.cls_token`) and adds absolute position embeddings (`config.abs_pos`).

  Separable (video): spatial (H'W', D) + temporal (T', D) tables and a class entry; joint (image): one
  (1 + H'W', D) table including the class position. Tables are interpolated when the token grid differs from
  the grid the model was built for.
  """

  config: MViTConfig

  @nn.compact
  def __call__(self, x: jax.Array, grid: Triple) -> jax.Array:
    cfg = self.config
    if not cfg.cls_token:  # The config allows no absolute tables without a class token.
      return x
    t0, h0, w0 = cfg.token_grid
    t, h, w = grid
    d = cfg.embed_dim
    cls_token = self.param("cls_token", _partitioned(table_init, (None, "embed")), (1, d), cfg.param_dtype)
    cls = jnp.broadcast_to(cls_token.astype(x.dtype), (x.shape[0], 1, d))
    x = jnp.concatenate([cls, x], axis=1)
    if not cfg.abs_pos:
      return x
    if cfg.sep_pos_embed:
      spatial = self.param("pos_embed_spatial", _partitioned(table_init, ("pos", "embed")), (h0 * w0, d), cfg.param_dtype)
      temporal = self.param("pos_embed_temporal", _partitioned(table_init, ("pos", "embed")), (t0, d), cfg.param_dtype)
      cls_pos = self.param("pos_embed_class", _partitioned(table_init, (None, "embed")), (1, d), cfg.param_dtype)
      spatial = resize_table(spatial, (h0, w0), (h, w))
      temporal = resize_table(temporal, (t0,), (t,))
      grid_pos = (temporal[:, None, :] + spatial[None, :, :]).reshape(t * h * w, d)
      pos = jnp.concatenate([cls_pos, grid_pos], axis=0)
    else:
      table = self.param("pos_embed", _partitioned(table_init, ("pos", "embed")), (1 + t0 * h0 * w0, d), cfg.param_dtype)
      pos = jnp.concatenate([table[:1], resize_table(table[1:], (t0, h0, w0), (t, h, w))], axis=0)
    return x + pos.astype(x.dtype)[None]


def split_cls(x: jax.Array, config: MViTConfig) -> tuple[jax.Array, jax.Array]:
  """(class rows, grid rows) of tokens x (B, L, ...): the first row is the class token when the config has one."""
  n = 1 if config.cls_token else 0
  return x[:, :n], x[:, n:]


class TokenPool(nn.Module):
  """Pools the token grid of q, k or v per head, never the class token; LayerNorm after conv pooling.

  Input (B, [1 +] T*H*W, heads, head_dim) -> (B, [1 +] To*Ho*Wo, heads, head_dim). The depthwise kernel
  (kT, kH, kW, head_dim) is shared by all heads; the LayerNorm (over head_dim) also normalises the class token.
  """

  kernel: Triple
  stride: Triple
  thw: Triple
  config: MViTConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    b, _, heads, hd = x.shape
    cls, grid = split_cls(x, cfg)
    grid = grid.reshape((b,) + self.thw + (heads, hd))
    if cfg.pool_mode == "conv":
      kernel = self.param(
          "kernel",
          _partitioned(torch_conv_init, (None, None, None, "head_dim")),
          self.kernel + (hd,),
          cfg.param_dtype,
      )
      pooled = pooling.depthwise_conv(grid, kernel, self.stride, cfg.pool_impl)
    else:
      pooled = pooling.window_pool(grid, self.kernel, self.stride, cfg.pool_mode, cfg.pool_impl)
    x = jnp.concatenate([cls, pooled.reshape(b, -1, heads, hd)], axis=1)
    if cfg.pool_mode == "conv":
      x = layer_norm("head_dim", cfg, "norm", eps=cfg.pool_norm_eps)(x)
    return x


def rel_pos_index(q_size: int, k_size: int) -> np.ndarray:
  """(q_size, k_size) table rows of decomposed relative positions: q * max(k/q, 1) - k * max(q/k, 1) +
  (k_size - 1) * max(q/k, 1), truncated, in float32 as PySlowFast and torchvision compute it."""
  q_ratio, k_ratio = np.float32(max(k_size / q_size, 1.0)), np.float32(max(q_size / k_size, 1.0))
  q = np.arange(q_size, dtype=np.float32)[:, None] * q_ratio
  k = (np.arange(k_size, dtype=np.float32)[None, :] + np.float32(1.0 - k_size)) * k_ratio
  return (q - k).astype(np.int64)


def _relative_table(table: jax.Array, q_size: int, k_size: int) -> jax.Array:
  """(q_size, k_size, head_dim) entries of `table`, linearly interpolated first to 2 max(q, k) - 1 rows when the
  token grid differs from the one it was built for."""
  table = resize_table(table, (table.shape[0],), (2 * max(q_size, k_size) - 1,))
  return table[rel_pos_index(q_size, k_size)]


def rel_pos_bias(q: jax.Array, q_thw: Triple, k_thw: Triple, tables: dict[str, jax.Array]) -> jax.Array:
  """Decomposed relative position bias (MViTv2 Eq. 4) for the grid rows and columns of the attention logits.

  Args:
    q: (B, Tq*Hq*Wq, heads, head_dim) pooled and normalised queries of the grid, unscaled.
    tables: `rel_pos_h`, `rel_pos_w` and optionally `rel_pos_t`, (rows, head_dim) each.
  Returns:
    (B, heads, Tq*Hq*Wq, Tk*Hk*Wk) float32: q . R_h + q . R_w (+ q . R_t).
  """
  b, _, heads, hd = q.shape
  q = q.reshape((b,) + tuple(q_thw) + (heads, hd))
  dot = lambda spec, table: jnp.einsum(spec, q, table.astype(q.dtype), preferred_element_type=jnp.float32)
  # One (B, heads, Tq, Hq, Wq, K) term per axis, K the key positions along that axis.
  rel_h = dot("bthwnc,hkc->bnthwk", _relative_table(tables["rel_pos_h"], q_thw[1], k_thw[1]))
  rel_w = dot("bthwnc,wkc->bnthwk", _relative_table(tables["rel_pos_w"], q_thw[2], k_thw[2]))
  bias = rel_h[..., None, :, None] + rel_w[..., None, None, :]
  if "rel_pos_t" in tables:
    rel_t = dot("bthwnc,tkc->bnthwk", _relative_table(tables["rel_pos_t"], q_thw[0], k_thw[0]))
    bias = bias + rel_t[..., :, None, None]
  bias = jnp.broadcast_to(bias, bias.shape[:5] + tuple(k_thw))  # Without a temporal table: the same for all frames.
  return bias.reshape(b, heads, math.prod(q_thw), math.prod(k_thw))


class PoolingAttention(nn.Module):
  """Multi-head pooling attention (MHPA, MViT v1 §3.1; MViTv2 §3) on (B, L, dim_in) tokens with grid `thw`.

  Returns (B, Lq, attn_dim): Q is pooled with `spec.q_kernel/q_stride`, K and V with `spec.kv_*`. MViTv2 options:
  the decomposed relative position bias (`config.rel_pos`) is added to the scaled logits of grid rows and columns,
  computed with the pooled, normalised, unscaled q; residual pooling (`config.residual_pooling`) adds that q to the
  output of the grid rows (and of the class row with `config.residual_pooling_cls`).
  """

  spec: BlockSpec
  thw: Triple
  config: MViTConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, spec = self.config, self.spec
    b, l, _ = x.shape
    dim, heads, hd = spec.attn_dim, spec.num_heads, spec.head_dim
    qkv = dense(3 * dim, ("embed", "qkv"), cfg, "qkv", use_bias=cfg.qkv_bias)(x)
    qkv = qkv.reshape(b, l, 3, heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q_thw = k_thw = self.thw
    if spec.q_kernel is not None:
      q = TokenPool(spec.q_kernel, spec.q_stride, self.thw, cfg, name="pool_q")(q)
      q_thw = pooled_grid(self.thw, spec.q_kernel, spec.q_stride)
    if spec.kv_kernel is not None:
      k = TokenPool(spec.kv_kernel, spec.kv_stride, self.thw, cfg, name="pool_k")(k)
      v = TokenPool(spec.kv_kernel, spec.kv_stride, self.thw, cfg, name="pool_v")(v)
      k_thw = pooled_grid(self.thw, spec.kv_kernel, spec.kv_stride)
    bias = None
    if spec.rel_pos_hw:
      bias = rel_pos_bias(split_cls(q, cfg)[1], q_thw, k_thw, self._rel_pos_tables())
      if cfg.cls_token:  # The class row and column get no bias.
        bias = jnp.pad(bias, ((0, 0), (0, 0), (1, 0), (1, 0)))
    out = self._attend(q, k, v, bias)
    if cfg.residual_pooling:
      residual = q
      if cfg.cls_token and not cfg.residual_pooling_cls:
        residual = jnp.concatenate([jnp.zeros_like(q[:, :1]), q[:, 1:]], axis=1)
      out = out + residual
    return dense(dim, ("heads", "embed"), cfg, "proj")(out.reshape(b, -1, dim))

  def _rel_pos_tables(self) -> dict[str, jax.Array]:
    cfg, spec = self.config, self.spec
    shapes = {"rel_pos_h": spec.rel_pos_hw, "rel_pos_w": spec.rel_pos_hw}
    if spec.rel_pos_t:
      shapes["rel_pos_t"] = spec.rel_pos_t
    return {name: self.param(name, _partitioned(table_init, ("pos", "head_dim")), (rows, spec.head_dim),
                             cfg.param_dtype) for name, rows in shapes.items()}

  def _attend(self, q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None) -> jax.Array:
    """softmax(q k^T * scale + bias) v on (B, L, heads, head_dim) operands, in that layout."""
    cfg = self.config
    scale = self.spec.head_dim**-0.5
    if cfg.attention_impl != "einsum":
      # (B, L, heads, head_dim) is dot_product_attention's (B, T, N, H); it scales the float32 logits, then adds
      # the bias.
      bias = None if bias is None else bias.astype(q.dtype)
      return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale, implementation=cfg.attention_impl)
    # Heads next to the batch axis, (B, heads, L, head_dim), before the two attention dots: given (B, L, heads,
    # head_dim) operands XLA's CPU backend transposes the (Lq, Lk) probabilities instead. The transposes here move
    # only q, k, v and the output.
    q, k, v = (jnp.transpose(a, (0, 2, 1, 3)) for a in (q * jnp.asarray(scale, q.dtype), k, v))
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    if bias is not None:
      logits = logits + bias
    probs = ops.softmax(logits).astype(cfg.dtype)
    out = jnp.einsum("bhqk,bhkd->bhqd", probs, v)
    return jnp.transpose(out, (0, 2, 1, 3))


class Mlp(nn.Module):
  """fc1 -> GELU (exact erf form, as PyTorch's nn.GELU) -> fc2."""

  hidden: int
  dim_out: int
  config: MViTConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = dense(self.hidden, ("embed", "mlp"), self.config, "fc1")(x)
    x = constrain(ops.gelu(x), "batch", "length", "mlp")
    return dense(self.dim_out, ("mlp", "embed"), self.config, "fc2")(x)


class MultiScaleBlock(nn.Module):
  """MViT block: (B, L, dim_in) on grid `thw` -> (B, Lq, dim_out) on the Q-pooled grid.

  x = skip(x) + DropPath(MHPA(LN1(x))), where skip max-pools (class token kept) when Q is pooled, and with
  channels expanding in the attention (MViTv2) first projects: skip = pool(proj(LN1(x)));
  y = LN2(x); out = proj(y) if channels expand in the MLP (v1) else x, plus DropPath(MLP(y)).
  """

  spec: BlockSpec
  thw: Triple
  config: MViTConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, drop_path_rate: float | jax.Array | None = None) -> jax.Array:
    cfg, spec = self.config, self.spec
    drop_path = DropPath(spec.drop_path if drop_path_rate is None else drop_path_rate)
    expands = spec.dim_out != spec.dim_in
    x_norm = layer_norm("embed", cfg, "norm1")(x)
    attn = PoolingAttention(spec, self.thw, cfg, name="attn")(x_norm)
    if expands and spec.attn_dim == spec.dim_out:
      x = dense(spec.dim_out, ("embed", "mlp"), cfg, "proj")(x_norm)
    if spec.q_stride != (1, 1, 1):
      skip_kernel = tuple(s + 1 if s > 1 else s for s in spec.q_stride)
      cls, grid = split_cls(x, cfg)
      b, _, d = x.shape
      pooled = pooling.window_pool(grid.reshape((b,) + self.thw + (d,)), skip_kernel, spec.q_stride, "max",
                                   cfg.pool_impl)
      x = jnp.concatenate([cls, pooled.reshape(b, -1, d)], axis=1)
    x = x + drop_path(attn, train)
    y = layer_norm("embed", cfg, "norm2")(x)
    mlp = Mlp(int(spec.attn_dim * cfg.mlp_ratio), spec.dim_out, cfg, name="mlp")(y)
    if expands and spec.attn_dim != spec.dim_out:
      x = dense(spec.dim_out, ("embed", "mlp"), cfg, "proj")(y)
    return constrain(x + drop_path(mlp, train), "batch", "length", "embed")


class ScannedBlock(MultiScaleBlock):
  """`MultiScaleBlock` with the (carry, scanned input) -> (carry, output) signature of `nn.scan`: the scanned input
  is the block's drop-path rate."""

  def __call__(self, x: jax.Array, drop_path_rate: jax.Array, train: bool) -> tuple[jax.Array, None]:
    return super().__call__(x, train, drop_path_rate), None
