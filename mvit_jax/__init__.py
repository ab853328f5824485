"""mvit_jax: Multiscale Vision Transformers (MViT v1 and MViTv2) in JAX/Flax."""

__version__ = "0.1.0"
