"""mvit_jax: Multiscale Vision Transformers (MViT v1 and MViTv2) in JAX/Flax."""

import sys as _sys

from mvit_jax.system import process_lifetime as _process_lifetime

__version__ = "0.1.0"

# A spawned loader or pool worker imports this package first (through its parent's main module): from here on it
# ends with its parent, also while its heavier imports still run.
_process_lifetime.watch_spawned_child(_sys.argv)
