"""The MViT model: v1 (Fan et al., ICCV 2021) and v2 (Li et al., CVPR 2022): patch stem, class token and
position embedding, multiscale blocks, head."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mvit_jax.models import layers
from mvit_jax.models.config import MViTConfig, Triple, block_groups, block_specs, pooled_grid


def _remat(block_cls, policy_name: str | None, *, in_scan: bool):
  if policy_name is None:
    return block_cls
  policy = None if policy_name == "full" else getattr(jax.checkpoint_policies, policy_name)
  # static_argnums counts `self` as 0: `train` (argument 2, or 3 after a scanned block's rate) selects Python
  # control flow. Inside a scan the loop already keeps XLA from merging the recomputation into the forward.
  return nn.remat(block_cls, policy=policy, static_argnums=(3 if in_scan else 2,), prevent_cse=not in_scan)


def block_name(first: int, last: int) -> str:
  """Parameter name of blocks first..last: `blocks_{i}` for one block, `blocks_{first}_{last}` for a scanned run."""
  return f"blocks_{first}" if first == last else f"blocks_{first}_{last}"


def _scanned_blocks(first: int, last: int, spec, thw, cfg: MViTConfig):
  """The run of blocks first..last (one shape) as one nn.scan over a stacked 'layers' axis of parameters."""
  block = _remat(layers.ScannedBlock, cfg.remat_policy, in_scan=True)
  scanned = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                    in_axes=(0, nn.broadcast), length=last - first + 1,
                    metadata_params={nn.PARTITION_NAME: "layers"})
  return scanned(dataclasses.replace(spec, drop_path=0.0), thw, cfg, name=block_name(first, last))


class MViT(nn.Module):
  """MViT classifier.

  Call as `module.apply(variables, x, train=False)` with x (B, T, H, W, 3) normalised float video, or (B, H, W, 3)
  / (B, 1, H, W, 3) images for image models; returns float32 logits (B, num_classes). Training calls need
  `rngs={'dropout': key}` (head dropout and drop path). Inputs of another size than the built one work: the
  absolute and relative position tables are interpolated to the new token grids.

  `module.apply(variables, x, method="features")` returns the multi-scale features beside the logits (see
  `features`).
  """

  config: MViTConfig

  def features(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Multi-scale features and logits from one forward pass: `stage{i}` (i = 1..), the output of the last block on
    each token grid as (B, T', H', W', C_i) (class token dropped; spatial strides 4, 8, 16, 32 for the standard
    variants), the input of a detection or segmentation head; `pre_logits` (B, C), what the classifier takes
    (class token or token mean after the final norm, before head dropout); `logits` (B, num_classes) float32."""
    return self(x, train, return_features=True)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_features: bool = False):
    cfg = self.config
    x, stages = encode(cfg, x, train)
    # The class token, or without one the mean of all tokens after the final norm (MViTv2 image models).
    x = x[:, 0] if cfg.cls_token else jnp.mean(x, axis=1, dtype=jnp.float32).astype(x.dtype)
    pre_logits = x
    x = nn.Dropout(cfg.head_dropout_rate, deterministic=not train)(x)
    logits = layers.dense(cfg.num_classes, ("embed", "classes"), cfg, "head")(x).astype(jnp.float32)
    if not return_features:
      return logits
    grids = {f"stage{i + 1}": token_grid(t, grid, cfg) for i, (t, grid) in enumerate(stages)}
    return {**grids, "pre_logits": pre_logits, "logits": logits}


def token_grid(tokens: jax.Array, thw: Triple, cfg: MViTConfig) -> jax.Array:
  """Tokens (B, L, C) on grid thw as the map (B, T', H', W', C), the class token (when there is one) dropped."""
  grid = tokens[:, 1:] if cfg.cls_token else tokens
  return grid.reshape(tokens.shape[0], *thw, tokens.shape[-1])


def encode(cfg: MViTConfig, x: jax.Array, train: bool) -> tuple[jax.Array, list[tuple[jax.Array, Triple]]]:
  """The trunk every head shares: patch stem, class token and position embedding, the blocks, the final norm.

  Call it inside an `nn.compact` method: its layers become submodules of the calling module, named as the
  parameter tree has them (`patch_embed`, `pos_embed`, `blocks_*`, `norm`), so the classifier and the detector
  hold the same trunk parameters.

  Args:
    x: (B, T, H, W, 3) video, or (B, H, W, 3) / (B, 1, H, W, 3) images for image models.
  Returns:
    The final tokens after the norm (B, L, C) (class token first when there is one) on the last stage's grid, and
    for each token grid (the last block's output tokens on it (B, L_i, C_i) before the norm, its (T', H', W')).
  """
  if x.ndim == 4:
    x = x[:, None]
  if cfg.image and x.shape[1] != 1:
    raise ValueError(f"image model expects (B, H, W, 3) or (B, 1, H, W, 3) input, got {x.shape}")
  x = layers.constrain(x.astype(cfg.dtype), "batch", None, None, None, None)
  tokens, thw = layers.PatchEmbed(cfg, name="patch_embed")(x)
  x = layers.PositionEmbedding(cfg, name="pos_embed")(tokens, thw)
  x = layers.constrain(x, "batch", "length", "embed")
  specs = block_specs(cfg)
  groups = block_groups(cfg) if cfg.scan_blocks else [(i, i) for i in range(len(specs))]
  block_cls = _remat(layers.MultiScaleBlock, cfg.remat_policy, in_scan=False)
  stages = []  # (tokens, grid) after the last block on each token grid.
  for first, last in groups:
    spec = specs[first]
    if first == last:
      x = block_cls(spec, thw, cfg, name=block_name(first, last))(x, train)
    else:
      rates = np.asarray([s.drop_path for s in specs[first:last + 1]], np.float32)
      x, _ = _scanned_blocks(first, last, spec, thw, cfg)(x, rates, train)
    thw = pooled_grid(thw, spec.q_kernel, spec.q_stride)
    if stages and stages[-1][1] == thw:
      stages[-1] = (x, thw)
    else:
      stages.append((x, thw))
  return layers.layer_norm("embed", cfg, "norm")(x), stages
