"""mvit_jax: Multiscale Vision Transformers (MViT v1 and MViTv2) in JAX/Flax."""

import os as _os
import sys as _sys

from mvit_jax.system import process_lifetime as _process_lifetime

__version__ = "0.1.0"

# Bucket URLs go through fsspec (gcsfs), not TensorFlow's gfile, in our code and in orbax's (both use etils.epath,
# which reads this once): see mvit_jax/system/storage.py.
_os.environ.setdefault("EPATH_USE_TF", "false")

# A spawned loader or pool worker imports this package first (through its parent's main module): from here on it
# ends with its parent, also while its heavier imports still run.
_process_lifetime.watch_spawned_child(_sys.argv)
