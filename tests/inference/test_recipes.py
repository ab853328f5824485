"""Converted checkpoints' input recipes against their sources' test views: the short side the source resizes to
before it crops, the crop, the views, the frames and the normalisation of every converted arch and format."""
import math

import pytest

from mvit_jax.data import transforms
from mvit_jax.inference import predictor
from mvit_jax.inference import recipes
from mvit_jax.models import variants

K400 = (recipes.KINETICS_MEAN, recipes.KINETICS_STD)
IN1K = (recipes.IMAGENET_MEAN, recipes.IMAGENET_STD)

# (format, arch) -> (frames, sampling rate, short side, crop, clips, crops, (mean, std)) as the source tests them.
# PySlowFast (configs/Kinetics/*.yaml, slowfast/datasets/kinetics.py): one crop is cut from short side
# DATA.TRAIN_JITTER_SCALES[0], three crops from DATA.TEST_CROP_SIZE; views from the model zoo and the papers.
SOURCE_VIEWS = {
    # torchvision MViT_V1_B / MViT_V2_S KINETICS400_V1: VideoClassification(crop 224, resize 256), 5 clips.
    ('torchvision', 'mvit_b_16x4'): (16, 4, 256, 224, 5, 1, K400),
    ('torchvision', 'mvitv2_s_16x4'): (16, 4, 256, 224, 5, 1, K400),
    # MVIT_B_16x4_CONV.yaml, MVIT_B_32x3_CONV.yaml: jitter [256, 320], crop 224, 1 crop; model zoo 1 x 5.
    ('pyslowfast', 'mvit_b_16x4'): (16, 4, 256, 224, 5, 1, K400),
    ('pytorchvideo', 'mvit_b_16x4'): (16, 4, 256, 224, 5, 1, K400),
    ('pyslowfast', 'mvit_b_32x3'): (32, 3, 256, 224, 5, 1, K400),
    # MViT paper: S 16x4 and B-24 32x3 (K600) 1 x 5, B 64x3 3 x 3 (three crops: short side = TEST_CROP_SIZE).
    ('pyslowfast', 'mvit_s_16x4'): (16, 4, 256, 224, 5, 1, K400),
    ('pyslowfast', 'mvit_b24_32x3'): (32, 3, 256, 224, 5, 1, K400),
    ('pyslowfast', 'mvit_b_64x3'): (64, 3, 224, 224, 3, 3, K400),
    # MVITv2_S_16x4.yaml, MVITv2_B_32x3.yaml: 1 crop, 5 views; MVITv2_L_40x3_test.yaml: jitter [356, 446], crop
    # 312, 3 crops x 5 views, ImageNet mean / std.
    ('pyslowfast', 'mvitv2_s_16x4'): (16, 4, 256, 224, 5, 1, K400),
    ('pyslowfast', 'mvitv2_b_32x3'): (32, 3, 256, 224, 5, 1, K400),
    ('pyslowfast', 'mvitv2_l_40x3'): (40, 3, 312, 312, 5, 3, IN1K),
    # Images: PySlowFast's IN_VAL_CROP_RATIO and the MViTv2 repository's VAL_CROP_RATIO 0.875 (int(224 / 0.875)),
    # timm's mvitv2 crop_pct 0.9 (floor(224 / 0.9)); one centre crop.
    **{('pyslowfast', a): (1, 1, 256, 224, 1, 1, IN1K) for a in ('mvit_b16_in1k', 'mvit_b24_in1k')},
    **{(fmt, a): (1, 1, 256, 224, 1, 1, IN1K) for fmt in ('mvit', 'pyslowfast')
       for a in ('mvitv2_tiny', 'mvitv2_small', 'mvitv2_base', 'mvitv2_large')},
    **{('timm', a): (1, 1, 248, 224, 1, 1, IN1K) for a in variants.VARIANTS if a.startswith('mvitv2_') and
       variants.VARIANTS[a].image},
}


@pytest.mark.parametrize('fmt, arch', sorted(SOURCE_VIEWS))
def test_recipe_is_the_sources_test_views(fmt, arch):
  recipe = recipes.input_recipe(fmt, arch, variants.get_config(arch))
  frames, rate, short_side, crop, clips, crops, (mean, std) = SOURCE_VIEWS[fmt, arch]
  assert (recipe.num_frames, recipe.sampling_rate, recipe.short_side, recipe.crop_size, recipe.num_clips,
          recipe.num_crops, recipe.mean, recipe.std) == (frames, rate, short_side, crop, clips, crops, mean, std)
  # The loader decodes test views at the recorded short side, so frames are resized once.
  assert transforms.eval_short_side(predictor.data_config(recipe)) == short_side


def test_every_source_arch_is_pinned():
  pinned = {arch for _, arch in SOURCE_VIEWS}
  assert pinned == set(variants.VARIANTS) - {'mvit_tiny'}  # mvit_tiny is this project's demo model.


@pytest.mark.parametrize('arch', [a for a in variants.VARIANTS if a.startswith('mvitv2_') and
                                  variants.VARIANTS[a].image])
def test_timm_short_side_is_timms_crop_pct(arch):
  timm = pytest.importorskip('timm')
  cfg = timm.models.get_pretrained_cfg(arch)
  recipe = recipes.input_recipe('timm', arch, variants.get_config(arch))
  assert recipe.short_side == math.floor(cfg.input_size[-1] / cfg.crop_pct) and recipe.crop_size == cfg.input_size[-1]
  assert (recipe.mean, recipe.std) == (tuple(cfg.mean), tuple(cfg.std))
