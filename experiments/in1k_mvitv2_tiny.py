r"""MViTv2-T on ImageNet-1K from scratch (Li et al. 2022, App. B.2; the official MViTv2 image configs).

Target: 82.3% top-1 (paper Table 1), centre crop 224 of a 256-short-side image, 4.7 GFLOPs.

  python -m mvit_jax.main --config experiments/in1k_mvitv2_tiny.py --workdir gs://BUCKET/in1k_mvitv2_tiny \
      --config.data.tfds_data_dir=/data/tensorflow_datasets

Recipe: AdamW, LR 2e-3 per 2048 images (5e-4 per 512) after 70 warm-up epochs, cosine to 1e-6 at 300 epochs,
weight decay 0.05, drop path 0.1, clipping 1.0, label smoothing 0.1, Mixup 0.8 / CutMix 1.0, RandAugment
m9-n6-mstd0.5, random erasing 0.25; batch 2048.
"""
from mvit_jax.train import config as config_lib


def get_config():
  return config_lib.imagenet_recipe('mvitv2_tiny', drop_path_rate=0.1, base_lr=5e-4, end_lr=2.5e-7, weight_decay=0.05,
                                    batch_size=2048, epochs=300, warmup_epochs=70)
