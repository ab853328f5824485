"""mvit_jax: Multiscale Vision Transformers (MViT v1) in JAX/Flax."""

__version__ = "0.1.0"
