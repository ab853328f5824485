"""The model card of a converted checkpoint: its input recipe per source, class names, and the logit check against
the source framework (`python -m mvit_jax.convert --classes FILE --verify`).

Input recipes, as each source evaluates its weights:
- torchvision video weights: the weights' `transforms` preset (resize, crop, mean / std), 16 frames at 7.5 fps
  (sampling rate 4 at 30 fps), 5 clips x 1 crop (the accuracy the weights' metadata reports);
- PySlowFast and other video formats: mean / std 0.45 / 0.225 (ImageNet's for MViTv2-L 40x3, as its test config),
  short side round(crop / 0.875) (256 for 224 crops), frames x sampling rate from the arch name (`_16x4`), 5 clips x
  1 crop (3 x 3 for MViT-B 64x3, 5 x 3 for MViTv2-L 40x3, as the papers test them);
- image formats (image architectures): ImageNet mean / std, short side round(crop / 0.875), centre crop, 1 view.
"""
from __future__ import annotations

import re

import jax
import numpy as np

from mvit_jax.errors import InputError
from mvit_jax.model_card import InputRecipe
from mvit_jax.models.config import MViTConfig
from mvit_jax.models.mvit import MViT

KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TARGET_FPS = 30.0
_VIEWS = {'mvit_b_64x3': (3, 3), 'mvitv2_l_40x3': (5, 3)}  # (clips, crops); others 5 x 1.
_IMAGENET_NORMALISED = ('mvitv2_l_40x3',)
# The archs torchvision ships (torchvision.models.video): their builders and weights enums.
TORCHVISION_BUILDERS = {'mvit_b_16x4': 'mvit_v1_b', 'mvitv2_s_16x4': 'mvit_v2_s'}
_TORCHVISION_WEIGHTS = {'mvit_b_16x4': 'MViT_V1_B_Weights', 'mvitv2_s_16x4': 'MViT_V2_S_Weights'}


def _short_side(crop: int) -> int:
  """256 for 224 crops: the crop is 87.5% of the short side."""
  return int(round(crop / 0.875))


def _sampling_rate(arch: str) -> int:
  """S of an arch named `..._TxS` (frames x sampling rate), else 4 (the MViT Kinetics recipe)."""
  match = re.search(r'_\d+x(\d+)$', arch)
  return int(match[1]) if match else 4


def _torchvision_weights(arch: str):
  """The torchvision Kinetics-400 weights entry of `arch`, or None when torchvision has none (or is missing)."""
  if arch not in _TORCHVISION_WEIGHTS:
    return None
  try:
    from torchvision.models import video  # pylint: disable=g-import-not-at-top  (only converted folders need it)
  except ImportError:
    return None
  return getattr(video, _TORCHVISION_WEIGHTS[arch]).KINETICS400_V1


def input_recipe(fmt: str, arch: str, cfg: MViTConfig) -> InputRecipe:
  """How the source of a `fmt` checkpoint of `arch` (config `cfg`) evaluates its weights (module docstring)."""
  crop = cfg.input_size
  if cfg.image:
    return InputRecipe(num_frames=1, sampling_rate=1, target_fps=TARGET_FPS, short_side=_short_side(crop),
                       crop_size=crop, mean=IMAGENET_MEAN, std=IMAGENET_STD)
  weights = _torchvision_weights(arch) if fmt == 'torchvision' else None
  if weights is not None:
    preset = weights.transforms.keywords
    return InputRecipe(num_frames=cfg.num_frames, sampling_rate=_sampling_rate(arch), target_fps=TARGET_FPS,
                       short_side=int(preset['resize_size'][0]), crop_size=int(preset['crop_size'][0]),
                       mean=tuple(preset['mean']), std=tuple(preset['std']), num_clips=5, num_crops=1)
  clips, crops = _VIEWS.get(arch, (5, 1))
  imagenet = arch in _IMAGENET_NORMALISED
  return InputRecipe(num_frames=cfg.num_frames, sampling_rate=_sampling_rate(arch), target_fps=TARGET_FPS,
                     short_side=_short_side(crop), crop_size=crop,
                     mean=IMAGENET_MEAN if imagenet else KINETICS_MEAN, std=IMAGENET_STD if imagenet else KINETICS_STD,
                     num_clips=clips, num_crops=crops)


def class_names(fmt: str, num_classes: int, classes_file: str | None) -> tuple[str, ...] | None:
  """Names from `classes_file` (one per line; as many as the model has classes), else torchvision's Kinetics-400
  names (its video weights' metadata) for a 400-class torchvision checkpoint, else None."""
  if classes_file:
    from mvit_jax.data import sources  # pylint: disable=g-import-not-at-top  (keeps the data stack out of convert)
    names = sources.read_class_names(classes_file)
    if len(names) != num_classes:
      raise InputError(f'--classes {classes_file} names {len(names)} classes, the checkpoint has {num_classes}')
    return tuple(names)
  weights = _torchvision_weights('mvit_b_16x4') if fmt == 'torchvision' and num_classes == 400 else None
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
  reference.load_state_dict(torch.load(input_path, map_location='cpu', weights_only=True))
  generator = torch.Generator().manual_seed(seed)
  clip = torch.randn(2, 3, cfg.num_frames, cfg.input_size, cfg.input_size, generator=generator)
  with torch.no_grad():
    expected = reference.eval()(clip).numpy()
  x = clip.numpy().transpose(0, 2, 3, 4, 1)  # (B, C, T, H, W) -> (B, T, H, W, C)
  logits = np.asarray(jax.jit(lambda p, x: MViT(cfg).apply({'params': p}, x, train=False))(params, x))
  error = float(np.linalg.norm(logits - expected) / np.linalg.norm(expected))
  entry = {'framework': f'torchvision {torchvision.__version__}', 'logit_rel_l2': error, 'input_shape': list(x.shape)}
  return entry, f'--verify: logits within relative L2 {error:.2e} of torchvision {torchvision.__version__}'
