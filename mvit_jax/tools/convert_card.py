"""What a converted checkpoint's model card records beyond its input recipe (`inference.recipes`): class names,
and the logit check against the source framework (`python -m mvit_jax.convert --classes FILE --verify`).
"""
from __future__ import annotations

import jax
import numpy as np

from mvit_jax.inference import recipes
from mvit_jax.models.config import MViTConfig
from mvit_jax.models.mvit import MViT
from mvit_jax.system import storage
from mvit_jax.system.errors import InputError

# The archs torchvision ships (torchvision.models.video): their builders.
TORCHVISION_BUILDERS = {'mvit_b_16x4': 'mvit_v1_b', 'mvitv2_s_16x4': 'mvit_v2_s'}


def class_names(fmt: str, num_classes: int, classes_file: str | None) -> tuple[str, ...] | None:
  """Names from `classes_file` (one per line; as many as the model has classes), else torchvision's Kinetics-400
  names (its video weights' metadata) for a 400-class torchvision checkpoint, else None."""
  if classes_file:
    from mvit_jax.data import sources  # pylint: disable=g-import-not-at-top  (keeps the data stack out of convert)
    names = sources.read_class_names(classes_file)
    if len(names) != num_classes:
      raise InputError(f'--classes {classes_file} names {len(names)} classes, the checkpoint has {num_classes}')
    return tuple(names)
  weights = recipes.torchvision_weights('mvit_b_16x4') if fmt == 'torchvision' and num_classes == 400 else None
  return None if weights is None else tuple(weights.meta['categories'])


def verify(fmt: str, arch: str, input_path: str, cfg: MViTConfig, params, seed: int = 0) -> tuple[dict | None, str]:
  """(card 'verification' entry or None, a message): the relative L2 error of the converted model's logits against
  the source framework's on one seeded random clip at batch 2, when the framework can run the checkpoint here."""
  if fmt != 'torchvision' or arch not in TORCHVISION_BUILDERS:
    return None, f'--verify: no runnable {fmt} reference for {arch} here; nothing recorded'
  try:
    import torch  # pylint: disable=g-import-not-at-top  (only --verify runs the source model)
    import torchvision  # pylint: disable=g-import-not-at-top
    from torchvision.models import video  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None, '--verify: torchvision is not installed; nothing recorded'
  reference = getattr(video, TORCHVISION_BUILDERS[arch])(num_classes=cfg.num_classes)
  with storage.local_file(input_path) as local:
    reference.load_state_dict(torch.load(local, map_location='cpu', weights_only=True))
  generator = torch.Generator().manual_seed(seed)
  clip = torch.randn(2, 3, cfg.num_frames, cfg.input_size, cfg.input_size, generator=generator)
  with torch.no_grad():
    expected = reference.eval()(clip).numpy()
  x = clip.numpy().transpose(0, 2, 3, 4, 1)  # (B, C, T, H, W) -> (B, T, H, W, C)
  logits = np.asarray(jax.jit(lambda p, x: MViT(cfg).apply({'params': p}, x, train=False))(params, x))
  error = float(np.linalg.norm(logits - expected) / np.linalg.norm(expected))
  entry = {'framework': f'torchvision {torchvision.__version__}', 'logit_rel_l2': error, 'input_shape': list(x.shape)}
  return entry, f'--verify: logits within relative L2 {error:.2e} of torchvision {torchvision.__version__}'
