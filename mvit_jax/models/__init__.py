"""MViT models in Flax Linen: `create_model(name, **overrides)` and `load_pretrained(path)`."""

from mvit_jax.models.adapt import fit_pretrained
from mvit_jax.models.config import BlockSpec, MViTConfig, block_specs
from mvit_jax.models.detection import MViTDetector
from mvit_jax.models.mvit import MViT
from mvit_jax.models.variants import PAPER_STATS, VARIANTS, create_model, get_config
from mvit_jax.models.pretrained import adapt_pretrained, load_pretrained
