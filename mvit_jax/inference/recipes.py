"""Input recipes: how the source of a checkpoint evaluates its weights, the model card's `input` when a converted
folder names none. The short side is what the source resizes to before it crops, so a view is resized once.

- torchvision video weights: the weights' `transforms` preset (resize, crop, mean / std), 16 frames at 7.5 fps
  (sampling rate 4 at 30 fps), 5 clips x 1 crop (the accuracy the weights' metadata reports);
- PySlowFast and other video formats: mean / std 0.45 / 0.225 (ImageNet's for MViTv2-L 40x3, as its test config),
  frames x sampling rate from the arch name (`_16x4`), 5 clips x 1 crop (3 x 3 for MViT-B 64x3, 5 x 3 for MViTv2-L
  40x3, as the papers test them); one crop is cut from short side int(crop / 0.875) (DATA.TRAIN_JITTER_SCALES[0]:
  256 for 224, 356 for 312), three crops from short side crop (DATA.TEST_CROP_SIZE);
- image formats (image architectures): ImageNet mean / std, centre crop of short side int(crop / 0.875)
  (PySlowFast's and the MViTv2 repository's VAL_CROP_RATIO: 256 for 224) or floor(crop / 0.9) for timm files
  (timm's mvitv2 crop_pct: 248 for 224), 1 view.
"""
from __future__ import annotations

import re

from mvit_jax.models.config import MViTConfig
from mvit_jax.models.model_card import InputRecipe

KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TARGET_FPS = 30.0
TIMM_CROP_FRACTION = 0.9  # timm's mvitv2 pretrained_cfg crop_pct.
_VIEWS = {'mvit_b_64x3': (3, 3), 'mvitv2_l_40x3': (5, 3)}  # (clips, crops); others 5 x 1.
_IMAGENET_NORMALISED = ('mvitv2_l_40x3',)
# The Kinetics-400 weights enums of the archs torchvision ships (torchvision.models.video).
_TORCHVISION_WEIGHTS = {'mvit_b_16x4': 'MViT_V1_B_Weights', 'mvitv2_s_16x4': 'MViT_V2_S_Weights'}


def _short_side(crop: int, crop_fraction: float = 0.875) -> int:
  """The short side a centre crop of `crop` pixels is cut from when it covers `crop_fraction` of it, truncated as
  the sources do (256 for 224 at 0.875)."""
  return int(crop / crop_fraction)


def _sampling_rate(arch: str) -> int:
  """S of an arch named `..._TxS` (frames x sampling rate), else 4 (the MViT Kinetics recipe)."""
  match = re.search(r'_\d+x(\d+)$', arch)
  return int(match[1]) if match else 4


def torchvision_weights(arch: str):
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
    short_side = _short_side(crop, TIMM_CROP_FRACTION if fmt == 'timm' else 0.875)
    return InputRecipe(num_frames=1, sampling_rate=1, target_fps=TARGET_FPS, short_side=short_side, crop_size=crop,
                       mean=IMAGENET_MEAN, std=IMAGENET_STD)
  weights = torchvision_weights(arch) if fmt == 'torchvision' else None
  if weights is not None:
    preset = weights.transforms.keywords
    return InputRecipe(num_frames=cfg.num_frames, sampling_rate=_sampling_rate(arch), target_fps=TARGET_FPS,
                       short_side=int(preset['resize_size'][0]), crop_size=int(preset['crop_size'][0]),
                       mean=tuple(preset['mean']), std=tuple(preset['std']), num_clips=5, num_crops=1)
  clips, crops = _VIEWS.get(arch, (5, 1))
  imagenet = arch in _IMAGENET_NORMALISED
  return InputRecipe(num_frames=cfg.num_frames, sampling_rate=_sampling_rate(arch), target_fps=TARGET_FPS,
                     short_side=crop if crops == 3 else _short_side(crop), crop_size=crop,
                     mean=IMAGENET_MEAN if imagenet else KINETICS_MEAN, std=IMAGENET_STD if imagenet else KINETICS_STD,
                     num_clips=clips, num_crops=crops)
