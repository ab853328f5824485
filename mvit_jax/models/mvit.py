"""The MViT v1 model (Fan et al., ICCV 2021): patch stem, position embedding, multiscale blocks, head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mvit_jax.models import layers
from mvit_jax.models.config import MViTConfig, block_specs, pooled_grid


def _remat_block(policy_name: str | None):
  if policy_name is None:
    return layers.MultiScaleBlock
  policy = None if policy_name == "full" else getattr(jax.checkpoint_policies, policy_name)
  # static_argnums counts `self` as 0: `train` (argument 2) selects Python control flow.
  return nn.remat(layers.MultiScaleBlock, policy=policy, static_argnums=(2,))


class MViT(nn.Module):
  """MViT classifier.

  Call as `module.apply(variables, x, train=False)` with x (B, T, H, W, 3) normalised float video, or (B, H, W, 3)
  / (B, 1, H, W, 3) images for image models; returns float32 logits (B, num_classes). Training calls need
  `rngs={'dropout': key}` (head dropout and drop path). Inputs of another size than the built one work: the
  position tables are interpolated to the new token grid.
  """

  config: MViTConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    cfg = self.config
    if x.ndim == 4:
      x = x[:, None]
    if cfg.image and x.shape[1] != 1:
      raise ValueError(f"image model expects (B, H, W, 3) or (B, 1, H, W, 3) input, got {x.shape}")
    x = layers.constrain(x.astype(cfg.dtype), "batch", None, None, None, None)
    tokens, thw = layers.PatchEmbed(cfg, name="patch_embed")(x)
    x = layers.PositionEmbedding(cfg, name="pos_embed")(tokens, thw)
    x = layers.constrain(x, "batch", "length", "embed")
    block_cls = _remat_block(cfg.remat_policy)
    for i, spec in enumerate(block_specs(cfg)):
      x = block_cls(spec, thw, cfg, name=f"blocks_{i}")(x, train)
      thw = pooled_grid(thw, spec.q_kernel, spec.q_stride)
    x = layers.layer_norm("embed", cfg, "norm")(x)
    x = nn.Dropout(cfg.head_dropout_rate, deterministic=not train)(x[:, 0])
    logits = layers.dense(cfg.num_classes, ("embed", "classes"), cfg, "head")(x)
    return logits.astype(jnp.float32)
